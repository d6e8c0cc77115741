-- The cost of one heartbeat flush chunk's touch of its sessions on PostgreSQL, as the flush
-- writes it (src/store/postgres.rs, record_heartbeats): 500 open sessions in a chunk of
-- 1,000 phones, after a one-row update in the same connection (whose plans the statement
-- triggers of `sessions` cache). Run on a migrated, empty book; changes nothing (rolled back):
--   psql -X -d <database> -f bench/scaling/heartbeat_touch.sql | grep -E 'Trigger|Execution'
-- docs/benchmarks.md quotes it before and after migration 0021.
BEGIN;
INSERT INTO sessions (session_id, phone_id, app_id, state, started_at, created_at, updated_at)
SELECT md5(i::text), lpad(i::text, 32, '0'), 'sim.game', 'playing', now(), now(), now()
FROM generate_series(1, 10000) AS i;
UPDATE sessions SET last_heartbeat_at = clock_timestamp() WHERE session_id = md5('2');
EXPLAIN (ANALYZE, COSTS OFF)
UPDATE sessions SET last_heartbeat_at = u.t
FROM UNNEST(
    (SELECT array_agg(CASE WHEN i % 2 = 0 THEN md5(i::text) END) FROM generate_series(1, 1000) AS i),
    (SELECT array_agg(clock_timestamp()) FROM generate_series(1, 1000))) AS u(s, t)
WHERE sessions.session_id = u.s
  AND (sessions.last_heartbeat_at IS NULL OR sessions.last_heartbeat_at < u.t);
ROLLBACK;
