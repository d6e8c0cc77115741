-- The cost of one sign-check round's ticket consumption on PostgreSQL, as the writer sends it
-- (src/store/book.rs, CONSUME_TICKETS_POSTGRES): 5 minted sessions of 10,000 become verified
-- and their phones' holds are extended, with no ANALYZE since the rows arrived (a fresh
-- book in a flash crowd). Without the `= ANY(ARRAY(SELECT session_id FROM b))` line the plan
-- scans every minted session (a Bitmap Heap Scan of 10,000 rows, ~4 ms); with it, the
-- primary key. Run on a migrated, empty book; changes nothing (rolled back):
--   psql -X -d <database> -f bench/scaling/ticket_consume.sql | grep -E 'Trigger|Execution'
BEGIN;
INSERT INTO phones (phone_id, created_at, updated_at, allocated_session_id, allocated_until)
SELECT lpad(i::text, 32, '0'), now(), now(), md5(i::text), now() + interval '2 minutes'
FROM generate_series(1, 10000) AS i;
INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state, minted_at,
                      hold_until, created_at, updated_at)
SELECT md5(i::text), lpad(i::text, 32, '0'), 'sim.game', 'u' || i, true, 'minted', now(),
       now() + interval '2 minutes', now(), now()
FROM generate_series(1, 10000) AS i;
-- One small update first, as in a running cphub, whose plans the triggers may cache.
UPDATE sessions SET updated_at = now() WHERE session_id = md5('9999');
EXPLAIN (ANALYZE, COSTS OFF)
WITH b AS (SELECT value ->> 'session_id' AS session_id, value ->> 'digest' AS digest,
    to_timestamp(0) + (value ->> 'now')::bigint * interval '1 microsecond' AS now,
    to_timestamp(0) + (value ->> 'hold_until')::bigint * interval '1 microsecond' AS hold_until
  FROM json_array_elements((SELECT json_agg(json_build_object(
      'session_id', md5(i::text), 'digest', 'd' || i,
      'now', (extract(epoch FROM now()) * 1000000)::bigint,
      'hold_until', (extract(epoch FROM now() + interval '2 minutes') * 1000000)::bigint))
    FROM generate_series(1, 5) AS i))),
consumed AS (UPDATE sessions SET state = 'verified', verified_at = b.now,
    sign_check_digest = b.digest, hold_until = b.hold_until, updated_at = b.now
  FROM b WHERE sessions.session_id = ANY(ARRAY(SELECT session_id FROM b))
    AND sessions.session_id = b.session_id AND sessions.state = 'minted'
  RETURNING sessions.session_id, sessions.phone_id, b.hold_until),
held AS (UPDATE phones SET allocated_until = consumed.hold_until FROM consumed
  WHERE phones.phone_id = consumed.phone_id
    AND phones.allocated_session_id = consumed.session_id)
SELECT session_id FROM consumed;
ROLLBACK;
