-- Issue #19, parts 2 and 3.
--
-- Encoding servers (chapter 4.6.1) as the watchdog's last sync of them saw them: an
-- abnormal one (status 2) breaks the stream of every phone it serves while those phones keep
-- heartbeating, so it is watched on its own. The sync replaces the table: a server the
-- control plane no longer lists is gone. `status` is the control plane's integer; what it
-- means (Tables 4-54, 4-55 disagree on 4 and 5) is decided in one place, in the code.
-- Their restarts (4.6.2) go to `recoveries` like a phone's, reason
-- 'encode_server_abnormal', action 'restart', `phone_id` holding the ENCODING SERVER id
-- (the log's subject, as 'server_incident' rows hold a server id; an encoding server id
-- never equals a phone id, so no phone's budgets see these rows).
CREATE TABLE encode_servers (
    encode_server_id    TEXT PRIMARY KEY,
    encode_server_name  TEXT NOT NULL,
    server_id           TEXT NOT NULL,      -- the cloud phone server it serves
    server_type         INTEGER NOT NULL,   -- 0 server, 1 container
    status              INTEGER NOT NULL,
    synced_at           INTEGER NOT NULL
) STRICT;

-- Diagnostics before a reset (chapter 4.7.5): a reset restores factory settings and wipes
-- the evidence of why the phone was stuck, so the operator's commands run first and their
-- outputs stay with the recovery. A JSON array of {command, outcome, output, error}, each
-- output at most 1,024 bytes (4.7.5); NULL when none ran.
ALTER TABLE recoveries ADD COLUMN diagnostics TEXT;
