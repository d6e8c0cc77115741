-- The session book: what the phones told cphub, kept so billing can trust it.
--
-- SQLite has no timestamp type: times are INTEGER milliseconds since the Unix epoch (UTC),
-- which sort, compare and subtract without parsing. Booleans are INTEGER 0/1.
-- Times are the phones' own clock (the `time` field of each callback) unless the column
-- says `received_at`/`last_seen_at`, which are cphub's clock at arrival.

-- One row per game session: minted by cphub for a player (state 'minted', then 'verified'
-- by the sign check), or created by the first event cphub hears about it (enter, or a quit
-- that overtook its enter; direct mode). Then changed only by applying further events.
CREATE TABLE sessions (
    session_id        TEXT PRIMARY KEY,
    phone_id          TEXT NOT NULL,
    app_id            TEXT NOT NULL,
    user_id           TEXT,
    issued            INTEGER NOT NULL DEFAULT 0,
    state             TEXT NOT NULL CHECK (state IN
                        ('minted', 'verified', 'expired', 'playing', 'ended', 'abandoned')),
    minted_at         INTEGER,
    verified_at       INTEGER,
    started_at        INTEGER,                -- NULL while only the quit has arrived
    ended_at          INTEGER,
    reported_run_time INTEGER,                -- as the phone reported it; unit unverified
    duration_seconds  INTEGER,                -- measured: ended_at - started_at; billing uses this
    run_time_mismatch INTEGER NOT NULL DEFAULT 0,
    end_reason        TEXT CHECK (end_reason IN ('quit', 'abandoned')),
    error_msg         TEXT,
    last_heartbeat_at INTEGER,
    -- Access secrets of minted sessions. The ticket is kept only as its SHA-256 (hex): a
    -- database leak does not reveal live tickets. The AES key must be handed out again at
    -- sign check, so it is kept (hex of the raw 32 bytes, whatever the configured encoding).
    ticket_hash       TEXT,
    aes_key           TEXT,
    auth_ts           INTEGER,                -- ticket expiry, epoch ms, exactly as issued
    hold_until        INTEGER,                -- phone held for this session until then
    sign_check_digest TEXT,                   -- SHA-256 of the accepted sign check, for retries
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_phone ON sessions (phone_id, created_at);
CREATE INDEX sessions_by_start ON sessions (started_at);
-- The active-sessions gauge counts playing sessions per app at every scrape.
CREATE INDEX sessions_playing ON sessions (app_id) WHERE state = 'playing';
-- The background release of lapsed holds only looks at sessions still waiting.
CREATE INDEX sessions_waiting ON sessions (hold_until) WHERE state IN ('minted', 'verified');

-- Every enter/quit delivery that changed something ('accepted') or contradicted what was
-- already accepted ('conflict'). Exact re-deliveries are not stored: they change nothing.
CREATE TABLE session_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    status      INTEGER NOT NULL CHECK (status IN (0, 1)),    -- 0 enter, 1 quit (chapter 6)
    phone_id    TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    event_time  INTEGER NOT NULL,
    run_time    INTEGER,
    error_msg   TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('accepted', 'conflict')),
    received_at INTEGER NOT NULL
) STRICT;
-- At most one accepted enter and one accepted quit per session. This index, not a
-- read-then-write check, is what makes a re-delivery a no-op.
CREATE UNIQUE INDEX session_events_once ON session_events (session_id, status)
    WHERE outcome = 'accepted';
CREATE INDEX session_events_by_session ON session_events (session_id, id);

-- One row per phone cphub has heard from, through callbacks or the control plane.
CREATE TABLE phones (
    phone_id                   TEXT PRIMARY KEY,
    phone_name                 TEXT,          -- from the control plane (phone sync)
    server_id                  TEXT,
    cph_status                 INTEGER,       -- chapter 4.3.1 status: 2 running, -7 abnormal, …
    cph_synced_at              INTEGER,       -- last time the control plane listed it
    last_heartbeat_at          INTEGER,
    last_seen_at               INTEGER,
    heartbeat_session_id       TEXT,          -- session named by the last heartbeat; NULL = idle
    heartbeat_app_id           TEXT,
    current_session_id         TEXT,          -- from enter/quit events
    current_app_id             TEXT,
    current_session_started_at INTEGER,       -- lets a late enter of an older session lose
    recovery_state             TEXT CHECK (recovery_state IN ('recovering', 'broken')),
    allocated_session_id       TEXT,          -- minted session the phone is held for
    allocated_until            INTEGER,       -- hold lapses then
    created_at                 INTEGER NOT NULL,
    updated_at                 INTEGER NOT NULL
) STRICT;

-- Every decision of the fleet watchdog and every manual restart/reset: what it saw, what it
-- did, and how the job ended. Budgets (cooldown, hourly cap, jobs in flight) are counted
-- here, so they hold across restarts of cphub and across replicas.
CREATE TABLE recoveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_id    TEXT NOT NULL,
    reason      TEXT NOT NULL,            -- stale, abnormal, restart_failed, reset_failed, manual
    action      TEXT NOT NULL CHECK (action IN ('restart', 'reset', 'mark_broken')),
    dry_run     INTEGER NOT NULL,
    request_id  TEXT,                     -- of the control plane's batch answer
    job_id      TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('pending', 'succeeded', 'failed', 'error', 'dry_run')),
    error       TEXT,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER
) STRICT;
CREATE INDEX recoveries_by_phone ON recoveries (phone_id, started_at);
CREATE INDEX recoveries_pending ON recoveries (outcome) WHERE outcome = 'pending';
