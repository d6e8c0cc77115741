-- Times are TIMESTAMPTZ, as in 0001.
-- Game version rollouts (issue #19 part 1, docs/operations.md "Rolling out a game version").
-- A rollout updates its target phones to application versions with the control plane's
-- UpdateAppVersionOfPhone (chapter 5.3.7), a batch at a time, without interrupting a
-- session: a phone is drained first (allocation and the wait queue skip it) and updated
-- only once its session ended. It lives here, not in a replica's memory, so a restart or a
-- change of leader resumes it where it stood.
CREATE TABLE rollouts (
    id                  BIGSERIAL PRIMARY KEY,
    app_id              TEXT NOT NULL,
    -- JSON array of the application version ids sent to 5.3.7, in order.
    app_version_ids     TEXT NOT NULL,
    -- The target as asked (JSON): every phone with the app, a server, a list, a percentage.
    -- Resolved into rollout_phones once, when the rollout is created.
    target              TEXT NOT NULL,
    -- The plan: a canary of this many phones first, then batches of batch_size.
    canary              BIGINT NOT NULL,
    batch_size          BIGINT NOT NULL,
    -- A batch with more failed phones than this pauses the rollout.
    max_failures        BIGINT NOT NULL,
    -- A drained phone whose session outlives this is skipped (retried in a later batch),
    -- unless force: then its session is cut short.
    drain_deadline_secs BIGINT NOT NULL,
    force               BOOLEAN NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('running', 'paused', 'aborted', 'done')),
    -- The number of the newest batch taken (0: none yet; 1 is the canary when there is one).
    batch               BIGINT NOT NULL DEFAULT 0,
    -- Who paused it last (an operator, or 'cphub' when a batch failed) and why.
    paused_by           TEXT,
    pause_reason        TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);
-- One rollout at a time per app: two would race to update the same phones.
CREATE UNIQUE INDEX rollouts_one_active_per_app ON rollouts (app_id)
    WHERE state IN ('running', 'paused');

-- Each target phone's way through its rollout: pending → draining → updating (the 5.3.7
-- job, followed by 4.4.1) → verifying (a fresh heartbeat and 5.3.6 listing the version) →
-- done; or failed; or skipped (its session outlived the drain deadline: taken again by a
-- later batch).
CREATE TABLE rollout_phones (
    rollout_id   BIGINT NOT NULL REFERENCES rollouts (id),
    phone_id     TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'draining', 'updating',
                     'verifying', 'done', 'failed', 'skipped')),
    -- The batch that last took the phone.
    batch        BIGINT,
    -- Written the moment the phone goes to updating, before the call: a phone updating
    -- with attempts > 0 was (maybe) sent its update, and is never sent it again.
    attempts     BIGINT NOT NULL DEFAULT 0,
    request_id   TEXT,
    job_id       TEXT,
    error        TEXT,
    drained_at   TIMESTAMPTZ,
    submitted_at TIMESTAMPTZ,
    job_ended_at TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (rollout_id, phone_id)
);
-- The drained phones: what the free-phone pick of a mint and of the wait queue skips.
CREATE INDEX rollout_phones_drained ON rollout_phones (phone_id)
    WHERE state IN ('draining', 'updating', 'verifying');
