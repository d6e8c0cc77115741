-- Two more facts for the webhook outbox (issue #18, docs/webhooks.md), written like those
-- of 0013: by triggers, in the transaction of the change, with ids a receiver dedups on.
--
-- 1. A control-plane pause: the control plane refuses the account (chapter 7.2: CPS.0006
--    arrears, CPS.0007 frozen, CPS.0008 unverified) and the watchdog stops every recovery
--    until it is served again. One row per pause; the partial unique index allows one open
--    pause at a time, so replicas that notice the same refusal open it once (their inserts
--    are ON CONFLICT DO NOTHING) and the first to see the account served closes it.
CREATE TABLE account_pauses (
    id             BIGSERIAL PRIMARY KEY,
    code           TEXT NOT NULL,            -- the 7.2 error code that began it
    probe_phone_id TEXT NOT NULL,            -- the phone whose re-read tells when it ends
    started_at     TIMESTAMPTZ NOT NULL,
    ended_at       TIMESTAMPTZ
);
CREATE UNIQUE INDEX account_pauses_one_open ON account_pauses ((ended_at IS NULL))
    WHERE ended_at IS NULL;

-- fleet.incident when a pause begins ('open') and when it ends ('closed'); the subject is
-- the account.
CREATE FUNCTION webhook_account_pause() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    phase TEXT := CASE WHEN NEW.ended_at IS NULL THEN 'open' ELSE 'closed' END;
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
    VALUES ('evt_fleet.incident_account_' || NEW.id || '_' || phase, 'fleet.incident',
        'account', coalesce(NEW.ended_at, NEW.started_at),
        jsonb_build_object('pause_id', NEW.id, 'subject', 'account',
            'reason', 'account_refused', 'code', NEW.code, 'phone_id', NEW.probe_phone_id,
            'outcome', phase, 'started_at', webhook_ms(NEW.started_at),
            'ended_at', webhook_ms(NEW.ended_at))::text)
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_pause_opened AFTER INSERT ON account_pauses
    FOR EACH ROW EXECUTE FUNCTION webhook_account_pause();
CREATE TRIGGER webhook_pause_closed AFTER UPDATE OF ended_at ON account_pauses
    FOR EACH ROW WHEN (OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL)
    EXECUTE FUNCTION webhook_account_pause();

-- 2. phone.recovery when cphub learns a phone is out of service: its control-plane status
--    (chapter 4.3.1) becomes frozen (6), stopped (8), creation failed (-8) or stopping
--    failed (-9) — the statuses of `out_of_service` (store/book.rs) — from any other or
--    none, whoever writes it (phone sync, the watchdog's re-read, `cphub phones stop`).
--    Once per transition: the id carries the database's clock at the change, in ms.
CREATE FUNCTION webhook_out_of_service() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    now_ms BIGINT := webhook_ms(clock_timestamp());
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
    VALUES ('evt_phone.recovery_' || NEW.phone_id || '_out_of_service_' || now_ms,
        'phone.recovery', NEW.phone_id, to_timestamp(now_ms / 1000.0),
        jsonb_build_object('recovery_id', NULL, 'subject', NEW.phone_id,
            'reason', 'out_of_service', 'action', NULL, 'outcome', 'out_of_service',
            'dry_run', false, 'job_id', NULL, 'error', NULL,
            'detail', 'status ' || NEW.cph_status || ' (' || CASE NEW.cph_status
                WHEN 6 THEN 'frozen' WHEN 8 THEN 'stopped' WHEN -8 THEN 'creation failed'
                ELSE 'stopping failed' END || ')',
            'cph_status', NEW.cph_status, 'started_at', now_ms, 'ended_at', NULL)::text)
    ON CONFLICT (event_id) DO NOTHING;
    RETURN NULL;
END $$;

CREATE TRIGGER webhook_out_of_service_added AFTER INSERT ON phones
    FOR EACH ROW WHEN (NEW.cph_status IN (6, 8, -8, -9))
    EXECUTE FUNCTION webhook_out_of_service();
CREATE TRIGGER webhook_out_of_service_changed AFTER UPDATE OF cph_status ON phones
    FOR EACH ROW WHEN (NEW.cph_status IN (6, 8, -8, -9)
        AND (OLD.cph_status IS NULL OR OLD.cph_status NOT IN (6, 8, -8, -9)))
    EXECUTE FUNCTION webhook_out_of_service();
