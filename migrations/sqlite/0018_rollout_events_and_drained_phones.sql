-- Two things for rollouts (issue #19, docs/operations.md "Rolling out a game version").
--
-- 1. The `fleet.rollout` webhook (docs/webhooks.md): one outbox row per rollout state
--    transition, written by store/rollout.rs in the transaction of the change (not by a
--    trigger: its payload counts the rollout's phones per step *after* the statement that
--    moves them, which a trigger on `rollouts` fires before). `transitions` numbers a
--    rollout's transitions, so the event id `evt_fleet.rollout_<id>_<transition>_<n>` tells
--    a second pause from the first and is the same whichever replica writes it.
ALTER TABLE rollouts ADD COLUMN transitions INTEGER NOT NULL DEFAULT 0;

-- `webhook_events.type` lists the types in a CHECK, which SQLite cannot alter: the table is
-- rebuilt with its rows, `seq`s and AUTOINCREMENT high-water mark kept. It is not renamed
-- into place: the triggers of 0013 and 0015 name `webhook_events` in their bodies, and
-- renaming a table while they point at a missing one fails ("error in trigger ..."). The
-- rows go to a scratch copy and come back into a new table of the same name instead.
-- `webhook_deliveries.event_seq` references it; PRAGMA foreign_keys cannot change inside
-- the migration's transaction, so the check is deferred to the commit, by which time every
-- referenced `seq` is back.
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE webhook_events_0018 AS SELECT * FROM webhook_events;
CREATE TEMP TABLE webhook_events_0018_seq AS
    SELECT seq FROM sqlite_sequence WHERE name = 'webhook_events';
DROP TABLE webhook_events;
CREATE TABLE webhook_events (
    -- Commit order within one subject, which is the order an endpoint receives that
    -- subject's events in.
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL CHECK (type IN ('session.started', 'session.ended',
                    'session.tick', 'phone.recovery', 'fleet.incident', 'queue.assigned',
                    'fleet.rollout')),
    -- What the event is about, and the key its deliveries are ordered by: the session
    -- (session.*, queue.assigned), the phone (phone.recovery), the server or `account`
    -- (fleet.incident), `rollout_<id>` (fleet.rollout).
    subject     TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,          -- the fact's time (epoch ms), for replays
    recorded_at INTEGER NOT NULL,          -- the database's clock at the change
    data        TEXT NOT NULL,
    -- 0 until the dispatcher made its deliveries, one per endpoint that wants the type.
    fanned_out  INTEGER NOT NULL DEFAULT 0
) STRICT;
INSERT INTO webhook_events
    (seq, event_id, type, subject, occurred_at, recorded_at, data, fanned_out)
SELECT seq, event_id, type, subject, occurred_at, recorded_at, data, fanned_out
FROM temp.webhook_events_0018 ORDER BY seq;
-- A seq once given is never given again, even one whose row was deleted.
UPDATE sqlite_sequence SET seq = max(seq, (SELECT seq FROM temp.webhook_events_0018_seq))
WHERE name = 'webhook_events' AND EXISTS (SELECT 1 FROM temp.webhook_events_0018_seq);
INSERT INTO sqlite_sequence (name, seq)
SELECT 'webhook_events', seq FROM temp.webhook_events_0018_seq
WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'webhook_events');
DROP TABLE temp.webhook_events_0018;
DROP TABLE temp.webhook_events_0018_seq;
CREATE INDEX webhook_events_to_fan_out ON webhook_events (seq) WHERE fanned_out = 0;
CREATE INDEX webhook_events_by_time ON webhook_events (occurred_at);

-- 2. A drained phone is marked on its own row: `drained_by_rollout` is the rollout that
--    drains, updates or verifies it (the lowest, should two rollouts of different apps hold
--    it), NULL when none does. store/rollout.rs sets and clears it in the transaction that
--    moves the phone's step, so the free-phone pick reads one column of the row it locks
--    instead of probing `rollout_phones`, and a mint and a drain of the same phone are
--    ordered by that row (PostgreSQL's lock; SQLite's single writer).
ALTER TABLE phones ADD COLUMN drained_by_rollout INTEGER;
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
