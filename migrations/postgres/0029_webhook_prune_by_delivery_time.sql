-- The retention of webhook deliveries reads only the delivered rows it deletes.
--
-- The pruning (`webhooks.retention_days`) deletes deliveries delivered before a time, with
-- their attempts. `webhook_deliveries_by_state` leads with the endpoint, which the pruning
-- does not name, so both of its deletes read every delivery ever kept, holding SQLite's
-- write lock meanwhile: at 250,000 phones with billing on, a pass stalled the callbacks for
-- tens of milliseconds (docs/benchmarks.md, "Billing webhooks on"). This index holds the
-- delivered rows by delivery time. Nothing else used the old index: the listing's filters
-- are optional, and the claim and the backlog read the pending rows (migration 0028).
DROP INDEX webhook_deliveries_by_state;
CREATE INDEX webhook_deliveries_delivered ON webhook_deliveries (updated_at)
    WHERE state = 'delivered';
