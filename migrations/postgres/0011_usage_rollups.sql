-- Usage rollups: the usage report's figures per app and per quarter of an hour (UTC), so a
-- report over months reads a few hundred thousand rollup rows instead of millions of
-- sessions. The rules are those of the raw query (src/store/usage.rs), cut at the bucket
-- bounds; docs/architecture.md ("Usage rollups") says why they add up exactly:
-- - Bucket: 15 minutes, because every time zone in use today has its midnights on a
--   quarter hour (+05:30, +05:45, +08:45 …), so every calendar day of any zone is whole
--   buckets; a window bound between two buckets is computed from the sessions (the edges).
-- - A session counts where it starts (sessions, abandoned, run_time_mismatches); its
--   seconds and billable minutes are split across the buckets it overlaps exactly as the raw
--   query splits them at any bound: whole seconds from the session's start to each bound,
--   differenced. The three roundings are kept side by side, so changing
--   `usage.billing_rounding` needs no rebuild.
-- - `touching` counts the sessions overlapping the bucket: the raw query reports a group as
--   soon as one session overlaps it, even for 0 seconds, and a group whose sessions moved
--   away (a late quit correcting an abandonment) must vanish, not stay as a row of zeros.
-- - Only closed sessions (started and ended) are rolled up; open sessions are counted from
--   the `sessions_open` index, since they change as they end.
-- - Only the app: by phone or by user a bucket holds about one session, so those groupings
--   read the sessions.
-- - Not sessions longer than 31 days (2976 buckets): a phone whose clock jumped years
--   would make one quit write hundreds of thousands of rows inside the event writer's
--   transaction. While the book holds such a session, reports read the sessions (cphub
--   checks max(duration_seconds) first), so they stay exact.
-- Maintained by statement-level triggers, in the transaction that changes the sessions,
-- whichever path it is: the old contributions are subtracted, the new added, with
-- `x = x + excluded.x`, so concurrent replicas add up exactly under the row locks. Each
-- statement upserts its buckets in (bucket_start, app_id) order: two replicas' batches
-- lock shared rows in the same order and cannot deadlock on them.
CREATE TABLE usage_rollups (
    bucket_start        TIMESTAMPTZ NOT NULL,  -- a multiple of 15 minutes since the epoch
    app_id              TEXT NOT NULL,
    touching            BIGINT NOT NULL,
    sessions            BIGINT NOT NULL,
    seconds             BIGINT NOT NULL,
    minutes_started     BIGINT NOT NULL,  -- usage.billing_rounding = started_minute
    minutes_completed   BIGINT NOT NULL,  -- completed_minute
    minutes_nearest     BIGINT NOT NULL,  -- nearest_minute
    abandoned           BIGINT NOT NULL,
    run_time_mismatches BIGINT NOT NULL,
    PRIMARY KEY (bucket_start, app_id)
);

-- Open sessions are few; reports count them by start through this index.
CREATE INDEX sessions_open ON sessions (started_at) WHERE ended_at IS NULL;

-- One closed session's contribution, added (sign 1) or taken back (-1).
CREATE TYPE usage_rollup_change AS (
    sign       INTEGER,
    app_id     TEXT,
    started_at TIMESTAMPTZ,
    ended_at   TIMESTAMPTZ,  -- never before started_at, as the raw query clips it
    abandoned  BOOLEAN,
    mismatch   BOOLEAN
);

-- NULL for a session not closed (nothing billed yet), or longer than 31 days.
CREATE FUNCTION usage_rollup_change(s sessions, sign INTEGER) RETURNS usage_rollup_change
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN s.started_at IS NOT NULL AND s.ended_at IS NOT NULL
                     AND s.ended_at - s.started_at <= interval '31 days' THEN
        ROW(sign, s.app_id, s.started_at, greatest(s.ended_at, s.started_at),
            coalesce(s.end_reason = 'abandoned', false), s.run_time_mismatch)::usage_rollup_change
    END
$$;

-- The buckets a session overlaps, with g0/g1: whole seconds from its start to the
-- bucket's bounds clipped to the session (the raw query's sa/sb). The first bucket always,
-- even for a session of no length: it counts there.
CREATE FUNCTION usage_rollup_parts(st TIMESTAMPTZ, en TIMESTAMPTZ)
RETURNS TABLE (bucket_start TIMESTAMPTZ, starts_here BOOLEAN, g0 BIGINT, g1 BIGINT)
LANGUAGE sql STABLE AS $$
    SELECT b, st >= b,
        floor(extract(epoch FROM greatest(b, st) - st))::bigint,
        floor(extract(epoch FROM least(b + interval '15 minutes', en) - st))::bigint
    FROM generate_series(
        date_bin('15 minutes', st, timestamptz '1970-01-01 00:00:00+00'),
        greatest(date_bin('15 minutes', st, timestamptz '1970-01-01 00:00:00+00'),
                 en - interval '1 microsecond'),
        interval '15 minutes') AS b
$$;

CREATE FUNCTION usage_rollup_add(changes usage_rollup_change[]) RETURNS void
LANGUAGE sql AS $$
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
        run_time_mismatches = r.run_time_mismatches + excluded.run_time_mismatches
$$;

CREATE FUNCTION usage_rollup_sessions_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM usage_rollup_add(ARRAY(SELECT usage_rollup_change(n, 1) FROM added AS n));
    RETURN NULL;
END $$;

-- Enters and redeliveries change nothing billed: only rows whose billed columns changed
-- are taken back and added again.
CREATE FUNCTION usage_rollup_sessions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM usage_rollup_add(ARRAY(
        SELECT c FROM before AS o JOIN after AS n USING (session_id),
            LATERAL (VALUES (usage_rollup_change(o, -1)), (usage_rollup_change(n, 1))) AS v(c)
        WHERE (o.started_at, o.ended_at, o.app_id, o.end_reason, o.run_time_mismatch)
            IS DISTINCT FROM (n.started_at, n.ended_at, n.app_id, n.end_reason,
                              n.run_time_mismatch)));
    RETURN NULL;
END $$;

-- cphub deletes no sessions; a retention job or an operator's cleanup would.
CREATE FUNCTION usage_rollup_sessions_removed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM usage_rollup_add(ARRAY(SELECT usage_rollup_change(o, -1) FROM removed AS o));
    RETURN NULL;
END $$;

CREATE TRIGGER usage_rollup_sessions_added AFTER INSERT ON sessions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_sessions_added();
CREATE TRIGGER usage_rollup_sessions_changed AFTER UPDATE ON sessions
    REFERENCING OLD TABLE AS before NEW TABLE AS after
    FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_sessions_changed();
CREATE TRIGGER usage_rollup_sessions_removed AFTER DELETE ON sessions
    REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION usage_rollup_sessions_removed();

-- Sessions closed before this migration, a month of starts at a time: one array of
-- every session ever would have to fit in memory at once.
DO $$
DECLARE
    month TIMESTAMPTZ;
BEGIN
    FOR month IN SELECT generate_series(date_trunc('month', min(started_at)),
                                        max(started_at), interval '1 month') FROM sessions
    LOOP
        PERFORM usage_rollup_add(ARRAY(
            SELECT usage_rollup_change(s, 1) FROM sessions AS s
            WHERE s.started_at >= month AND s.started_at < month + interval '1 month'));
    END LOOP;
END $$;
