//! The book of game version rollouts (migration 0016): a rollout, its target phones and the
//! step each has reached. Written by the operator API (create, pause, resume, abort) and the
//! rollout engine of the leader replica; read by the watchdog (`book::unhealthy_phones`
//! skips phones being updated). Every write that drains a phone or returns it marks its
//! `phones` row (`drained_by_rollout`, migration 0018), which the free-phone pick
//! (`book::free_phone_sql!`) reads; every state change writes its `fleet.rollout` webhook
//! into the outbox, in the same transaction.

use serde::Serialize;
use utoipa::ToSchema;

use super::StoreError;
use super::sql::{Sql, args};
use crate::domain::{
    AppId, PAUSED_BY_CPHUB, PhoneId, PhoneStep, RolloutPlan, RolloutState, RolloutTransition, UtcTime,
};

/// A rollout to record, its target already resolved to phones.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub app_id: AppId,
    pub app_version_ids: Vec<String>,
    /// The target as asked (JSON), kept to show it.
    pub target: serde_json::Value,
    pub plan: RolloutPlan,
    pub phones: Vec<PhoneId>,
    pub now: UtcTime,
}

/// A rollout as the book holds it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Rollout {
    pub id: i64,
    pub app_id: AppId,
    pub app_version_ids: Vec<String>,
    #[schema(value_type = Object)]
    pub target: serde_json::Value,
    pub canary: i64,
    pub batch_size: i64,
    pub max_failures: i64,
    pub drain_deadline_secs: i64,
    pub force: bool,
    pub state: RolloutState,
    /// The newest batch taken (0: none yet; 1 is the canary when there is one).
    pub batch: i64,
    pub paused_by: Option<String>,
    pub pause_reason: Option<String>,
    /// State changes so far; numbers the `fleet.rollout` webhooks.
    #[serde(skip)]
    pub transitions: i64,
    pub created_at: UtcTime,
    pub updated_at: UtcTime,
}

impl Rollout {
    pub fn plan(&self) -> RolloutPlan {
        let n = |v: i64| u32::try_from(v).unwrap_or(u32::MAX);
        RolloutPlan::new(
            n(self.canary),
            n(self.batch_size).max(1),
            n(self.max_failures),
            n(self.drain_deadline_secs).clamp(1, 86_400),
            self.force,
        )
        .expect("clamped into range")
    }
}

#[derive(sqlx::FromRow)]
struct RolloutRow {
    id: i64,
    app_id: String,
    app_version_ids: String,
    target: String,
    canary: i64,
    batch_size: i64,
    max_failures: i64,
    drain_deadline_secs: i64,
    force: bool,
    state: String,
    batch: i64,
    paused_by: Option<String>,
    pause_reason: Option<String>,
    transitions: i64,
    created_at: UtcTime,
    updated_at: UtcTime,
}

impl TryFrom<RolloutRow> for Rollout {
    type Error = StoreError;

