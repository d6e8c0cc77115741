-- The heartbeat flush's writes (src/store/postgres.rs `record_heartbeats`) replayed on the
-- loaded book: every phone heartbeats every :interval s, half of them naming the session
-- they play; each simulated second one replica flushes the heartbeats of that second (a
-- phones / interval batch) in its own transaction: the sessions' last_heartbeat_at, then the
-- phones' UPSERT. With :skip_s > 0 the phones' UPSERT skips a row whose stored last_seen_at
-- is less than :skip_s older than the heartbeat, unless its session or app changed: with
-- :skip_mode 'where' in the UPSERT's WHERE (the row is still locked), with 'filter' by
-- leaving those phones out of the batch beforehand (not even locked).
-- Prints rows written, WAL bytes and time for :seconds simulated seconds.
\set ON_ERROR_STOP on
SELECT set_config('bench.interval', :'interval', false),
       set_config('bench.seconds', :'seconds', false),
       set_config('bench.skip_s', :'skip_s', false),
       set_config('bench.start', :'start', false),
       set_config('bench.skip_mode', :'skip_mode', false);
CREATE TEMP TABLE IF NOT EXISTS hb_phones AS
SELECT phone_id, (row_number() OVER (ORDER BY phone_id)) % current_setting('bench.interval')::int AS slot,
       CASE WHEN row_number() OVER (ORDER BY phone_id) % 2 = 0 THEN md5('live' || phone_id) END AS session_id,
       CASE WHEN row_number() OVER (ORDER BY phone_id) % 2 = 0 THEN 'sim.game' END AS app_id
FROM phones;
INSERT INTO sessions (session_id, phone_id, app_id, issued, state, minted_at, verified_at,
                      started_at, created_at, updated_at)
SELECT session_id, phone_id, app_id, true, 'playing', now(), now(), now(), now(), now()
FROM hb_phones WHERE session_id IS NOT NULL
ON CONFLICT DO NOTHING;
CREATE TEMP TABLE IF NOT EXISTS hb_result (skip_mode text, skip_s int, phone_rows bigint, session_rows bigint,
                                           wal_bytes numeric, seconds float8);
DO $$
DECLARE
  interval_s int := current_setting('bench.interval')::int;
  skip interval := make_interval(secs => current_setting('bench.skip_s')::int);
  skipping boolean := current_setting('bench.skip_s')::int > 0
    AND current_setting('bench.skip_mode') = 'where';
  filtering boolean := current_setting('bench.skip_s')::int > 0
    AND current_setting('bench.skip_mode') = 'filter';
  t0 timestamptz := current_setting('bench.start')::timestamptz;
  lsn0 pg_lsn := pg_current_wal_lsn();
  clock0 timestamptz := clock_timestamp();
  phone_rows bigint := 0;
  session_rows bigint := 0;
  n bigint;
  r timestamptz;
BEGIN
  FOR s IN 0 .. current_setting('bench.seconds')::int - 1 LOOP
    r := t0 + make_interval(secs => s);
    PERFORM 1 FROM sessions WHERE session_id IN
      (SELECT session_id FROM hb_phones WHERE slot = s % interval_s AND session_id IS NOT NULL)
      ORDER BY session_id FOR UPDATE;
    UPDATE sessions SET last_heartbeat_at = r FROM hb_phones h
      WHERE h.slot = s % interval_s AND sessions.session_id = h.session_id
        AND (sessions.last_heartbeat_at IS NULL OR sessions.last_heartbeat_at < r);
    GET DIAGNOSTICS n = ROW_COUNT;
    session_rows := session_rows + n;
    INSERT INTO phones AS phones (phone_id, last_heartbeat_at, last_seen_at,
                                  heartbeat_session_id, heartbeat_app_id, created_at, updated_at)
    SELECT h.phone_id, r, r, h.session_id, h.app_id, r, r FROM hb_phones h
      WHERE h.slot = s % interval_s
        AND NOT (filtering AND EXISTS (SELECT 1 FROM phones p WHERE p.phone_id = h.phone_id
              AND p.last_seen_at > r - skip
              AND p.heartbeat_session_id IS NOT DISTINCT FROM h.session_id
              AND p.heartbeat_app_id IS NOT DISTINCT FROM h.app_id))
      ORDER BY h.phone_id
    ON CONFLICT (phone_id) DO UPDATE SET
      last_seen_at = CASE WHEN phones.last_seen_at IS NULL
          OR phones.last_seen_at < excluded.last_seen_at
        THEN excluded.last_seen_at ELSE phones.last_seen_at END,
      updated_at = excluded.updated_at,
      last_heartbeat_at = CASE WHEN phones.last_heartbeat_at IS NULL
          OR phones.last_heartbeat_at <= excluded.last_heartbeat_at
        THEN excluded.last_heartbeat_at ELSE phones.last_heartbeat_at END,
      heartbeat_session_id = CASE WHEN phones.last_heartbeat_at IS NULL
          OR phones.last_heartbeat_at <= excluded.last_heartbeat_at
        THEN excluded.heartbeat_session_id ELSE phones.heartbeat_session_id END,
      heartbeat_app_id = CASE WHEN phones.last_heartbeat_at IS NULL
          OR phones.last_heartbeat_at <= excluded.last_heartbeat_at
        THEN excluded.heartbeat_app_id ELSE phones.heartbeat_app_id END
    WHERE NOT skipping
       OR phones.last_seen_at IS NULL
       OR phones.last_seen_at <= excluded.last_seen_at - skip
       OR phones.heartbeat_session_id IS DISTINCT FROM excluded.heartbeat_session_id
       OR phones.heartbeat_app_id IS DISTINCT FROM excluded.heartbeat_app_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    phone_rows := phone_rows + n;
    COMMIT;
  END LOOP;
  INSERT INTO hb_result VALUES (current_setting('bench.skip_mode'), current_setting('bench.skip_s')::int, phone_rows, session_rows,
    pg_current_wal_lsn() - lsn0, extract(epoch FROM clock_timestamp() - clock0));
  COMMIT;
END $$;
SELECT skip_mode, skip_s, phone_rows, session_rows, wal_bytes,
       round(wal_bytes / greatest(phone_rows + session_rows, 1)) AS wal_bytes_per_row_written,
       round(seconds::numeric, 2) AS seconds,
       round(((SELECT count(*) FROM hb_phones) * current_setting('bench.seconds')::numeric
              / current_setting('bench.interval')::int) / seconds::numeric) AS heartbeats_per_s
FROM hb_result ORDER BY ctid DESC LIMIT 1;
