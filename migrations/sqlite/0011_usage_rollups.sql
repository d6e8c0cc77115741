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
-- Maintained by triggers, in the transaction that changes the session, whichever path it is
-- (an event batch, the watchdog abandoning, a late quit replacing an abandonment): the old
-- contribution is subtracted, the new added. SQLite has one writer, so the upsert is exact.
CREATE TABLE usage_rollups (
    bucket_start        INTEGER NOT NULL,  -- epoch ms, a multiple of 900 000
    app_id              TEXT NOT NULL,
    touching            INTEGER NOT NULL,
    sessions            INTEGER NOT NULL,
    seconds             INTEGER NOT NULL,
    minutes_started     INTEGER NOT NULL,  -- usage.billing_rounding = started_minute
    minutes_completed   INTEGER NOT NULL,  -- completed_minute
    minutes_nearest     INTEGER NOT NULL,  -- nearest_minute
    abandoned           INTEGER NOT NULL,
    run_time_mismatches INTEGER NOT NULL,
    PRIMARY KEY (bucket_start, app_id)
) STRICT, WITHOUT ROWID;

-- Open sessions are few; reports count them by start through this index.
CREATE INDEX sessions_open ON sessions (started_at) WHERE ended_at IS NULL;

-- One closed session's contribution, added (sign 1) or taken back (-1). A row lives only
-- while its trigger runs: it exists so the bucket arithmetic is written once.
CREATE TABLE usage_rollup_changes (
    sign       INTEGER NOT NULL,
    app_id     TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at   INTEGER NOT NULL,  -- never before started_at, as the raw query clips it
    abandoned  INTEGER NOT NULL,
    mismatch   INTEGER NOT NULL
) STRICT;

-- g0/g1: whole seconds from the start to the bucket's bounds clipped to the session; the
-- raw query's sa/sb. (A WITH inside a subquery is allowed in a trigger; `WHERE true` tells
-- the parser that ON CONFLICT belongs to the INSERT.)
CREATE TRIGGER usage_rollup_apply AFTER INSERT ON usage_rollup_changes
BEGIN
    INSERT INTO usage_rollups (bucket_start, app_id, touching, sessions, seconds,
        minutes_started, minutes_completed, minutes_nearest, abandoned, run_time_mismatches)
    SELECT b, NEW.app_id, NEW.sign,
        NEW.sign * (NEW.started_at >= b),
        NEW.sign * (g1 - g0),
        NEW.sign * ((g1 + 59) / 60 - (g0 + 59) / 60),
        NEW.sign * (g1 / 60 - g0 / 60),
        NEW.sign * ((g1 + 30) / 60 - (g0 + 30) / 60),
        NEW.sign * (NEW.started_at >= b AND NEW.abandoned),
        NEW.sign * (NEW.started_at >= b AND NEW.mismatch)
    FROM (
        SELECT b,
            (max(b, NEW.started_at) - NEW.started_at) / 1000 AS g0,
            (min(b + 900000, NEW.ended_at) - NEW.started_at) / 1000 AS g1
        FROM (
            WITH RECURSIVE q(b) AS (
                SELECT NEW.started_at / 900000 * 900000
                WHERE NEW.ended_at - NEW.started_at <= 2678400000
                UNION ALL
                SELECT b + 900000 FROM q WHERE b + 900000 < NEW.ended_at
            )
            SELECT b FROM q
        )
    ) WHERE true
    ON CONFLICT (bucket_start, app_id) DO UPDATE SET
        touching = touching + excluded.touching,
        sessions = sessions + excluded.sessions,
        seconds = seconds + excluded.seconds,
        minutes_started = minutes_started + excluded.minutes_started,
        minutes_completed = minutes_completed + excluded.minutes_completed,
        minutes_nearest = minutes_nearest + excluded.minutes_nearest,
        abandoned = abandoned + excluded.abandoned,
        run_time_mismatches = run_time_mismatches + excluded.run_time_mismatches;
    DELETE FROM usage_rollup_changes WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER usage_rollup_session_added AFTER INSERT ON sessions
WHEN NEW.started_at IS NOT NULL AND NEW.ended_at IS NOT NULL
BEGIN
    INSERT INTO usage_rollup_changes VALUES (1, NEW.app_id, NEW.started_at,
        max(NEW.ended_at, NEW.started_at), coalesce(NEW.end_reason = 'abandoned', 0),
        NEW.run_time_mismatch);
END;

-- Enters and redeliveries change nothing billed: the WHEN keeps them cheap.
CREATE TRIGGER usage_rollup_session_changed AFTER UPDATE ON sessions
WHEN (OLD.ended_at IS NOT NULL OR NEW.ended_at IS NOT NULL)
 AND (OLD.started_at IS NOT NEW.started_at OR OLD.ended_at IS NOT NEW.ended_at
      OR OLD.app_id IS NOT NEW.app_id OR OLD.end_reason IS NOT NEW.end_reason
      OR OLD.run_time_mismatch IS NOT NEW.run_time_mismatch)
BEGIN
    INSERT INTO usage_rollup_changes SELECT -1, OLD.app_id, OLD.started_at,
        max(OLD.ended_at, OLD.started_at), coalesce(OLD.end_reason = 'abandoned', 0),
        OLD.run_time_mismatch
    WHERE OLD.started_at IS NOT NULL AND OLD.ended_at IS NOT NULL;
    INSERT INTO usage_rollup_changes SELECT 1, NEW.app_id, NEW.started_at,
        max(NEW.ended_at, NEW.started_at), coalesce(NEW.end_reason = 'abandoned', 0),
        NEW.run_time_mismatch
    WHERE NEW.started_at IS NOT NULL AND NEW.ended_at IS NOT NULL;
END;

-- cphub deletes no sessions; a retention job or an operator's cleanup would.
CREATE TRIGGER usage_rollup_session_removed AFTER DELETE ON sessions
WHEN OLD.started_at IS NOT NULL AND OLD.ended_at IS NOT NULL
BEGIN
    INSERT INTO usage_rollup_changes VALUES (-1, OLD.app_id, OLD.started_at,
        max(OLD.ended_at, OLD.started_at), coalesce(OLD.end_reason = 'abandoned', 0),
        OLD.run_time_mismatch);
END;

-- Sessions closed before this migration.
INSERT INTO usage_rollup_changes
SELECT 1, app_id, started_at, max(ended_at, started_at), coalesce(end_reason = 'abandoned', 0),
    run_time_mismatch
FROM sessions WHERE started_at IS NOT NULL AND ended_at IS NOT NULL;
