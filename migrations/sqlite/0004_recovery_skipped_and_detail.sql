-- The recovery log learns two things (issue #15):
-- * outcome 'skipped': a restart or reset decided on the book's status but not sent, because
--   the phone, re-read from the control plane right before acting (chapter 4.3.2), was no
--   longer a candidate (stopped, frozen, being restarted by someone else…);
-- * detail: what was done besides the action, e.g. which of the phone's own properties a
--   reset re-applied (a reset restores factory settings, chapter 4.3.5), or why it was skipped.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, ids kept.
CREATE TABLE recoveries_v4 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_id    TEXT NOT NULL,
    reason      TEXT NOT NULL,            -- stale, abnormal, restart_failed, reset_failed, manual
    action      TEXT NOT NULL CHECK (action IN ('restart', 'reset', 'mark_broken')),
    dry_run     INTEGER NOT NULL,
    request_id  TEXT,                     -- of the control plane's batch answer
    job_id      TEXT,
    outcome     TEXT NOT NULL
        CHECK (outcome IN ('pending', 'succeeded', 'failed', 'error', 'dry_run', 'skipped')),
    error       TEXT,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER,
    detail      TEXT
) STRICT;
INSERT INTO recoveries_v4
    (id, phone_id, reason, action, dry_run, request_id, job_id, outcome, error, started_at, ended_at)
SELECT id, phone_id, reason, action, dry_run, request_id, job_id, outcome, error, started_at, ended_at
FROM recoveries;
DROP TABLE recoveries;
ALTER TABLE recoveries_v4 RENAME TO recoveries;
CREATE INDEX recoveries_by_phone ON recoveries (phone_id, started_at);
CREATE INDEX recoveries_pending ON recoveries (outcome) WHERE outcome = 'pending';
