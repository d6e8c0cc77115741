-- Times are INTEGER epoch milliseconds, as in 0001.
-- The wait queue (POST /api/v1/queue): players waiting for a phone with their game when the
-- fleet is full. It lives in the database, not in a replica's memory, so every replica
-- serves the same queue in the same order and a replica's death loses no one's place.
--
-- An entry waits while session_id is NULL. Assignment (any replica) mints a session for
-- the head of its app's queue, which holds a phone the usual way, and records it here; the
-- first poll that sees it issues the ticket (only its hash is in `sessions`).
CREATE TABLE queue_entries (
    -- Arrival order: first come, first served within a priority. AUTOINCREMENT: a number
    -- is never reused, so a late entry can never sort before an older one.
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id    TEXT NOT NULL UNIQUE,
    app_id      TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    -- Higher is served first.
    priority    INTEGER NOT NULL,
    joined_at   INTEGER NOT NULL,
    -- Moved on by every poll; an entry past it is dropped and its place freed.
    expires_at  INTEGER NOT NULL,
    session_id  TEXT UNIQUE,
    phone_id    TEXT,
    assigned_at INTEGER,
    -- When a poll first handed out the session's ticket.
    issued_at   INTEGER
) STRICT;
-- The head of each app's queue, in serving order, without walking assigned entries.
CREATE INDEX queue_waiting ON queue_entries (app_id, priority DESC, seq)
    WHERE session_id IS NULL;
CREATE INDEX queue_expiry ON queue_entries (expires_at);
