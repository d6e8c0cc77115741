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

-- SQLite has no functions to share between triggers: each change is staged as a row of
-- webhook_session_changes / webhook_recovery_changes (as 0011 stages usage_rollup_changes),
-- whose trigger writes the events once for every path. A staged row lives only while its
-- trigger runs. `recorded_at` is the database's clock in epoch ms ('now' is fixed for the
-- statement).

-- A session starts playing when its start is known; it has ended when its start, end and
-- end reason are. A quit that overtook its enter leaves started_at NULL: its session.ended
-- is written with the late enter, after its session.started, never before it. A late quit
-- correcting an abandonment finds its session.ended already written: the id is the
-- session's, the first end is the one reported (docs/webhooks.md).
CREATE TABLE webhook_session_changes (
    session_id TEXT NOT NULL,
    started    INTEGER NOT NULL,  -- write session.started
    ended      INTEGER NOT NULL   -- write session.ended
) STRICT;

CREATE TRIGGER webhook_session_write AFTER INSERT ON webhook_session_changes
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_session.started_' || s.session_id, 'session.started', s.session_id,
        s.started_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('session_id', s.session_id, 'phone_id', s.phone_id,
            'app_id', s.app_id, 'user_id', s.user_id, 'started_at', s.started_at)
    FROM sessions AS s WHERE s.session_id = NEW.session_id AND NEW.started
    ON CONFLICT (event_id) DO NOTHING;
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_session.ended_' || s.session_id, 'session.ended', s.session_id,
        s.ended_at, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('session_id', s.session_id, 'phone_id', s.phone_id,
            'app_id', s.app_id, 'user_id', s.user_id, 'started_at', s.started_at,
            'ended_at', s.ended_at, 'end_reason', s.end_reason,
            'duration_seconds', s.duration_seconds, 'run_time', s.reported_run_time,
            'run_time_mismatch', json(iif(s.run_time_mismatch, 'true', 'false')))
    FROM sessions AS s WHERE s.session_id = NEW.session_id AND NEW.ended
    ON CONFLICT (event_id) DO NOTHING;
    DELETE FROM webhook_session_changes WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER webhook_session_added AFTER INSERT ON sessions
WHEN NEW.started_at IS NOT NULL
BEGIN
    INSERT INTO webhook_session_changes VALUES (NEW.session_id, 1,
        NEW.ended_at IS NOT NULL AND NEW.end_reason IS NOT NULL);
END;

-- Enters, heartbeats and redeliveries fail the WHEN and cost a comparison.
CREATE TRIGGER webhook_session_changed AFTER UPDATE ON sessions
WHEN NEW.started_at IS NOT NULL
 AND (OLD.started_at IS NULL
      OR (NEW.ended_at IS NOT NULL AND NEW.end_reason IS NOT NULL
          AND (OLD.ended_at IS NULL OR OLD.end_reason IS NULL)))
BEGIN
    INSERT INTO webhook_session_changes VALUES (NEW.session_id, OLD.started_at IS NULL,
        NEW.ended_at IS NOT NULL AND NEW.end_reason IS NOT NULL
        AND (OLD.started_at IS NULL OR OLD.ended_at IS NULL OR OLD.end_reason IS NULL));
END;

-- phone.recovery once a recovery has its outcome (pending is not one); fleet.incident when
-- a server incident opens and when it closes. Server incidents are recovery rows with the
-- server id in phone_id (0005).
CREATE TABLE webhook_recovery_changes (id INTEGER NOT NULL) STRICT;

CREATE TRIGGER webhook_recovery_write AFTER INSERT ON webhook_recovery_changes
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_' || iif(r.reason = 'server_incident',
               'fleet.incident_' || r.id || '_' || r.outcome, 'phone.recovery_' || r.id),
        iif(r.reason = 'server_incident', 'fleet.incident', 'phone.recovery'),
        r.phone_id, coalesce(r.ended_at, r.started_at),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('recovery_id', r.id, 'subject', r.phone_id, 'reason', r.reason,
            'action', r.action, 'outcome', r.outcome,
            'dry_run', json(iif(r.dry_run, 'true', 'false')), 'job_id', r.job_id,
            'error', r.error, 'detail', r.detail, 'started_at', r.started_at,
            'ended_at', r.ended_at)
    FROM recoveries AS r WHERE r.id = NEW.id
    ON CONFLICT (event_id) DO NOTHING;
    DELETE FROM webhook_recovery_changes WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER webhook_recovery_added AFTER INSERT ON recoveries
WHEN NEW.outcome <> 'pending'
BEGIN
    INSERT INTO webhook_recovery_changes VALUES (NEW.id);
END;

CREATE TRIGGER webhook_recovery_changed AFTER UPDATE ON recoveries
WHEN OLD.outcome IS NOT NEW.outcome AND OLD.outcome IN ('pending', 'open')
BEGIN
    INSERT INTO webhook_recovery_changes VALUES (NEW.id);
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
