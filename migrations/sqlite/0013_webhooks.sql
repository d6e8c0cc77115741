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
-- `data` is the fact as the book holds it, JSON with times as epoch milliseconds; the
-- dispatcher renders the envelope from it (RFC 3339 times, billable minutes per the usage
-- rounding in force when it is sent).
CREATE TABLE webhook_events (
    -- Commit order within one subject (a session's rows are changed one transaction after
    -- another), which is the order an endpoint receives that subject's events in.
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL CHECK (type IN ('session.started', 'session.ended',
                    'session.tick', 'phone.recovery', 'fleet.incident', 'queue.assigned')),
    -- What the event is about, and the key its deliveries are ordered by: the session
    -- (session.*, queue.assigned), the phone (phone.recovery) or the server (fleet.incident).
    subject     TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,          -- the fact's time (epoch ms), for replays
    recorded_at INTEGER NOT NULL,          -- the database's clock at the change
    data        TEXT NOT NULL,
    -- 0 until the dispatcher made its deliveries, one per endpoint that wants the type.
    fanned_out  INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX webhook_events_to_fan_out ON webhook_events (seq) WHERE fanned_out = 0;
CREATE INDEX webhook_events_by_time ON webhook_events (occurred_at);

-- The database's clock in epoch ms ('now' is fixed for the statement).
-- SQLite has no variables: the expression below is repeated in each trigger.
--   CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)

-- A session starts playing when its start is known; it has ended when its start, end and
-- end reason are. A quit that overtook its enter leaves started_at NULL: its session.ended
-- is written with the late enter, after its session.started, never before it.
CREATE TRIGGER webhook_session_added AFTER INSERT ON sessions
WHEN NEW.started_at IS NOT NULL
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_session.started_' || NEW.session_id, 'session.started', NEW.session_id,
        NEW.started_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('session_id', NEW.session_id, 'phone_id', NEW.phone_id,
            'app_id', NEW.app_id, 'user_id', NEW.user_id, 'started_at', NEW.started_at)
    WHERE true
    ON CONFLICT (event_id) DO NOTHING;
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_session.ended_' || NEW.session_id, 'session.ended', NEW.session_id,
        NEW.ended_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('session_id', NEW.session_id, 'phone_id', NEW.phone_id,
            'app_id', NEW.app_id, 'user_id', NEW.user_id, 'started_at', NEW.started_at,
            'ended_at', NEW.ended_at, 'end_reason', NEW.end_reason,
            'duration_seconds', NEW.duration_seconds, 'run_time', NEW.reported_run_time,
            'run_time_mismatch', json(iif(NEW.run_time_mismatch, 'true', 'false')))
    WHERE NEW.ended_at IS NOT NULL AND NEW.end_reason IS NOT NULL
    ON CONFLICT (event_id) DO NOTHING;
END;

-- One trigger, two statements in order: a late enter completing a quit writes started,
-- then ended. Enters, heartbeats and redeliveries fail the WHEN and cost a comparison.
-- A late quit correcting an abandonment finds its session.ended already written: the id
-- is the session's, the first end is the one reported (docs/webhooks.md).
CREATE TRIGGER webhook_session_changed AFTER UPDATE ON sessions
WHEN NEW.started_at IS NOT NULL
 AND (OLD.started_at IS NULL
      OR (NEW.ended_at IS NOT NULL AND NEW.end_reason IS NOT NULL
          AND (OLD.ended_at IS NULL OR OLD.end_reason IS NULL)))
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_session.started_' || NEW.session_id, 'session.started', NEW.session_id,
        NEW.started_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('session_id', NEW.session_id, 'phone_id', NEW.phone_id,
            'app_id', NEW.app_id, 'user_id', NEW.user_id, 'started_at', NEW.started_at)
    WHERE OLD.started_at IS NULL
    ON CONFLICT (event_id) DO NOTHING;
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_session.ended_' || NEW.session_id, 'session.ended', NEW.session_id,
        NEW.ended_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('session_id', NEW.session_id, 'phone_id', NEW.phone_id,
            'app_id', NEW.app_id, 'user_id', NEW.user_id, 'started_at', NEW.started_at,
            'ended_at', NEW.ended_at, 'end_reason', NEW.end_reason,
            'duration_seconds', NEW.duration_seconds, 'run_time', NEW.reported_run_time,
            'run_time_mismatch', json(iif(NEW.run_time_mismatch, 'true', 'false')))
    WHERE NEW.ended_at IS NOT NULL AND NEW.end_reason IS NOT NULL
    ON CONFLICT (event_id) DO NOTHING;
