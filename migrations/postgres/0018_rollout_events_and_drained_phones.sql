-- Two things for rollouts (issue #19, docs/operations.md "Rolling out a game version").
--
-- 1. The `fleet.rollout` webhook (docs/webhooks.md): one outbox row per rollout state
--    transition, written by store/rollout.rs in the transaction of the change (not by a
--    trigger: its payload counts the rollout's phones per step *after* the statement that
--    moves them, which a trigger on `rollouts` fires before). `transitions` numbers a
--    rollout's transitions, so the event id `evt_fleet.rollout_<id>_<transition>_<n>` tells
--    a second pause from the first and is the same whichever replica writes it.
ALTER TABLE rollouts ADD COLUMN transitions BIGINT NOT NULL DEFAULT 0;

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_type_check,
    ADD CONSTRAINT webhook_events_type_check CHECK (type IN ('session.started',
        'session.ended', 'session.tick', 'phone.recovery', 'fleet.incident',
        'queue.assigned', 'fleet.rollout'));

-- 2. A drained phone is marked on its own row: `drained_by_rollout` is the rollout that
--    drains, updates or verifies it (the lowest, should two rollouts of different apps hold
--    it), NULL when none does. store/rollout.rs sets and clears it in the transaction that
--    moves the phone's step, so the free-phone pick reads one column of the row it locks
--    instead of probing `rollout_phones`, and a mint and a drain of the same phone are
--    ordered by that row's lock.
ALTER TABLE phones ADD COLUMN drained_by_rollout BIGINT;
UPDATE phones SET drained_by_rollout = (SELECT min(d.rollout_id) FROM rollout_phones d
    WHERE d.phone_id = phones.phone_id AND d.state IN ('draining', 'updating', 'verifying'))
WHERE phone_id IN (SELECT phone_id FROM rollout_phones
    WHERE state IN ('draining', 'updating', 'verifying'));
-- The free phones (0003), now without the drained ones: the pick walks only phones it may
-- take.
DROP INDEX phones_free;
CREATE INDEX phones_free ON phones (phone_id)
    WHERE allocated_session_id IS NULL AND current_session_id IS NULL
      AND heartbeat_session_id IS NULL AND drained_by_rollout IS NULL;
-- A pause or an abort finds the phones it marked.
CREATE INDEX phones_drained ON phones (drained_by_rollout)
    WHERE drained_by_rollout IS NOT NULL;
-- `rollout_phones_drained` (0016) stays: the mark is recomputed from it, and the watchdog
-- and the engine still ask which rollout updates a phone.
