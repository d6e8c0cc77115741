-- The statement triggers on `sessions` fire for every INSERT and UPDATE statement, rows or
-- none, and each called an SQL function even when it had nothing to record. An SQL function
-- is planned anew at every call, so "nothing to record" cost PostgreSQL about a millisecond
-- a call. pg_stat_statements over one flash-crowd run (docs/benchmarks.md, "Trigger work
-- with nothing to do") counted, for 12,489 event batches and 3,803 mint statements:
--
--   usage_rollup_add from the insert trigger    16,292 calls, 0.86 ms each
--   webhook_sessions_record from the same       16,292 calls, 0.62 ms each (+ its inserts)
--   usage_rollup_add from the update trigger    12,489 calls, 1.37 ms each
--
-- Every one of those insert-trigger calls had nothing to do: a mint inserts a session that
-- has not started, and an event batch's `INSERT … ON CONFLICT DO NOTHING` of the sessions it
-- has not seen usually inserts none (the trigger fires anyway). The update-trigger calls
-- were enters: a start changes no rollup, since a session counts only once it has both ends
-- (`usage_rollup_change` is NULL before), but the NULL changes were passed on. What each
-- trigger records is unchanged; it now calls nothing when there is nothing to record.

-- Rollups: only a session with both ends changes them.
CREATE OR REPLACE FUNCTION usage_rollup_sessions_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changes usage_rollup_change[];
BEGIN
    changes := ARRAY(SELECT c FROM (SELECT usage_rollup_change(n, 1) AS c FROM added AS n) AS v
                     WHERE (c).sign IS NOT NULL);
    IF cardinality(changes) > 0 THEN
        PERFORM usage_rollup_add(changes);
    END IF;
    RETURN NULL;
END $$;

-- As 0021's, without the NULL changes (the rows whose billed columns changed but which
-- still lack an end on both sides: enters).
CREATE OR REPLACE FUNCTION usage_rollup_sessions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changes usage_rollup_change[];
BEGIN
    EXECUTE $q$
        SELECT ARRAY(
            SELECT c FROM before AS o JOIN after AS n USING (session_id),
                LATERAL (VALUES (usage_rollup_change(o, -1)), (usage_rollup_change(n, 1))) AS v(c)
            WHERE (o.started_at, o.ended_at, o.app_id, o.end_reason, o.run_time_mismatch)
                IS DISTINCT FROM (n.started_at, n.ended_at, n.app_id, n.end_reason,
                                  n.run_time_mismatch)
              AND (c).sign IS NOT NULL)
    $q$ INTO changes;
    IF cardinality(changes) > 0 THEN
        PERFORM usage_rollup_add(changes);
    END IF;
    RETURN NULL;
END $$;

-- Webhooks: `webhook_sessions_record` records a start or an end, and both need
-- `started_at`; a session inserted without one has neither.
CREATE OR REPLACE FUNCTION webhook_sessions_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    new_rows sessions[];
BEGIN
    new_rows := ARRAY(SELECT n::sessions FROM added AS n WHERE n.started_at IS NOT NULL);
    IF cardinality(new_rows) > 0 THEN
        PERFORM webhook_sessions_record('{}'::sessions[], new_rows);
    END IF;
    RETURN NULL;
END $$;

-- What is left to record (an end, mostly) is recorded as before, by a PL/pgSQL function now:
-- it keeps its plan for the connection's life where the SQL function planned at each call.
-- The plan has no join to size wrongly: one pass over the changes, grouped by bucket.
CREATE OR REPLACE FUNCTION usage_rollup_add(changes usage_rollup_change[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_rollups AS r (bucket_start, app_id, touching, sessions, seconds,
        minutes_started, minutes_completed, minutes_nearest, abandoned, run_time_mismatches)
    SELECT p.bucket_start, c.app_id, sum(c.sign),
        sum(c.sign * (p.starts_here)::int),
        sum(c.sign * (p.g1 - p.g0)),
        sum(c.sign * ((p.g1 + 59) / 60 - (p.g0 + 59) / 60)),
        sum(c.sign * (p.g1 / 60 - p.g0 / 60)),
        sum(c.sign * ((p.g1 + 30) / 60 - (p.g0 + 30) / 60)),
        sum(c.sign * (p.starts_here AND c.abandoned)::int),
        sum(c.sign * (p.starts_here AND c.mismatch)::int)
    FROM unnest(changes) AS c
    CROSS JOIN LATERAL usage_rollup_parts(c.started_at, c.ended_at) AS p
    WHERE c.sign IS NOT NULL
    GROUP BY p.bucket_start, c.app_id
    ORDER BY p.bucket_start, c.app_id
    ON CONFLICT (bucket_start, app_id) DO UPDATE SET
        touching = r.touching + excluded.touching,
        sessions = r.sessions + excluded.sessions,
        seconds = r.seconds + excluded.seconds,
        minutes_started = r.minutes_started + excluded.minutes_started,
        minutes_completed = r.minutes_completed + excluded.minutes_completed,
        minutes_nearest = r.minutes_nearest + excluded.minutes_nearest,
        abandoned = r.abandoned + excluded.abandoned,
        run_time_mismatches = r.run_time_mismatches + excluded.run_time_mismatches;
END $$;
