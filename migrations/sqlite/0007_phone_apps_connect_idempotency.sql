-- Issue #16, parts 4, 5 and 7.
--
-- Which application is deployed on which phone, as the control plane lists it (chapter
-- 5.1.2, one app's phones). Phone sync replaces the whole table in one transaction. A mint
-- for an app walks the free phones (`phones_free`, migration 0003) and probes this primary
-- key, (app_id, phone_id), for each: index lookups only, stopping at the first free phone
-- with the app.
CREATE TABLE phone_apps (
    app_id          TEXT NOT NULL,
    phone_id        TEXT NOT NULL,
    app_version_id  TEXT,                 -- 5.1.2 Table 5-4; "" from the control plane is NULL
    version_code    TEXT,
    version_name    TEXT,
    synced_at       INTEGER NOT NULL,
    PRIMARY KEY (app_id, phone_id)
) STRICT;
-- The phone detail lists its apps.
CREATE INDEX phone_apps_by_phone ON phone_apps (phone_id);

-- Where a player's client connects (chapter 4.3.2 access_infos, only in the detail, not in
-- the 4.3.1 list): a JSON array of {type, public_ip, access_port, listen_port}, the expired
-- field names already read in. cph_update_time is the list's update_time when the detail
-- was read: sync reads the detail again only when it moves.
ALTER TABLE phones ADD COLUMN access_infos TEXT;
ALTER TABLE phones ADD COLUMN cph_update_time TEXT;

-- One row per Idempotency-Key of POST /api/v1/sessions, inserted in the mint's transaction
-- (the primary key makes a concurrent duplicate wait, then find it). It keeps the ticket and
-- where to connect as answered, so a retry gets the same answer even if phone sync changed
-- the phone's access since; the row is deleted once expires_at passes (the hold sweeper).
CREATE TABLE mint_keys (
    idempotency_key TEXT PRIMARY KEY,
    request_hash    TEXT NOT NULL,        -- SHA-256 of the parsed request: same key, other body = 422
    session_id      TEXT NOT NULL,
    ticket          TEXT NOT NULL,
    server_id       TEXT,                 -- the phone's, as the mint answered it
    access_infos    TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX mint_keys_expiry ON mint_keys (expires_at);
