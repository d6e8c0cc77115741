-- The wait queue (POST /api/v1/queue): players waiting for a phone with their game when the
-- fleet is full. It lives in the database, not in a replica's memory, so every replica
-- serves the same queue in the same order and a replica's death loses no one's place.
--
-- An entry waits while session_id is NULL. Assignment (any replica) mints a session for
-- the head of its app's queue, which holds a phone the usual way, and records it here; the
-- first poll that sees it issues the ticket (only its hash is in `sessions`).
CREATE TABLE queue_entries (
    -- Arrival order: first come, first served within a priority.
    seq         BIGSERIAL PRIMARY KEY,
    queue_id    TEXT NOT NULL UNIQUE,
    app_id      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    -- Higher is served first.
    priority    BIGINT NOT NULL,
    joined_at   TIMESTAMPTZ NOT NULL,
    -- Moved on by every poll; an entry past it is dropped and its place freed.
    expires_at  TIMESTAMPTZ NOT NULL,
    session_id  TEXT UNIQUE,
    phone_id    TEXT,
    assigned_at TIMESTAMPTZ,
    -- When a poll first handed out the session's ticket.
    issued_at   TIMESTAMPTZ
);
-- The head of each app's queue, in serving order, without walking assigned entries.
CREATE INDEX queue_waiting ON queue_entries (app_id, priority DESC, seq)
    WHERE session_id IS NULL;
CREATE INDEX queue_expiry ON queue_entries (expires_at);
