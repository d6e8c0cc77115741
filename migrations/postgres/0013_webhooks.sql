-- Signed webhooks from a durable outbox (issue #18, docs/webhooks.md).
--
-- The outbox, `webhook_events`, is written by triggers on the tables whose changes it
-- reports, like the usage rollups (0011): in the transaction of the change, whatever code
-- path makes it (the event writer, the watchdog, the hold sweeper, the queue pass, the
-- operator API). So there is no event without its change and no change without its event,
-- across kill -9. An event's id is the fact's (type and subject), and each insert is
-- `ON CONFLICT DO NOTHING`: a trigger that runs again, a redelivered quit, a replay, always
-- carries the same id, which is what a receiver deduplicates on.
--
-- `data` is the fact as the book holds it, JSON text with times as epoch milliseconds (as
-- on SQLite, so one renderer serves both); the dispatcher renders the envelope from it
-- (RFC 3339 times, billable minutes per the usage rounding in force when it is sent).
--
-- Statement-level triggers, as 0011's: a batch of events is one statement, and its rows
-- are written in subject order. A session's rows are changed one transaction after another
-- under its row lock, so its events take `seq` in commit order.
CREATE TABLE webhook_events (
    seq         BIGSERIAL PRIMARY KEY,
    event_id    TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL CHECK (type IN ('session.started', 'session.ended',
                    'session.tick', 'phone.recovery', 'fleet.incident', 'queue.assigned')),
    -- What the event is about, and the key its deliveries are ordered by: the session
    -- (session.*, queue.assigned), the phone (phone.recovery) or the server (fleet.incident).
    subject     TEXT NOT NULL,
    occurred_at TIMESTAMPTZ NOT NULL,      -- the fact's time, for replays
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    data        TEXT NOT NULL,
    -- false until the dispatcher made its deliveries, one per endpoint that wants the type.
    fanned_out  BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX webhook_events_to_fan_out ON webhook_events (seq) WHERE NOT fanned_out;
CREATE INDEX webhook_events_by_time ON webhook_events (occurred_at);

CREATE FUNCTION webhook_ms(t TIMESTAMPTZ) RETURNS BIGINT LANGUAGE sql IMMUTABLE AS $$
    SELECT floor(extract(epoch FROM t) * 1000)::bigint
$$;

CREATE FUNCTION webhook_session_started(s sessions) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('session_id', s.session_id, 'phone_id', s.phone_id,
        'app_id', s.app_id, 'user_id', s.user_id, 'started_at', webhook_ms(s.started_at))::text
$$;

CREATE FUNCTION webhook_session_ended(s sessions) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('session_id', s.session_id, 'phone_id', s.phone_id,
        'app_id', s.app_id, 'user_id', s.user_id, 'started_at', webhook_ms(s.started_at),
        'ended_at', webhook_ms(s.ended_at), 'end_reason', s.end_reason,
        'duration_seconds', s.duration_seconds, 'run_time', s.reported_run_time,
        'run_time_mismatch', s.run_time_mismatch)::text
$$;

-- A session starts playing when its start is known; it has ended when its start, end and
-- end reason are. A quit that overtook its enter leaves started_at NULL: its session.ended
-- is written with the late enter, after its session.started, never before it. A late quit
-- correcting an abandonment finds its session.ended already written: the id is the
-- session's, the first end is the one reported (docs/webhooks.md).
CREATE FUNCTION webhook_sessions_record(old_rows sessions[], new_rows sessions[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
    SELECT 'evt_session.started_' || n.session_id, 'session.started', n.session_id,
        n.started_at, webhook_session_started(n)
    FROM unnest(new_rows) AS n
    LEFT JOIN unnest(old_rows) AS o USING (session_id)
    WHERE n.started_at IS NOT NULL AND o.started_at IS NULL
    ORDER BY n.session_id
    ON CONFLICT (event_id) DO NOTHING;
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
    SELECT 'evt_session.ended_' || n.session_id, 'session.ended', n.session_id,
        n.ended_at, webhook_session_ended(n)
    FROM unnest(new_rows) AS n
    LEFT JOIN unnest(old_rows) AS o USING (session_id)
    WHERE n.started_at IS NOT NULL AND n.ended_at IS NOT NULL AND n.end_reason IS NOT NULL
      AND (o.started_at IS NULL OR o.ended_at IS NULL OR o.end_reason IS NULL)
    ORDER BY n.session_id
    ON CONFLICT (event_id) DO NOTHING;
$$;

CREATE FUNCTION webhook_sessions_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_sessions_record('{}'::sessions[], ARRAY(SELECT n::sessions FROM added AS n));
    RETURN NULL;
END $$;

CREATE FUNCTION webhook_sessions_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_sessions_record(
        ARRAY(SELECT o::sessions FROM before AS o JOIN after AS n USING (session_id)
              WHERE o.started_at IS NULL OR o.ended_at IS NULL OR o.end_reason IS NULL),
        ARRAY(SELECT n::sessions FROM before AS o JOIN after AS n USING (session_id)
              WHERE o.started_at IS NULL OR o.ended_at IS NULL OR o.end_reason IS NULL));
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_sessions_added AFTER INSERT ON sessions
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_sessions_added();
CREATE TRIGGER webhook_sessions_changed AFTER UPDATE ON sessions
    REFERENCING OLD TABLE AS before NEW TABLE AS after
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_sessions_changed();

-- phone.recovery once a recovery has its outcome (pending is not one); fleet.incident when
-- a server incident opens and when it closes. Server incidents are recovery rows with the
-- server id in phone_id (0005).
CREATE FUNCTION webhook_recoveries_record(rows recoveries[]) RETURNS void LANGUAGE sql AS $$
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
    SELECT 'evt_' || CASE WHEN r.reason = 'server_incident'
               THEN 'fleet.incident_' || r.id || '_' || r.outcome
               ELSE 'phone.recovery_' || r.id END,
        CASE WHEN r.reason = 'server_incident' THEN 'fleet.incident' ELSE 'phone.recovery' END,
        r.phone_id, coalesce(r.ended_at, r.started_at),
        jsonb_build_object('recovery_id', r.id, 'subject', r.phone_id, 'reason', r.reason,
            'action', r.action, 'outcome', r.outcome, 'dry_run', r.dry_run,
            'job_id', r.job_id, 'error', r.error, 'detail', r.detail,
            'started_at', webhook_ms(r.started_at), 'ended_at', webhook_ms(r.ended_at))::text
    FROM unnest(rows) AS r
    WHERE r.outcome <> 'pending'
    ORDER BY r.id
    ON CONFLICT (event_id) DO NOTHING;
$$;

CREATE FUNCTION webhook_recoveries_added() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_recoveries_record(ARRAY(SELECT r::recoveries FROM added AS r));
    RETURN NULL;
END $$;

CREATE FUNCTION webhook_recoveries_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM webhook_recoveries_record(ARRAY(
        SELECT n::recoveries FROM before AS o JOIN after AS n USING (id)
        WHERE o.outcome IS DISTINCT FROM n.outcome AND o.outcome IN ('pending', 'open')));
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_recoveries_added AFTER INSERT ON recoveries
    REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_recoveries_added();
CREATE TRIGGER webhook_recoveries_changed AFTER UPDATE ON recoveries
    REFERENCING OLD TABLE AS before NEW TABLE AS after
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_recoveries_changed();

-- queue.assigned when an entry gets its session; ordered with that session's events.
CREATE FUNCTION webhook_queue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_queue_changed AFTER UPDATE ON queue_entries
    REFERENCING OLD TABLE AS before NEW TABLE AS after
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_queue_changed();

-- One row per endpoint and event: the endpoints live in the configuration, so the
-- dispatcher fans each outbox row out to the endpoints that want its type.
CREATE TABLE webhook_deliveries (
    endpoint        TEXT NOT NULL,
    event_seq       BIGINT NOT NULL REFERENCES webhook_events (seq),
    subject         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    -- A worker's claim: another replica (or this one after a restart) takes the delivery
    -- only once it lapsed, so each is sent once while its sender lives, again after a crash.
    leased_until    TIMESTAMPTZ,
    leased_by       TEXT,              -- the claim that holds it
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (endpoint, event_seq)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at)
    WHERE state = 'pending';
-- "Is an earlier event of this subject still pending for this endpoint?" per candidate.
CREATE INDEX webhook_deliveries_by_subject ON webhook_deliveries (endpoint, subject, event_seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (endpoint, state, updated_at);

-- Every attempt of a delivery: what the endpoint answered (status, a bounded excerpt of
-- the body) or why there was no answer.
CREATE TABLE webhook_attempts (
    id           BIGSERIAL PRIMARY KEY,
    endpoint     TEXT NOT NULL,
    event_seq    BIGINT NOT NULL,
    attempted_at TIMESTAMPTZ NOT NULL,
    status       BIGINT,
    latency_ms   BIGINT NOT NULL,
    response     TEXT,
    error        TEXT
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (endpoint, event_seq, id);