END;

-- phone.recovery once a recovery has its outcome (pending is not one); fleet.incident when
-- a server incident opens and when it closes. Server incidents are recovery rows with the
-- server id in phone_id (0005).
CREATE TRIGGER webhook_recovery_added AFTER INSERT ON recoveries
WHEN NEW.outcome <> 'pending'
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_' || iif(NEW.reason = 'server_incident',
               'fleet.incident_' || NEW.id || '_' || NEW.outcome, 'phone.recovery_' || NEW.id),
        iif(NEW.reason = 'server_incident', 'fleet.incident', 'phone.recovery'),
        NEW.phone_id, coalesce(NEW.ended_at, NEW.started_at),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('recovery_id', NEW.id, 'subject', NEW.phone_id, 'reason', NEW.reason,
            'action', NEW.action, 'outcome', NEW.outcome,
            'dry_run', json(iif(NEW.dry_run, 'true', 'false')), 'job_id', NEW.job_id,
            'error', NEW.error, 'detail', NEW.detail, 'started_at', NEW.started_at,
            'ended_at', NEW.ended_at)
    WHERE true
    ON CONFLICT (event_id) DO NOTHING;
END;

CREATE TRIGGER webhook_recovery_changed AFTER UPDATE ON recoveries
WHEN OLD.outcome IS NOT NEW.outcome AND OLD.outcome IN ('pending', 'open')
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_' || iif(NEW.reason = 'server_incident',
               'fleet.incident_' || NEW.id || '_' || NEW.outcome, 'phone.recovery_' || NEW.id),
        iif(NEW.reason = 'server_incident', 'fleet.incident', 'phone.recovery'),
        NEW.phone_id, coalesce(NEW.ended_at, NEW.started_at),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('recovery_id', NEW.id, 'subject', NEW.phone_id, 'reason', NEW.reason,
            'action', NEW.action, 'outcome', NEW.outcome,
            'dry_run', json(iif(NEW.dry_run, 'true', 'false')), 'job_id', NEW.job_id,
            'error', NEW.error, 'detail', NEW.detail, 'started_at', NEW.started_at,
            'ended_at', NEW.ended_at)
    WHERE true
    ON CONFLICT (event_id) DO NOTHING;
END;

-- queue.assigned when an entry gets its session; ordered with that session's events.
CREATE TRIGGER webhook_queue_assigned AFTER UPDATE OF session_id ON queue_entries
WHEN OLD.session_id IS NULL AND NEW.session_id IS NOT NULL
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_queue.assigned_' || NEW.queue_id, 'queue.assigned', NEW.session_id,
        coalesce(NEW.assigned_at, NEW.joined_at),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('queue_id', NEW.queue_id, 'app_id', NEW.app_id, 'user_id', NEW.user_id,
            'priority', NEW.priority, 'session_id', NEW.session_id, 'phone_id', NEW.phone_id,
            'joined_at', NEW.joined_at, 'assigned_at', NEW.assigned_at)
    WHERE true
    ON CONFLICT (event_id) DO NOTHING;
END;

-- One row per endpoint and event: the endpoints live in the configuration, so the
-- dispatcher fans each outbox row out to the endpoints that want its type.
CREATE TABLE webhook_deliveries (
    endpoint        TEXT NOT NULL,
    event_seq       INTEGER NOT NULL REFERENCES webhook_events (seq),
    subject         TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- A worker's claim: another replica (or this one after a restart) takes the delivery
    -- only once it lapsed, so each is sent once while its sender lives, again after a crash.
    leased_until    INTEGER,
    leased_by       TEXT,              -- the claim that holds it
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (endpoint, event_seq)
) STRICT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint, next_attempt_at)
    WHERE state = 'pending';
-- "Is an earlier event of this subject still pending for this endpoint?" per candidate.
CREATE INDEX webhook_deliveries_by_subject ON webhook_deliveries (endpoint, subject, event_seq)
    WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (endpoint, state, updated_at);

-- Every attempt of a delivery: what the endpoint answered (status, a bounded excerpt of
-- the body) or why there was no answer.
CREATE TABLE webhook_attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint     TEXT NOT NULL,
    event_seq    INTEGER NOT NULL,
    attempted_at INTEGER NOT NULL,
    status       INTEGER,
    latency_ms   INTEGER NOT NULL,
    response     TEXT,
    error        TEXT
) STRICT;
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (endpoint, event_seq, id);
