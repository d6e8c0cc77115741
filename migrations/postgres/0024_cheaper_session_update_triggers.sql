-- The AFTER UPDATE triggers of `sessions` now cost next to nothing for an update that
-- changes nothing they record.
--
-- As statement triggers with transition tables (0011, 0013, 0021, 0022), each ran a
-- dynamically planned join of the old and new rows at every UPDATE of `sessions` (EXECUTE,
-- planned at each call, because a cached plan had been sized on the first call's rows,
-- 0021). The most frequent UPDATE changes nothing either records: the heartbeat flush's
-- touch of `last_heartbeat_at`, hundreds of rows several times a second. And an event
-- batch's UPDATE, usually of one or two sessions, paid milliseconds in them: auto_explain
-- over a 40,000-phone capacity window (docs/benchmarks.md, "The triggers of a session
-- update") timed, in the event writes over 4 ms, the rollup trigger at 0.9 ms and the
-- webhook trigger at 2.6 ms (medians), the latter calling `webhook_sessions_record`, an SQL
-- function planned anew at each call.
--
-- What each records is unchanged:
-- - the rollups: the old row's contribution taken off and the new row's put on, when a
--   billed column changed and either row has both ends (`usage_rollup_change`);
-- - the outbox: `session.started` when the start becomes known, `session.ended` when the
--   start, end and end reason are all known and were not before, each `ON CONFLICT DO
--   NOTHING` on the fact's id (0013).

DROP TRIGGER webhook_sessions_changed ON sessions;
DROP FUNCTION webhook_sessions_changed();

-- The rollups' trigger stays per statement: it adds a statement's contributions up and
-- upserts them in `(bucket_start, app_id)` order, so that two writers' statements lock the
-- rows they share in one order (row triggers would lock each row's buckets in turn, and two
-- batches could wait for each other in a cycle). Before it plans its join of the two
-- transition tables, a scan of each with a plan kept for the connection (no join to size
-- wrongly) asks whether any row, before or after, has both ends: only such a row has a
-- contribution (`usage_rollup_change`). A heartbeat touch or an enter has none and stops
-- there.
CREATE OR REPLACE FUNCTION usage_rollup_sessions_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    changes usage_rollup_change[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM after AS n
                   WHERE n.started_at IS NOT NULL AND n.ended_at IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM before AS o
                       WHERE o.started_at IS NOT NULL AND o.ended_at IS NOT NULL) THEN
        RETURN NULL;
    END IF;
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

-- The outbox's trigger becomes a row trigger: its facts are one session's each, inserted
-- by their own ids, so one row's insert never waits for another's. Its WHEN is evaluated
-- as the row is updated, before anything is queued, so a row that changes no start or end
-- costs a comparison. Its statements, on one row, are planned once per connection, and a
-- one-row plan fits every later row. One statement's rows are recorded in the order it
-- updates them: the event batch passes its sessions in key order, and its few rows are
-- updated in that order (a nested loop over the array), so a batch's facts keep the
-- subject order the statement trigger gave them; nothing relies on it. A session's own
-- facts still follow its commits, under its row lock.
CREATE FUNCTION webhook_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.started_at IS NOT NULL AND OLD.started_at IS NULL THEN
        INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
        VALUES ('evt_session.started_' || NEW.session_id, 'session.started', NEW.session_id,
                NEW.started_at, webhook_session_started(NEW))
        ON CONFLICT (event_id) DO NOTHING;
    END IF;
    -- The WHEN let through only a row that lacked one of the three before.
    IF NEW.started_at IS NOT NULL AND NEW.ended_at IS NOT NULL
       AND NEW.end_reason IS NOT NULL THEN
        INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
        VALUES ('evt_session.ended_' || NEW.session_id, 'session.ended', NEW.session_id,
                NEW.ended_at, webhook_session_ended(NEW))
        ON CONFLICT (event_id) DO NOTHING;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_session_changed AFTER UPDATE ON sessions
    FOR EACH ROW
    WHEN ((OLD.started_at IS NULL OR OLD.ended_at IS NULL OR OLD.end_reason IS NULL)
          AND (OLD.started_at, OLD.ended_at, OLD.end_reason)
              IS DISTINCT FROM (NEW.started_at, NEW.ended_at, NEW.end_reason))
    EXECUTE FUNCTION webhook_session_changed();
