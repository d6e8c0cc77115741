-- A heartbeat flush touches every playing session's `last_heartbeat_at`, once per
-- heartbeat interval: by far the most frequent update of `sessions`, changing nothing
-- billed and nothing reported. In a flush chunk of 1,000 phones (about 500 sessions) of the
-- fleet benchmark that UPDATE took 45-220 ms, and it holds its sessions' and phones' row
-- locks until the chunk commits, so enter/quit events on those rows waited as long
-- (docs/benchmarks.md, "Capacity"). Two causes, both fixed here; nothing is rewritten.

-- 1. Cached plans that join the transition tables in a nested loop. A PL/pgSQL function
--    plans each statement once per connection and keeps the plan; the planner sizes a
--    transition table by its rows at that first call, so a plan made for a one-row update
--    compares every old row with every new one for ever after: 480 x 480 rows took
--    57-152 ms per trigger (auto_explain). EXECUTE plans each call on the sizes at hand
--    (a hash join, well under a millisecond for the same rows). Each changed-rows trigger
--    joins `before` to `after` this way now; what each records is unchanged.
--
--    The webhook trigger also kept every open session (an open session "lacks an end") and
--    passed them all to `webhook_sessions_record`, an SQL function planned anew at each
--    call, with nothing to do: it now keeps the rows whose start or end columns changed (a
--    start needs `started_at` to change, an end one of the three end columns) and calls
--    nothing when none did. The rollup trigger already kept only rows whose billed columns
--    changed; it too calls nothing when none did.
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
                                  n.run_time_mismatch))
    $q$ INTO changes;
    IF cardinality(changes) > 0 THEN
        PERFORM usage_rollup_add(changes);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION webhook_sessions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_rows sessions[];
    new_rows sessions[];
BEGIN
    EXECUTE $q$
        SELECT array_agg(o::sessions), array_agg(n::sessions)
        FROM before AS o JOIN after AS n USING (session_id)
        WHERE (o.started_at IS NULL OR o.ended_at IS NULL OR o.end_reason IS NULL)
          AND (o.started_at, o.ended_at, o.end_reason)
              IS DISTINCT FROM (n.started_at, n.ended_at, n.end_reason)
    $q$ INTO old_rows, new_rows;
    IF new_rows IS NOT NULL THEN
        PERFORM webhook_sessions_record(old_rows, new_rows);
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION webhook_recoveries_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $q$
        SELECT webhook_recoveries_record(ARRAY(
            SELECT n::recoveries FROM before AS o JOIN after AS n USING (id)
            WHERE o.outcome IS DISTINCT FROM n.outcome AND o.outcome IN ('pending', 'open')))
    $q$;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION webhook_queue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $q$
        INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
        SELECT 'evt_queue.assigned_' || n.queue_id, 'queue.assigned', n.session_id,
            coalesce(n.assigned_at, n.joined_at),
            jsonb_build_object('queue_id', n.queue_id, 'app_id', n.app_id, 'user_id', n.user_id,
                'priority', n.priority, 'session_id', n.session_id, 'phone_id', n.phone_id,
                'joined_at', webhook_ms(n.joined_at),
                'assigned_at', webhook_ms(n.assigned_at))::text
        FROM before AS o JOIN after AS n USING (seq)
        WHERE o.session_id IS NULL AND n.session_id IS NOT NULL
        ORDER BY n.seq
        ON CONFLICT (event_id) DO NOTHING
    $q$;
    RETURN NULL;
END $$;

-- 2. Full pages: with the default fillfactor (100) almost no touch was a HOT update, so
--    each wrote a new row version into all nine indexes of `sessions`. `last_heartbeat_at`
--    is in no index: with room left on the page, the touch is one heap write. `phones`
--    likewise: the flush upserts every heartbeating phone, and of the columns it sets only
--    `heartbeat_session_id` is in an index (the predicate of `phones_free`), changing when
--    a game starts or ends. Applies to pages filled from now on.
ALTER TABLE sessions SET (fillfactor = 80);
ALTER TABLE phones SET (fillfactor = 80);
