-- Retention of the session book (issue #22, docs/scaling.md#retention-of-the-session-book).
--
-- A retention pass picks a batch of closed sessions whose time is past `book.retention_days`,
-- writes their ids here, deletes their events and them, and empties this table, all in one
-- transaction of the single writer: no other writer ever sees a row of it.
--
-- The usage rollups (0011) already hold what a removed session contributed, and must keep
-- it: the report over a long window is answered from them, before and after retention. So
-- the delete trigger, which takes a deleted session's contribution back (an operator's
-- cleanup must), leaves the sessions of this table alone.
CREATE TABLE retention_batch (
    session_id TEXT PRIMARY KEY
) STRICT;

DROP TRIGGER usage_rollup_session_removed;
CREATE TRIGGER usage_rollup_session_removed AFTER DELETE ON sessions
WHEN OLD.started_at IS NOT NULL AND OLD.ended_at IS NOT NULL
    AND NOT EXISTS (SELECT 1 FROM retention_batch WHERE session_id = OLD.session_id)
BEGIN
    INSERT INTO usage_rollup_changes VALUES (-1, OLD.app_id, OLD.started_at,
        max(OLD.ended_at, OLD.started_at), coalesce(OLD.end_reason = 'abandoned', 0),
        OLD.run_time_mismatch);
END;

-- Sessions that expired unplayed have no start, so the start index does not find them. Only
-- expired rows are in it, and a session becomes expired once.
CREATE INDEX sessions_expired ON sessions (created_at) WHERE state = 'expired';
