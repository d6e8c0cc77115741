-- Which endpoints the replicas run with, and what each wants. The fan-out marks an outbox
-- row done for every endpoint at once, so a replica fanning out without an endpoint another
-- replica has (a rolling deploy adding one) left that endpoint without the row for good.
-- Each dispatcher now writes its endpoints' event filters here (JSON, `[]` every type) and
-- when it last ran with them; every fan-out gives deliveries to the endpoints seen in the
-- last ten minutes as well as its own. NULL: written before this migration, filter unknown.
ALTER TABLE webhook_endpoints ADD COLUMN events TEXT;
ALTER TABLE webhook_endpoints ADD COLUMN seen_at TIMESTAMPTZ;