    fn try_from(row: RolloutRow) -> Result<Self, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("rollout {}: {e}", row.id));
        Ok(Rollout {
            id: row.id,
            app_id: AppId::try_from(row.app_id.clone()).map_err(|e| corrupt(e.to_string()))?,
            app_version_ids: serde_json::from_str(&row.app_version_ids)
                .map_err(|e| corrupt(e.to_string()))?,
            target: serde_json::from_str(&row.target).map_err(|e| corrupt(e.to_string()))?,
            canary: row.canary,
            batch_size: row.batch_size,
            max_failures: row.max_failures,
            drain_deadline_secs: row.drain_deadline_secs,
            force: row.force,
            state: RolloutState::try_from(row.state).map_err(corrupt)?,
            batch: row.batch,
            paused_by: row.paused_by,
            pause_reason: row.pause_reason,
            transitions: row.transitions,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// One target phone of a rollout, with what the engine must know of the phone itself.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct RolloutPhone {
    #[serde(skip)]
    pub rollout_id: i64,
    #[sqlx(try_from = "String")]
    pub phone_id: PhoneId,
    #[sqlx(try_from = "String")]
    pub state: PhoneStep,
    pub batch: Option<i64>,
    /// Updates sent (or maybe sent: the count goes up before the call).
    pub attempts: i64,
    /// Times skipped for not serving at the drain deadline (migration 0037).
    pub not_serving_skips: i64,
    pub request_id: Option<String>,
    pub job_id: Option<String>,
    pub error: Option<String>,
    pub drained_at: Option<UtcTime>,
    pub submitted_at: Option<UtcTime>,
    pub job_ended_at: Option<UtcTime>,
    pub finished_at: Option<UtcTime>,
    pub updated_at: UtcTime,
    /// The phone's server (chapter 4.3.1), as phone sync last saw it.
    pub server_id: Option<String>,
    /// The phone's last heartbeat as cphub's clock received it.
    pub last_seen_at: Option<UtcTime>,
    /// The phone's status (chapter 4.3.1) as phone sync last saw it; None before the first.
    #[serde(skip)]
    pub cph_status: Option<i32>,
    /// In a session, or held for one: a drained phone waits for it to end.
    pub in_session: bool,
    /// The watchdog is recovering it (or gave up on it): the rollout leaves it alone.
    pub recovering: bool,
    /// The control plane no longer lists it (migration 0033): it cannot be updated.
    #[serde(skip)]
    pub unlisted: bool,
}

/// A phone moving from one step to the next; only a phone still at `from` moves, so two
/// writers can never both act on it.
#[derive(Debug, Clone)]
pub struct StepChange<'a> {
    pub rollout_id: i64,
    pub phone_id: &'a PhoneId,
    pub from: PhoneStep,
    pub to: PhoneStep,
    /// Adds one to `attempts`: set when an update is about to be sent.
    pub attempt: bool,
    /// With `attempt`: moves only while fewer than this many recovery and update jobs run
    /// (`watchdog.max_in_flight`), counted under the lock a recovery takes too.
    pub in_flight_cap: Option<usize>,
    /// Adds one to `not_serving_skips`: set when the phone is skipped (or given up) for
    /// not serving at the drain deadline.
    pub not_serving: bool,
    /// Moves only a phone in no session and held for none, read under its row's lock: an
    /// update is never sent to a phone a mint has just given out (see [`phone_is_free`]).
    pub only_if_free: bool,
    pub request_id: Option<&'a str>,
    pub job_id: Option<&'a str>,
    /// Replaces the phone's error (None clears it).
    pub error: Option<&'a str>,
    pub now: UtcTime,
}

/// A rollout's state set by a person or by the engine.
#[derive(Debug, Clone)]
pub struct StateChange<'a> {
    pub id: i64,
    /// Only a rollout in one of these states changes.
    pub from: &'a [RolloutState],
    pub to: RolloutState,
    /// Who paused it (kept with a pause only).
    pub by: Option<&'a str>,
    pub why: Option<&'a str>,
    pub now: UtcTime,
}

macro_rules! rollout_columns {
    () => {
        "id, app_id, app_version_ids, target, canary, batch_size, max_failures, \
         drain_deadline_secs, force, state, batch, paused_by, pause_reason, transitions, \
         created_at, updated_at"
    };
}

/// The phones of one rollout with the phone's own facts: in a session (any of the three
/// ways the book knows one), being recovered (marked, or a recovery still pending).
macro_rules! rollout_phone_select {
    () => {
        "SELECT r.rollout_id, r.phone_id, r.state, r.batch, r.attempts, r.not_serving_skips, \
           r.request_id, r.job_id, r.error, r.drained_at, r.submitted_at, r.job_ended_at, \
           r.finished_at, \
           r.updated_at, p.server_id, p.last_seen_at, p.cph_status, \
           (p.allocated_session_id IS NOT NULL OR p.current_session_id IS NOT NULL \
             OR p.heartbeat_session_id IS NOT NULL) AS in_session, \
           (p.recovery_state IS NOT NULL OR EXISTS (SELECT 1 FROM recoveries x \
             WHERE x.phone_id = r.phone_id AND x.outcome = 'pending')) AS recovering, \
           (p.unlisted_at IS NOT NULL) AS unlisted \
         FROM rollout_phones r LEFT JOIN phones p ON p.phone_id = r.phone_id "
    };
}

