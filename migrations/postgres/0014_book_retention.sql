-- Retention of the session book (issue #22, docs/scaling.md#retention-of-the-session-book).
--
-- A retention pass picks a batch of closed sessions whose time is past `book.retention_days`,
-- writes their ids here, deletes their events and them, and empties this table, all in one
-- transaction. Nothing else ever sees a row of it: PostgreSQL shows uncommitted rows to no
-- other transaction, and SQLite has one writer.
--
-- The usage rollups (0011) already hold what a removed session contributed, and must keep
-- it: the report over a long window is answered from them, before and after retention. So
-- the delete trigger, which takes a deleted session's contribution back (an operator's
-- cleanup must), leaves the sessions of this table alone.
CREATE TABLE retention_batch (
    session_id TEXT PRIMARY KEY
);

CREATE OR REPLACE FUNCTION usage_rollup_sessions_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM usage_rollup_add(ARRAY(
        SELECT usage_rollup_change(o, -1) FROM removed AS o
        WHERE NOT EXISTS (SELECT 1 FROM retention_batch AS r WHERE r.session_id = o.session_id)));
    RETURN NULL;
END $$;

-- Sessions that expired unplayed have no start, so the start index does not find them. Only
-- expired rows are in it, and a session becomes expired once: the write path pays nothing
-- for it (created_at never changes, so updates of other sessions stay HOT).
CREATE INDEX sessions_expired ON sessions (created_at) WHERE state = 'expired';
