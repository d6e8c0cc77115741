-- The outbox's event type is checked by a domain instead of a table CHECK.
--
-- The session trigger (0024) inserts one outbox row per session started or ended, each
-- insert a statement of its own, so each starts an executor. A table CHECK is read from
-- the catalog and prepared at every executor start: its stored expression is parsed
-- (`stringToNode`) and run through the expression planner for every row the trigger
-- inserts. PostgreSQL's profile of enter/quit events at 32 connections put that at 5 % of
-- the server's samples (docs/benchmarks.md, "The outbox's type check"). A domain's
-- constraints are parsed once per connection (the type cache keeps them), so the same check
-- costs each insert a comparison.
--
-- What is accepted is unchanged: the seven types of 0018. Clients still read `type` as
-- text (PostgreSQL describes a domain column by its base type), and binding text to it
-- needs no cast. Changing the column's type rewrites `webhook_events` under an exclusive
-- lock; the outbox holds only what retention has not pruned (0029).
CREATE DOMAIN webhook_event_type AS TEXT
    CHECK (VALUE IN ('session.started', 'session.ended', 'session.tick', 'phone.recovery',
                     'fleet.incident', 'queue.assigned', 'fleet.rollout'));

ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_type_check,
    ALTER COLUMN type TYPE webhook_event_type;
