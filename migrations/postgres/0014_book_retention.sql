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

-- ---- session_events partitioned by day (docs/scaling.md#partitioning-the-event-log) ----
--
-- The event log is two thirds of the book's rows and is only ever appended to: by range of
-- time, retention drops a day's partition instead of deleting its rows. The partition key
-- is the owning session's `created_at`, copied into each event row as
-- `session_created_at`: a session's events then share one partition key, so the unique
-- key `(session_id, status, session_created_at)` is as strict as `(session_id, status)`
-- was (one session row per id carries one `created_at`), and a unique index on a
-- partitioned table must contain its key. Every insert site has the session at hand (the
-- event batch reads it, a reconnect line is inserted from it).
--
-- `sessions` stays one table: every callback finds its session by id alone (6.1 carries
-- no time, 6.2-6.4 the phone's time of the event rather than the session's creation, and
-- direct-mode ids are the platform's), and a partitioned table would probe every
-- partition for each.
--
-- On an existing book nothing is rewritten: the old table gets the column with a constant
-- default (no rewrite), and becomes the partition of everything created before tomorrow;
-- its events have `-infinity` for a key, which no unique conflict can confuse, since a
-- session's events are read by its id (the batch locks the session first). New days get
-- their own partitions, created ahead by the replica leading retention
-- (`session_events_maintain`); a default partition takes any row no day covers, so an
-- insert never fails for want of a partition.
-- (IF NOT EXISTS: the store suite plays today's code on a book from before 0011, whose
-- event log is given this column ahead.)
ALTER TABLE session_events ADD COLUMN IF NOT EXISTS session_created_at TIMESTAMPTZ NOT NULL
    DEFAULT '-infinity';
ALTER TABLE session_events RENAME TO session_events_legacy;
-- Its unique keys lack the partition key: the partitioned table's, built on it when it is
-- attached, take their place. Its index by session is the parent's, and is kept.
ALTER TABLE session_events_legacy DROP CONSTRAINT session_events_pkey;
DROP INDEX session_events_once;
ALTER INDEX session_events_by_session RENAME TO session_events_legacy_by_session;

CREATE TABLE session_events (LIKE session_events_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (session_created_at);
-- Every insert names the session's creation time: one that forgot would fail, not land
-- in the legacy partition.
ALTER TABLE session_events ALTER COLUMN session_created_at DROP DEFAULT;
ALTER SEQUENCE session_events_id_seq OWNED BY session_events.id;
ALTER TABLE session_events ADD PRIMARY KEY (id, session_created_at);
CREATE UNIQUE INDEX session_events_once ON session_events (session_id, status, session_created_at)
    WHERE outcome = 'accepted';
CREATE INDEX session_events_by_session ON session_events (session_id, id);

-- The partitions: their bounds, for the maintenance below to read without parsing
-- pg_catalog's text of them.
CREATE TABLE session_event_partitions (
    name  TEXT PRIMARY KEY,
    lower TIMESTAMPTZ NOT NULL,
    upper TIMESTAMPTZ NOT NULL
);

DO $$
DECLARE
    tomorrow TIMESTAMPTZ := date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        + interval '1 day';
BEGIN
    -- Proves the bound, so attaching does not scan the table a second time.
    EXECUTE format('ALTER TABLE session_events_legacy ADD CONSTRAINT session_events_legacy_bound '
                   'CHECK (session_created_at < %L)', tomorrow);
    EXECUTE format('ALTER TABLE session_events ATTACH PARTITION session_events_legacy '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', tomorrow);
    INSERT INTO session_event_partitions VALUES ('session_events_legacy', '-infinity', tomorrow);
END $$;
CREATE TABLE session_events_default PARTITION OF session_events DEFAULT;

-- Sessions created in a range: the sessions whose events a partition holds.
CREATE INDEX sessions_by_creation ON sessions (created_at);

-- Creates the day partitions from today (UTC) to `ahead_days` days on; then, for every
-- partition wholly before `drop_before`, moves the events of sessions still in the book
-- (live, longer than 31 days, webhooks undelivered: what retention keeps) to the default
-- partition and drops it with the events of every session retention removed. How many
-- partitions it dropped.
CREATE FUNCTION session_events_maintain(at TIMESTAMPTZ, ahead_days INTEGER,
    drop_before TIMESTAMPTZ)
RETURNS INTEGER LANGUAGE plpgsql AS $$
DECLARE
    today TIMESTAMPTZ := date_trunc('day', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    day TIMESTAMPTZ;
    part session_event_partitions;
    dropped INTEGER := 0;
BEGIN
    FOR i IN 0..ahead_days LOOP
        day := today + make_interval(days => i);
        CONTINUE WHEN EXISTS (SELECT 1 FROM session_event_partitions
                              WHERE lower <= day AND day < upper);
        -- A day whose rows went to the default partition (no replica made its partition in
        -- time) stays there: creating the partition would fail on them.
        CONTINUE WHEN EXISTS (SELECT 1 FROM session_events_default
                              WHERE session_created_at >= day
                                AND session_created_at < day + interval '1 day');
        INSERT INTO session_event_partitions
            VALUES ('session_events_' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD'), day,
                    day + interval '1 day')
            RETURNING * INTO part;
        EXECUTE format('CREATE TABLE %I PARTITION OF session_events FOR VALUES FROM (%L) TO (%L)',
                       part.name, part.lower, part.upper);
    END LOOP;
    FOR part IN SELECT * FROM session_event_partitions WHERE upper <= drop_before
                ORDER BY lower LOOP
        EXECUTE format('ALTER TABLE session_events DETACH PARTITION %I', part.name);
        EXECUTE format('INSERT INTO session_events SELECT e.* FROM %I AS e '
                       'WHERE e.session_id IN (SELECT session_id FROM sessions '
                       'WHERE created_at >= %L AND created_at < %L)',
                       part.name, part.lower, part.upper);
        EXECUTE format('DROP TABLE %I', part.name);
        DELETE FROM session_event_partitions WHERE name = part.name;
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

SELECT session_events_maintain(now(), 7, '-infinity');

-- A retention batch's events outside the day partitions, which go whole: in the default
-- partition, and in the legacy one until it is dropped in its turn. Rows of the day
-- partitions whose session is gone are no session's any more: reads match events to their
-- session by id and creation time.
CREATE FUNCTION session_events_forget() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM session_events_default
        WHERE session_id IN (SELECT session_id FROM retention_batch);
    IF to_regclass('session_events_legacy') IS NOT NULL THEN
        EXECUTE 'DELETE FROM session_events_legacy '
                'WHERE session_id IN (SELECT session_id FROM retention_batch)';
    END IF;
END $$;
