-- A webhook claim walks an endpoint's pending deliveries in outbox order and stops at its
-- limit (`webhooks.concurrency`).
--
-- The claim takes the earliest pending deliveries of an endpoint that are due, not leased,
-- and not behind an earlier pending one of their subject, in `event_seq` order. Through
-- `webhook_deliveries_due` (endpoint, due time) it read every due delivery of the endpoint
-- and sorted them all to keep eight: with billing on and a backlog of 22,000 deliveries,
-- each claim cost the writer about 15 ms, and the backlog only grew (docs/benchmarks.md,
-- "Billing webhooks on"). This index holds the pending ones in the claim's order, so a claim
-- reads about as many as it takes. Nothing else read the old index.
DROP INDEX webhook_deliveries_due;
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (endpoint, event_seq)
    WHERE state = 'pending';
