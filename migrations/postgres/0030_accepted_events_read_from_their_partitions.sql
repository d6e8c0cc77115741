-- An event batch reads its sessions' accepted events from those sessions' partitions only.
--
-- The batch's read (src/store/postgres.rs, `BATCH_READ`) matched events to the batch's
-- sessions by `(session_id, session_created_at) IN (SELECT … FROM batch_sessions)`: the
-- partition keys come from rows the same statement reads, so PostgreSQL could not prune
-- the event log's day partitions (0014), neither when planning nor when starting the
-- executor, and every round opened, locked and probed every partition. With retention off
-- (the default) a partition is added every day and never dropped: a book a year old has
-- 367 of them, and a round of 16 events cost the server 8.7 ms of CPU instead of 3.7 ms
-- (`bench/write_rounds.py --backend postgres --event-days 365`; docs/benchmarks.md, "The
-- event log's partitions and the batch's read").
--
-- Here the keys arrive as values: `EXECUTE … USING` plans the statement for this call
-- with them as constants (PL/pgSQL marks its USING parameters so), and the planner keeps
-- only the partitions they fall in, plus the legacy one (`-infinity`, the events of
-- sessions from before 0014) and the default one when a key has no day of its own. A
-- generic plan would not do: PostgreSQL prunes by an array only when it is a constant.
-- The plan costs about 0.1 ms, whatever the number of partitions.
--
-- It returns the accepted events of the given sessions found under any of the given
-- creation times (or `-infinity`); the read matches each event to its session by id and
-- creation time in its own, cached, plan. The pairs are not matched here: a semi-join
-- with the arrays made this plan, made at every call, 60 % dearer to make and twice as
-- long to run (0.17 and 0.04 ms against 0.10 and 0.02 in `psql`).
-- (OR REPLACE: the store suite lends this function to a book from before 0011 while
-- today's code plays it, then migrates the book.)
CREATE OR REPLACE FUNCTION session_events_accepted(ids TEXT[], created TIMESTAMPTZ[])
RETURNS TABLE (session_id TEXT, status SMALLINT, phone_id TEXT, app_id TEXT,
               event_time TIMESTAMPTZ, run_time BIGINT, session_created_at TIMESTAMPTZ)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY EXECUTE
        'SELECT e.session_id, e.status, e.phone_id, e.app_id, e.event_time, e.run_time, '
        '       e.session_created_at '
        'FROM session_events AS e '
        'WHERE e.outcome = ''accepted'' AND e.session_id = ANY ($1) '
        '  AND e.session_created_at = ANY ($2 || ''-infinity''::timestamptz)'
        USING ids, created;
END $$;