/// Records the rollout and its phones (all pending); None while another rollout of the app
/// is running or paused (the `rollouts_one_active_per_app` index decides, atomically).
pub(super) async fn create(
    tx: &mut impl Sql,
    new: &NewRollout,
) -> Result<Option<Rollout>, StoreError> {
    let sql = concat!(
        "INSERT INTO rollouts (app_id, app_version_ids, target, canary, batch_size, \
           max_failures, drain_deadline_secs, force, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'running', $9, $9) \
         ON CONFLICT (app_id) WHERE state IN ('running', 'paused') DO NOTHING \
         RETURNING ",
        rollout_columns!()
    );
    let versions = serde_json::to_string(&new.app_version_ids).map_err(corrupt_json)?;
    let target = new.target.to_string();
    let plan = new.plan;
    let args = args![
        new.app_id.as_str(),
        versions.as_str(),
        target.as_str(),
        i64::from(plan.canary()),
        i64::from(plan.batch_size()),
        i64::from(plan.max_failures()),
        i64::from(plan.drain_deadline_secs()),
        plan.force(),
        new.now,
    ];
    let row: Option<RolloutRow> = tx.fetch_optional(sql, &args).await?;
    let Some(rollout) = row.map(Rollout::try_from).transpose()? else {
        return Ok(None);
    };
    let add = "INSERT INTO rollout_phones (rollout_id, phone_id, state, updated_at) \
               VALUES ($1, $2, 'pending', $3) ON CONFLICT DO NOTHING";
    for phone in &new.phones {
        tx.execute(add, &args![rollout.id, phone.as_str(), new.now])
            .await?;
    }
    record(tx, &rollout, RolloutTransition::Started).await?;
    Ok(Some(rollout))
}

