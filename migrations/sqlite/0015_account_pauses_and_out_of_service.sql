-- Two more facts for the webhook outbox (issue #18, docs/webhooks.md), written like those
-- of 0013: by triggers, in the transaction of the change, with ids a receiver dedups on.
--
-- 1. A control-plane pause: the control plane refuses the account (chapter 7.2: CPS.0006
--    arrears, CPS.0007 frozen, CPS.0008 unverified) and the watchdog stops every recovery
--    until it is served again. One row per pause; the partial unique index allows one open
--    pause at a time, so replicas that notice the same refusal open it once (their inserts
--    are ON CONFLICT DO NOTHING) and the first to see the account served closes it.
CREATE TABLE account_pauses (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    code           TEXT NOT NULL,            -- the 7.2 error code that began it
    probe_phone_id TEXT NOT NULL,            -- the phone whose re-read tells when it ends
    started_at     INTEGER NOT NULL,         -- epoch ms
    ended_at       INTEGER
) STRICT;
CREATE UNIQUE INDEX account_pauses_one_open ON account_pauses ((ended_at IS NULL))
    WHERE ended_at IS NULL;

-- fleet.incident when a pause begins and when it ends; the subject is the account.
CREATE TABLE webhook_pause_changes (id INTEGER NOT NULL, phase TEXT NOT NULL) STRICT;

CREATE TRIGGER webhook_pause_write AFTER INSERT ON webhook_pause_changes
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_fleet.incident_account_' || p.id || '_' || NEW.phase, 'fleet.incident',
        'account', coalesce(p.ended_at, p.started_at),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('pause_id', p.id, 'subject', 'account', 'reason', 'account_refused',
            'code', p.code, 'phone_id', p.probe_phone_id, 'outcome', NEW.phase,
            'started_at', p.started_at, 'ended_at', p.ended_at)
    FROM account_pauses AS p WHERE p.id = NEW.id
    ON CONFLICT (event_id) DO NOTHING;
    DELETE FROM webhook_pause_changes WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER webhook_pause_opened AFTER INSERT ON account_pauses
BEGIN
    INSERT INTO webhook_pause_changes VALUES (NEW.id, 'open');
END;

CREATE TRIGGER webhook_pause_closed AFTER UPDATE OF ended_at ON account_pauses
WHEN OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL
BEGIN
    INSERT INTO webhook_pause_changes VALUES (NEW.id, 'closed');
END;

-- 2. phone.recovery when cphub learns a phone is out of service: its control-plane status
--    (chapter 4.3.1) becomes frozen (6), stopped (8), creation failed (-8) or stopping
--    failed (-9) — the statuses of `out_of_service` (store/book.rs) — from any other or
--    none, whoever writes it (phone sync, the watchdog's re-read, `cphub phones stop`).
--    Once per transition: the id carries the database's clock at the change, in ms.
CREATE TABLE webhook_out_of_service_changes (phone_id TEXT NOT NULL) STRICT;

CREATE TRIGGER webhook_out_of_service_write AFTER INSERT ON webhook_out_of_service_changes
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_phone.recovery_' || p.phone_id || '_out_of_service_' || c.now_ms,
        'phone.recovery', p.phone_id, c.now_ms, c.now_ms,
        json_object('recovery_id', NULL, 'subject', p.phone_id, 'reason', 'out_of_service',
            'action', NULL, 'outcome', 'out_of_service', 'dry_run', json('false'),
            'job_id', NULL, 'error', NULL,
            'detail', 'status ' || p.cph_status || ' (' || CASE p.cph_status
                WHEN 6 THEN 'frozen' WHEN 8 THEN 'stopped' WHEN -8 THEN 'creation failed'
                ELSE 'stopping failed' END || ')',
            'cph_status', p.cph_status, 'started_at', c.now_ms, 'ended_at', NULL)
    FROM phones AS p,
        (SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now_ms) AS c
    WHERE p.phone_id = NEW.phone_id
    ON CONFLICT (event_id) DO NOTHING;
    DELETE FROM webhook_out_of_service_changes WHERE rowid = NEW.rowid;
END;

CREATE TRIGGER webhook_out_of_service_added AFTER INSERT ON phones
WHEN NEW.cph_status IN (6, 8, -8, -9)
BEGIN
    INSERT INTO webhook_out_of_service_changes VALUES (NEW.phone_id);
END;

CREATE TRIGGER webhook_out_of_service_changed AFTER UPDATE OF cph_status ON phones
WHEN NEW.cph_status IN (6, 8, -8, -9)
    AND (OLD.cph_status IS NULL OR OLD.cph_status NOT IN (6, 8, -8, -9))
BEGIN
    INSERT INTO webhook_out_of_service_changes VALUES (NEW.phone_id);
END;
