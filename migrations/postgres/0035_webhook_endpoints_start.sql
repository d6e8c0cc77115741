-- Where each webhook endpoint's feed starts. An endpoint is written here the first time a
-- dispatcher runs with it, with the last outbox row recorded more than ten minutes before:
-- it is sent what comes after, not the history since cphub was installed (the outbox is
-- written whether or not an endpoint is configured, so the first billing endpoint added
-- to a book kept for months was sent every session of those months, and billed them
-- again). The ten minutes cover rows recorded just before a restart that no fan-out took
-- yet. Earlier events go to an endpoint on request: `cphub webhooks replay`.
CREATE TABLE webhook_endpoints (
    name      TEXT PRIMARY KEY,
    first_seq BIGINT NOT NULL
);
-- Endpoints that were sent anything before this migration keep their whole feed: rows
-- left unfanned by the restart of the upgrade are theirs, however long it took.
INSERT INTO webhook_endpoints (name, first_seq)
    SELECT DISTINCT endpoint, 0 FROM webhook_deliveries;