fn corrupt_json(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Newest first.
pub(super) async fn list(db: &mut impl Sql, limit: i64) -> Result<Vec<Rollout>, StoreError> {
    let sql = concat!(
        "SELECT ",
        rollout_columns!(),
        " FROM rollouts ORDER BY id DESC LIMIT $1"
    );
    let rows: Vec<RolloutRow> = db.fetch_all(sql, &args![limit]).await?;
    rows.into_iter().map(Rollout::try_from).collect()
}

pub(super) async fn get(db: &mut impl Sql, id: i64) -> Result<Option<Rollout>, StoreError> {
    let sql = concat!(
        "SELECT ",
        rollout_columns!(),
        " FROM rollouts WHERE id = $1"
    );
    let row: Option<RolloutRow> = db.fetch_optional(sql, &args![id]).await?;
    row.map(Rollout::try_from).transpose()
}

/// What the engine drives: running rollouts, and any other with phones still drained
/// (a paused or aborted rollout's updates are followed to their end).
pub(super) async fn driven(db: &mut impl Sql) -> Result<Vec<Rollout>, StoreError> {
    let sql = concat!(
        "SELECT ",
        rollout_columns!(),
        " FROM rollouts WHERE state = 'running' OR EXISTS (SELECT 1 FROM rollout_phones p \
           WHERE p.rollout_id = rollouts.id \
             AND p.state IN ('draining', 'updating', 'verifying')) \
         ORDER BY id"
    );
    let rows: Vec<RolloutRow> = db.fetch_all(sql, &[]).await?;
    rows.into_iter().map(Rollout::try_from).collect()
}

/// One phone's steps in the rollouts that took it, newest rollout first.
pub(super) async fn of_phone(
    db: &mut impl Sql,
    phone: &PhoneId,
    limit: i64,
) -> Result<Vec<RolloutPhone>, StoreError> {
    let sql = concat!(
        rollout_phone_select!(),
        "WHERE r.phone_id = $1 ORDER BY r.rollout_id DESC LIMIT $2"
    );
    Ok(db.fetch_all(sql, &args![phone.as_str(), limit]).await?)
}

/// The rollout's phones in phone id order.
pub(super) async fn phones(db: &mut impl Sql, id: i64) -> Result<Vec<RolloutPhone>, StoreError> {
    let sql = concat!(
        rollout_phone_select!(),
        "WHERE r.rollout_id = $1 ORDER BY r.phone_id"
    );
    Ok(db.fetch_all(sql, &args![id]).await?)
}

/// Moves a rollout to `to` if it is in one of `from`. A pause or an abort returns the
/// phones still only draining to the pool (pending: a resume takes them again); phones
/// being updated are left to the engine to follow. A resume after cphub's own pause opens
/// a new batch, so the one that paused the rollout is not counted against it again; after
/// an operator's, the batch under way is judged as if nothing had happened (its failures,
/// some perhaps ended during the pause, still count). The change's `fleet.rollout` is
/// written with it.
pub(super) async fn set_state(
    tx: &mut impl Sql,
    change: &StateChange<'_>,
) -> Result<Option<Rollout>, StoreError> {
    // Up to three states, the first repeated into the unused places.
    let from = |i: usize| {
        change
            .from
            .get(i)
            .or(change.from.first())
            .map(|s| s.as_str())
    };
    let paused = change.to == RolloutState::Paused;
    let resumed = i64::from(change.to == RolloutState::Running);
    let sql = concat!(
        "UPDATE rollouts SET state = $2, updated_at = $3, \
           batch = batch + CASE WHEN $7 = 1 AND paused_by = $11 THEN 1 ELSE 0 END, \
           transitions = transitions + 1, \
           paused_by = CASE WHEN $4 THEN $5 ELSE paused_by END, \
           pause_reason = CASE WHEN $4 THEN $6 ELSE pause_reason END \
         WHERE id = $1 AND state IN ($8, $9, $10) RETURNING ",
        rollout_columns!()
    );
    let args = args![
        change.id,
        change.to.as_str(),
        change.now,
        paused,
        change.by,
        change.why,
        resumed,
        from(0),
        from(1),
        from(2),
        PAUSED_BY_CPHUB,
    ];
    let row: Option<RolloutRow> = tx.fetch_optional(sql, &args).await?;
    let Some(rollout) = row.map(Rollout::try_from).transpose()? else {
        return Ok(None);
    };
    if matches!(change.to, RolloutState::Paused | RolloutState::Aborted) {
        undrain(tx, change.id, change.now).await?;
    }
    if change.to == RolloutState::Running {
        // A resume is a person saying the control plane is back: phones refused their
        // send before are taken again at once, without their rest.
        let rest_over = "UPDATE rollout_phones SET error = NULL \
                         WHERE rollout_id = $1 AND state = 'pending' AND error IS NOT NULL";
        tx.execute(rest_over, &args![change.id]).await?;
    }
    record(tx, &rollout, RolloutTransition::entering(change.to)).await?;
    Ok(Some(rollout))
}

/// The rollout's draining phones back to the pool (pending: a resume takes them again).
async fn undrain(tx: &mut impl Sql, id: i64, now: UtcTime) -> Result<u64, StoreError> {
    let sql = "UPDATE rollout_phones SET state = 'pending', updated_at = $2 \
               WHERE rollout_id = $1 AND state = 'draining' RETURNING phone_id";
    let returned: Vec<(String,)> = tx.fetch_all(sql, &args![id, now]).await?;
    let count = returned.len() as u64;
    mark_drained(tx, returned.into_iter().map(|(p,)| p).collect()).await?;
    Ok(count)
}

/// As a pause or abort does, for a rollout no longer running (read under its row's lock, as
/// [`take_batch`] reads it): the draining phones a send put back after the change landed.
pub(super) async fn return_drained<D: Sql>(
    tx: &mut D,
    id: i64,
    now: UtcTime,
) -> Result<u64, StoreError> {
    match locked_running(tx, id).await? {
        Some(false) => undrain(tx, id, now).await,
        _ => Ok(0),
    }
}

/// Whether the rollout is running, read under its row's lock on PostgreSQL (rollouts, then
/// rollout_phones, then phones: the order every rollout write takes); None when there is no
/// such rollout.
async fn locked_running<D: Sql>(tx: &mut D, id: i64) -> Result<Option<bool>, StoreError> {
    let sql = match D::LOCKS_ROWS {
        true => "SELECT state = 'running' FROM rollouts WHERE id = $1 FOR UPDATE",
        false => "SELECT state = 'running' FROM rollouts WHERE id = $1",
    };
    let row: Option<(bool,)> = tx.fetch_optional(sql, &args![id]).await?;
    Ok(row.map(|(running,)| running))
}

/// Drains up to `size` phones as batch `batch`: pending ones first (those refused their send
/// only once they rested in the pool since `rested`), then those skipped
/// before, each in phone id order. How many it took: none unless the rollout is running,
/// read under its row's lock. The engine decided to take a batch on a read of the rollout
/// made before its calls to the control plane; an abort or pause committed since (which
/// returned the drained phones to the pool) must not be followed by a batch drained for a
/// rollout that will never update it.
pub(super) async fn take_batch<D: Sql>(
    tx: &mut D,
    id: i64,
    batch: i64,
    size: i64,
    now: UtcTime,
    rested: UtcTime,
) -> Result<u64, StoreError> {
    if locked_running(tx, id).await? != Some(true) {
        return Ok(0);
    }
    // A pending phone with an error was refused its send without anything done (an
    // outage; the engine put it back in the pool): it rests there before a batch takes it
    // again, or every batch would drain it straight back and hold it out of allocation for
    // as long as the outage lasts.
    let sql = "UPDATE rollout_phones SET state = 'draining', batch = $2, drained_at = $3, \
                 updated_at = $3, error = NULL \
               WHERE rollout_id = $1 AND phone_id IN (SELECT phone_id FROM rollout_phones \
                 WHERE rollout_id = $1 AND state IN ('pending', 'skipped') \
                   AND NOT (state = 'pending' AND error IS NOT NULL AND updated_at > $5) \
                 ORDER BY state = 'skipped', phone_id LIMIT $4) RETURNING phone_id";
    let taken: Vec<(String,)> = tx.fetch_all(sql, &args![id, batch, now, size, rested]).await?;
    let count = taken.len() as u64;
    mark_drained(tx, taken.into_iter().map(|(p,)| p).collect()).await?;
    // Only a batch that took phones counts: the last look, finding none, is not a batch
    // (the rollout's `batch` and its `fleet.rollout` events say how many there were).
    if count > 0 {
        let mark = "UPDATE rollouts SET batch = $2, updated_at = $3 WHERE id = $1";
        tx.execute(mark, &args![id, batch, now]).await?;
    }
    Ok(count)
}

/// Marks each phone's row with the rollout that now holds it drained, or clears the mark
/// when none does (a phone may be in the rollouts of two apps: the lowest id is kept, and
/// the mark goes only when both let go). Rows are written in phone id order, the order the
/// heartbeat flush locks them in, so the two never deadlock on PostgreSQL.
async fn mark_drained(tx: &mut impl Sql, mut phones: Vec<String>) -> Result<(), StoreError> {
    phones.sort();
    let sql = "UPDATE phones SET drained_by_rollout = (SELECT min(d.rollout_id) \
                 FROM rollout_phones d WHERE d.phone_id = $1 \
                   AND d.state IN ('draining', 'updating', 'verifying')) \
               WHERE phone_id = $1";
    for phone in &phones {
        tx.execute(sql, &args![phone.as_str()]).await?;
    }
    Ok(())
}

/// Moves one phone on; false when it was no longer at `change.from`. On PostgreSQL the
/// phone's `rollout_phones` row is locked first, then its `phones` row: the order a pause,
/// an abort and a batch take (rollouts, then rollout_phones, then phones). Locking the
/// phone first, a step met a pause that held the row it wanted and waited for the phone,
/// and PostgreSQL failed one of them as a deadlock.
pub(super) async fn step<D: Sql>(tx: &mut D, c: &StepChange<'_>) -> Result<bool, StoreError> {
    if D::LOCKS_ROWS {
        let lock = "SELECT 1 FROM rollout_phones WHERE rollout_id = $1 AND phone_id = $2 \
                    FOR UPDATE";
        let args = args![c.rollout_id, c.phone_id.as_str()];
        let _: Option<(i32,)> = tx.fetch_optional(lock, &args).await?;
    }
    // About to be sent its update: not while a recovery (written meanwhile by an operator's
    // request or another replica) is pending on it, nor while the rollout of another of
    // its apps is updating it (both drain it, so it looks free to each).
    if c.attempt {
        let (recovering, updating) = super::book::phone_claims(tx, c.phone_id).await?;
        if recovering || updating.is_some_and(|other| other != c.rollout_id) {
            return Ok(false);
        }
        if let Some(cap) = c.in_flight_cap
            && !super::book::room_for_a_job(tx, cap).await?
        {
            return Ok(false);
        }
    }
    if c.only_if_free && !phone_is_free(tx, c.phone_id).await? {
        return Ok(false);
    }
    let finished = matches!(
        c.to,
        PhoneStep::Done | PhoneStep::Failed | PhoneStep::Skipped
    );
    let sql = "UPDATE rollout_phones SET state = $3, attempts = attempts + $4, \
                 not_serving_skips = not_serving_skips + $11, \
                 request_id = COALESCE($5, request_id), job_id = COALESCE($6, job_id), \
                 error = $7, updated_at = $8, \
                 submitted_at = CASE WHEN $3 = 'updating' AND $4 = 1 THEN $8 \
                   ELSE submitted_at END, \
                 job_ended_at = CASE WHEN $3 = 'verifying' THEN $8 ELSE job_ended_at END, \
                 finished_at = CASE WHEN $9 THEN $8 ELSE NULL END \
               WHERE rollout_id = $1 AND phone_id = $2 AND state = $10";
    let args = args![
        c.rollout_id,
        c.phone_id.as_str(),
        c.to.as_str(),
        i64::from(c.attempt),
        c.request_id,
        c.job_id,
        c.error,
        c.now,
        finished,
        c.from.as_str(),
        i64::from(c.not_serving),
    ];
    let moved = tx.execute(sql, &args).await? == 1;
    if moved && c.from.is_drained() != c.to.is_drained() {
        mark_drained(tx, vec![c.phone_id.as_str().to_owned()]).await?;
    }
    Ok(moved)
}

/// Whether the phone is in no session and held for none. The engine read so before, but a
/// mint that picked the phone just before it was drained may not have committed then: on
/// PostgreSQL the row lock waits for it (its UPDATE holds the row), so its session is seen
/// here; SQLite has one writer, so the read is current. Rows locked stay locked to the end
/// of the step's transaction. A phone cphub has no row of is taken as free.
async fn phone_is_free<D: Sql>(tx: &mut D, phone_id: &PhoneId) -> Result<bool, StoreError> {
    let sql = if D::LOCKS_ROWS {
        "SELECT allocated_session_id IS NULL AND current_session_id IS NULL \
           AND heartbeat_session_id IS NULL FROM phones WHERE phone_id = $1 FOR UPDATE"
    } else {
        "SELECT allocated_session_id IS NULL AND current_session_id IS NULL \
           AND heartbeat_session_id IS NULL FROM phones WHERE phone_id = $1"
    };
    let row: Option<(bool,)> = tx.fetch_optional(sql, &args![phone_id.as_str()]).await?;
    Ok(row.is_none_or(|(free,)| free))
}

/// Ends a running rollout whose phones are all done or failed, with its `fleet.rollout`;
/// whether it ended.
pub(super) async fn finish(tx: &mut impl Sql, id: i64, now: UtcTime) -> Result<bool, StoreError> {
    let sql = concat!(
        "UPDATE rollouts SET state = 'done', updated_at = $2, transitions = transitions + 1 \
         WHERE id = $1 AND state = 'running' AND NOT EXISTS (SELECT 1 FROM rollout_phones p \
           WHERE p.rollout_id = $1 AND p.state NOT IN ('done', 'failed')) RETURNING ",
        rollout_columns!()
    );
    let row: Option<RolloutRow> = tx.fetch_optional(sql, &args![id, now]).await?;
    let Some(rollout) = row.map(Rollout::try_from).transpose()? else {
        return Ok(false);
    };
    record(tx, &rollout, RolloutTransition::Done).await?;
    Ok(true)
}

/// Writes the `fleet.rollout` webhook of the transition that just brought `rollout` to its
/// state (docs/webhooks.md). The id is the rollout's and its transition's number, so a
/// change made again (a replay, a second replica) writes nothing new.
async fn record(
    tx: &mut impl Sql,
    rollout: &Rollout,
    transition: RolloutTransition,
) -> Result<(), StoreError> {
    let phones = phones_per_step(tx, rollout.id).await?;
    let data = payload(rollout, transition, phones).to_string();
    let id = format!(
        "evt_fleet.rollout_{}_{transition}_{}",
        rollout.id, rollout.transitions
    );
    let subject = format!("rollout_{}", rollout.id);
    let sql = "INSERT INTO webhook_events \
                 (event_id, type, subject, occurred_at, recorded_at, data) \
               VALUES ($1, 'fleet.rollout', $2, $3, $3, $4) ON CONFLICT (event_id) DO NOTHING";
    let args = args![
        id.as_str(),
        subject.as_str(),
        rollout.updated_at,
        data.as_str()
    ];
    tx.execute(sql, &args).await?;
    Ok(())
}

/// The rollout's phones per step as they now are, every step named (0 when none).
async fn phones_per_step(
    tx: &mut impl Sql,
    id: i64,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    let sql = "SELECT state, COUNT(*) FROM rollout_phones WHERE rollout_id = $1 GROUP BY state";
    let counted: Vec<(String, i64)> = tx.fetch_all(sql, &args![id]).await?;
    let count = |step: &PhoneStep| {
        let found = counted.iter().find(|(s, _)| s == step.as_str());
        found.map_or(0, |(_, n)| *n)
    };
    let steps = PhoneStep::ALL.iter();
    Ok(steps
        .map(|s| (s.as_str().to_owned(), count(s).into()))
        .collect())
}

/// The event's data, times as epoch milliseconds like every outbox row; who paused it and
/// why only on a pause (an older pause's reason would mislead on a resume or an abort).
fn payload(
    rollout: &Rollout,
    transition: RolloutTransition,
    phones: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Value {
    let paused = transition == RolloutTransition::Paused;
    let pause = |field: &Option<String>| field.clone().filter(|_| paused);
    serde_json::json!({
        "rollout_id": rollout.id, "transition": transition.as_str(),
        "state": rollout.state.as_str(), "app_id": rollout.app_id.as_str(),
        "app_version_ids": rollout.app_version_ids, "batch": rollout.batch,
        "paused_by": pause(&rollout.paused_by), "reason": pause(&rollout.pause_reason),
        "phones": phones, "changed_at": rollout.updated_at.epoch_millis(),
    })
}

/// Updates sent and not yet ended, over every rollout: the share of the in-flight budget
/// (`watchdog.max_in_flight`) the rollouts take.
pub(super) async fn jobs_in_flight(db: &mut impl Sql) -> Result<i64, StoreError> {
    let sql = "SELECT COUNT(*) FROM rollout_phones WHERE state = 'updating'";
    let row: Option<(i64,)> = db.fetch_optional(sql, &[]).await?;
    Ok(row.map_or(0, |(n,)| n))
}

/// The rollout updating or verifying the phone, if one is: a manual restart or reset of it
/// would cut its update short or undo it (see `Watchdog::manual`).
pub(super) async fn updating(
    db: &mut impl Sql,
    phone: &PhoneId,
) -> Result<Option<i64>, StoreError> {
    let sql = "SELECT rollout_id FROM rollout_phones \
               WHERE phone_id = $1 AND state IN ('updating', 'verifying') \
               ORDER BY rollout_id DESC LIMIT 1";
    let row: Option<(i64,)> = db.fetch_optional(sql, &args![phone.as_str()]).await?;
    Ok(row.map(|(id,)| id))
}

/// Phones per step of the rollouts still under way (`cphub_rollout_phones`).
pub(super) async fn phones_by_step(db: &mut impl Sql) -> Result<Vec<(String, i64)>, StoreError> {
    let sql = "SELECT p.state, COUNT(*) FROM rollout_phones p \
               JOIN rollouts r ON r.id = p.rollout_id \
               WHERE r.state IN ('running', 'paused') \
                 OR p.state IN ('draining', 'updating', 'verifying') \
               GROUP BY p.state";
    Ok(db.fetch_all(sql, &[]).await?)
}
