-- The rollups' update trigger no longer joins the old rows to the new ones.
--
-- It joined them (by EXECUTE, planned at each call, 0021) only to skip the sessions whose
-- billed columns did not change. Skipping them changes nothing: such a session's old
-- contribution, taken off, and its new one, put on, are the same rows of the same buckets,
-- and sum to zero there. So the contributions are now read straight from each transition
-- table (two scans, no join: a plan kept for the connection's life fits any size), and
-- only rows with both ends have one. A quit, the update that changes the rollups most
-- often, paid the planning at every batch (docs/benchmarks.md, "The triggers of a session
-- update"). A statement whose rows have no contribution before or after (a heartbeat
-- touch, an enter) still calls nothing.
--
-- A session updated with both ends and no billed change (a heartbeat touch naming a
-- session that has just ended) now adds zeros to the buckets it already counts in: rows
-- that exist, changed by nothing. Still per statement, still upserted in
-- `(bucket_start, app_id)` order by `usage_rollup_add` (0011, 0024).
CREATE OR REPLACE FUNCTION usage_rollup_sessions_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes usage_rollup_change[];
BEGIN
    changes := ARRAY(
        SELECT c FROM (
            SELECT usage_rollup_change(o, -1) FROM before AS o
            WHERE o.started_at IS NOT NULL AND o.ended_at IS NOT NULL
            UNION ALL
            SELECT usage_rollup_change(n, 1) FROM after AS n
            WHERE n.started_at IS NOT NULL AND n.ended_at IS NOT NULL) AS v(c)
        WHERE (c).sign IS NOT NULL);
    IF cardinality(changes) > 0 THEN
        PERFORM usage_rollup_add(changes);
    END IF;
    RETURN NULL;
END $$;
