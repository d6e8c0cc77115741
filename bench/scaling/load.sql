-- A PostgreSQL book shaped like production, to measure bytes per row and per index
-- (docs/scaling.md): :phones phones on servers of 16, :sessions ended sessions spread over
-- one day, each with its accepted enter and quit. Ids, hashes and keys have their real
-- lengths (32 hex for ids as minted, 64 hex for SHA-256 and AES-256 keys).
\set ON_ERROR_STOP on
INSERT INTO phones (phone_id, phone_name, server_id, cph_status, cph_synced_at,
                    last_heartbeat_at, last_seen_at, created_at, updated_at)
SELECT md5('phone' || g), 'mobile-' || lpad(g::text, 7, '0'), md5('server' || (g / 16)), 2,
       now(), now(), now(), now(), now()
FROM generate_series(1, :phones) g;

INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state, minted_at,
                      verified_at, started_at, ended_at, reported_run_time, duration_seconds,
                      run_time_mismatch, end_reason, last_heartbeat_at, ticket_hash, aes_key,
                      auth_ts, sign_check_digest, created_at, updated_at)
SELECT md5('session' || g), md5('phone' || (1 + g % :phones)), 'sim.game', 'player-' || g,
       true, 'ended', t, t + interval '2 s', t + interval '3 s', t + interval '303 s', 300, 300,
       false, 'quit', t + interval '300 s', md5('t' || g) || md5('u' || g),
       md5('k' || g) || md5('l' || g), extract(epoch FROM t)::bigint * 1000 + 120000,
       md5('d' || g) || md5('e' || g), t, t + interval '303 s'
FROM (SELECT g, timestamptz '2026-11-30 00:00:00+00' + (g * interval '86400 s') / :sessions AS t
      FROM generate_series(1, :sessions) g) s;

INSERT INTO session_events (session_id, status, phone_id, app_id, event_time, run_time,
                            outcome, received_at)
SELECT session_id, st, phone_id, app_id,
       CASE st WHEN 0 THEN started_at ELSE ended_at END,
       CASE st WHEN 1 THEN 300 END, 'accepted', CASE st WHEN 0 THEN started_at ELSE ended_at END
FROM sessions, (VALUES (0::smallint), (1::smallint)) AS e(st);
ANALYZE;
