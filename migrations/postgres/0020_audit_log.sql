-- The audit trail of operator calls (issue #20, docs/operations.md#the-audit-trail): one row
-- per state-changing call to the operator API (mints aside: they are players' traffic) and
-- per acting CLI command. Written after the call with its outcome; never updated; pruned
-- with the sessions by book.retention_days.
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         TIMESTAMPTZ NOT NULL,
    token_name TEXT NOT NULL,      -- api.tokens name, or cli:<user>
    request_id TEXT NOT NULL,      -- the x-request-id of the answer
    action     TEXT NOT NULL,      -- e.g. POST /phones/{phone_id}/restart
    target     TEXT NOT NULL,      -- the path values, '/'-joined; '' when none
    status     BIGINT NOT NULL,   -- the answer's HTTP status
    error_code TEXT,               -- CPHUB.… when refused or failed
    detail     TEXT NOT NULL       -- a small JSON object, without secrets
);

-- Retention deletes by time.
CREATE INDEX audit_log_at ON audit_log (at);
