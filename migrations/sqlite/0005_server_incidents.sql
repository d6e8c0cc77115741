-- A dead server is one incident, not a restart storm (issue #15, part 5). When most phones of
-- one server (`phones.server_id`, chapter 4.3.1) fall silent together, the watchdog logs ONE
-- row for the server instead of restarting its phones one by one:
-- * reason 'server_incident', action 'hold' (nothing is sent to the control plane: cphub does
--   not restart servers, chapter 4.1.5 is out of scope), and `phone_id` holding the SERVER
--   id. The log's subject column names what the entry is about; a column of its own would
--   leave `phone_id` empty on these rows and every per-phone reader would have to skip them.
--   A server id never equals a phone id, so no phone's history (budgets, escalation) ever
--   sees an incident row, and `GET /api/v1/recoveries?phone_id=<server>` lists a server's.
-- * outcome 'open' while it lasts, 'closed' (with ended_at) once the share of silent phones
--   drops below watchdog.server_incident_share. Not 'pending': a pending row is a job being
--   followed and counts against watchdog.max_in_flight; an incident is neither.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, ids kept.
CREATE TABLE recoveries_v5 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_id    TEXT NOT NULL,            -- the server id on 'server_incident' rows
    reason      TEXT NOT NULL,            -- stale, abnormal, restart_failed, reset_failed,
                                          -- manual, server_incident
    action      TEXT NOT NULL CHECK (action IN ('restart', 'reset', 'mark_broken', 'hold')),
    dry_run     INTEGER NOT NULL,
    request_id  TEXT,                     -- of the control plane's batch answer
    job_id      TEXT,
    outcome     TEXT NOT NULL
        CHECK (outcome IN ('pending', 'succeeded', 'failed', 'error', 'dry_run', 'skipped',
                           'open', 'closed')),
    error       TEXT,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    detail      TEXT
) STRICT;
INSERT INTO recoveries_v5
    (id, phone_id, reason, action, dry_run, request_id, job_id, outcome, error, started_at,
     ended_at, detail)
SELECT id, phone_id, reason, action, dry_run, request_id, job_id, outcome, error, started_at,
       ended_at, detail
FROM recoveries;
DROP TABLE recoveries;
ALTER TABLE recoveries_v5 RENAME TO recoveries;
CREATE INDEX recoveries_by_phone ON recoveries (phone_id, started_at);
CREATE INDEX recoveries_pending ON recoveries (outcome) WHERE outcome = 'pending';
-- Every watchdog pass reads the open incidents.
CREATE INDEX recoveries_open ON recoveries (outcome) WHERE outcome = 'open';
