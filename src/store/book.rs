//! The SQL of the session book that both backends share, as plain functions over [`Sql`]
//! (a write transaction or a pool of either driver; see `sql.rs`). The row-locking clause of
//! the mint's pick is the only difference (PostgreSQL locks rows; SQLite has one writer).
//! Enter/quit events are the exception: they are applied a batch at a time with statements
//! over whole lists (`json_each` on SQLite, `UNNEST` on PostgreSQL), which each backend
//! writes in its own file, around the logic of `event_batch`.

use super::codec::{EventRecord, IssuedAccessRow, Phone, PhoneHealth, Recovery, SessionRow};
use super::sql::{Sql, args};
use super::{
    Admission, Allocation, ControlPlanePhone, FinishedRecovery, MintRequest, NewRecovery,
    SessionFilter, StoreError, Verification,
};
use crate::access::Issued;
use crate::domain::{PhoneId, Session, SessionId, UtcTime};

/// How a heartbeat updates a phone that already has a row. `last_seen_at` is cphub's clock
/// and moves on any heartbeat: a phone whose own clock stepped back is still alive and must
/// not look stale to the watchdog. What the heartbeat says (its time, session, app) only
/// replaces older news, so a delayed heartbeat cannot undo a newer one.
macro_rules! heartbeat_upsert {
    () => {
        " ON CONFLICT (phone_id) DO UPDATE SET \
           last_seen_at = CASE WHEN phones.last_seen_at IS NULL \
               OR phones.last_seen_at < excluded.last_seen_at \
             THEN excluded.last_seen_at ELSE phones.last_seen_at END, \
           updated_at = excluded.updated_at, \
           last_heartbeat_at = CASE WHEN phones.last_heartbeat_at IS NULL \
               OR phones.last_heartbeat_at <= excluded.last_heartbeat_at \
             THEN excluded.last_heartbeat_at ELSE phones.last_heartbeat_at END, \
           heartbeat_session_id = CASE WHEN phones.last_heartbeat_at IS NULL \
               OR phones.last_heartbeat_at <= excluded.last_heartbeat_at \
             THEN excluded.heartbeat_session_id ELSE phones.heartbeat_session_id END, \
           heartbeat_app_id = CASE WHEN phones.last_heartbeat_at IS NULL \
               OR phones.last_heartbeat_at <= excluded.last_heartbeat_at \
             THEN excluded.heartbeat_app_id ELSE phones.heartbeat_app_id END"
    };
}
pub(crate) use heartbeat_upsert;

/// The columns of [`SessionRow`](crate::store::codec::SessionRow), in one place.
macro_rules! session_columns {
    () => {
        "session_id, phone_id, app_id, user_id, issued, state, minted_at, verified_at, \
         started_at, ended_at, reported_run_time, duration_seconds, run_time_mismatch, \
         end_reason, error_msg, last_heartbeat_at, created_at"
    };
}

/// A phone that may be given to a new session: in no session, held for none (the part
/// the `phones_free` index covers, so the pick never walks busy phones), heard from since
/// `$4`, running as far as the control plane knows (chapter 4.3.1: 2; every other status is
/// in transition, failed or out of service), and not being recovered or given up on.
macro_rules! free_phone_sql {
    () => {
        "allocated_session_id IS NULL AND current_session_id IS NULL \
           AND heartbeat_session_id IS NULL \
           AND last_seen_at >= $4 AND (cph_status IS NULL OR cph_status = 2) \
           AND recovery_state IS NULL"
    };
}

/// A phone's state as the operator sees it, from its row; `$1` is the freshness cut-off.
/// One expression, so the gauge and the phone views can never disagree. The control plane's
/// status (chapter 4.3.1) comes first: frozen (6), stopped (8), creation failed (-8) and
/// stopping failed (-9) are `out_of_service`, whatever else the row says; any other status
/// but running (2) — creating, resetting, restarting, stopping, or failed and awaiting the
/// watchdog — is `unavailable`. See the status table in docs/operations.md.
macro_rules! phone_state_sql {
    () => {
        "CASE \
           WHEN cph_status IN (6, 8, -8, -9) THEN 'out_of_service' \
           WHEN recovery_state IS NOT NULL THEN recovery_state \
           WHEN cph_status IS NOT NULL AND cph_status <> 2 THEN 'unavailable' \
           WHEN last_seen_at IS NULL OR last_seen_at < $1 THEN 'stale' \
           WHEN current_session_id IS NOT NULL OR heartbeat_session_id IS NOT NULL THEN 'occupied' \
           WHEN allocated_session_id IS NOT NULL THEN 'allocated' \
           ELSE 'idle' END"
    };
}

/// The columns of [`Phone`](crate::store::Phone); `$1` is the freshness cut-off.
macro_rules! phone_columns {
    () => {
        concat!(
            "phone_id, ",
            phone_state_sql!(),
            " AS state, phone_name, server_id, cph_status, cph_synced_at, last_heartbeat_at, \
             last_seen_at, heartbeat_session_id, heartbeat_app_id, current_session_id, \
             current_app_id, recovery_state, allocated_session_id, allocated_until, created_at, \
             updated_at"
        )
    };
}

/// The columns of [`Recovery`](crate::store::Recovery).
macro_rules! recovery_columns {
    () => {
        "id, phone_id, reason, action, dry_run, request_id, job_id, outcome, error, started_at, \
         ended_at, detail"
    };
}

pub(crate) use session_columns;

async fn save_session(db: &mut impl Sql, s: &Session, now: UtcTime) -> Result<(), StoreError> {
    let sql = "UPDATE sessions SET state = $2, started_at = $3, ended_at = $4, \
                 reported_run_time = $5, duration_seconds = $6, run_time_mismatch = $7, \
                 end_reason = $8, error_msg = $9, updated_at = $10 \
               WHERE session_id = $1";
    let args = args![
        s.session_id.as_str(),
        s.state.as_str(),
        s.started_at,
        s.ended_at,
        s.reported_run_time,
        s.duration_seconds,
        s.run_time_mismatch,
        s.end_reason.map(|r| r.as_str()),
        s.error_msg.as_deref(),
        now,
    ];
    db.execute(sql, &args).await?;
    Ok(())
}

pub(super) async fn session(
    db: &mut impl Sql,
    session_id: &SessionId,
) -> Result<Option<Session>, StoreError> {
    let sql = concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE session_id = $1"
    );
    let row: Option<SessionRow> = db.fetch_optional(sql, &args![session_id.as_str()]).await?;
    row.map(Session::try_from).transpose()
}

/// Newest first (created_at, then session_id), after the cursor `before`.
pub(super) async fn sessions(
    db: &mut impl Sql,
    f: &SessionFilter,
    limit: i64,
) -> Result<Vec<Session>, StoreError> {
    let sql = concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions \
         WHERE ($1 IS NULL OR app_id = $1) AND ($2 IS NULL OR phone_id = $2) \
           AND ($3 IS NULL OR user_id = $3) AND ($4 IS NULL OR state = $4) \
           AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at < $6) \
           AND ($7 IS NULL OR created_at < $7 OR (created_at = $7 AND session_id < $8)) \
         ORDER BY created_at DESC, session_id DESC LIMIT $9"
    );
    let (before_at, before_id) = match &f.before {
        Some((at, id)) => (Some(*at), Some(id.as_str())),
        None => (None, None),
    };
    let args = args![
        f.app_id.as_ref().map(|a| a.as_str()),
        f.phone_id.as_ref().map(|p| p.as_str()),
        f.user_id.as_ref().map(|u| u.as_str()),
        f.state.map(|s| s.as_str()),
        f.from,
        f.to,
        before_at,
        before_id,
        limit,
    ];
    let rows: Vec<SessionRow> = db.fetch_all(sql, &args).await?;
    rows.into_iter().map(Session::try_from).collect()
}

pub(super) async fn session_events(
    db: &mut impl Sql,
    session_id: &SessionId,
) -> Result<Vec<EventRecord>, StoreError> {
    let sql = "SELECT id, CASE status WHEN 0 THEN 'enter' WHEN 1 THEN 'quit' \
                 ELSE 'reconnect' END AS kind, phone_id, app_id, event_time AS time, run_time, \
                 error_msg, truncated, outcome, received_at \
               FROM session_events WHERE session_id = $1 ORDER BY id";
    Ok(db.fetch_all(sql, &args![session_id.as_str()]).await?)
}

pub(super) async fn phone(
    db: &mut impl Sql,
    phone_id: &PhoneId,
    fresh_since: UtcTime,
) -> Result<Option<Phone>, StoreError> {
    let sql = concat!(
        "SELECT ",
        phone_columns!(),
        " FROM phones WHERE phone_id = $2"
    );
    let args = args![fresh_since, phone_id.as_str()];
    Ok(db.fetch_optional(sql, &args).await?)
}

/// Phones in id order, after `after` (keyset paging).
pub(super) async fn phones(
    db: &mut impl Sql,
    fresh_since: UtcTime,
    after: Option<&PhoneId>,
    limit: i64,
) -> Result<Vec<Phone>, StoreError> {
    let sql = concat!(
        "SELECT ",
        phone_columns!(),
        " FROM phones WHERE phone_id > $2 ORDER BY phone_id LIMIT $3"
    );
    let after = after.map_or("", |p| p.as_str());
    Ok(db.fetch_all(sql, &args![fresh_since, after, limit]).await?)
}

/// The recovery candidates (chapter 4.3.1): phones heard from before but silent since
/// `fresh_since` that the control plane reports running (or has not reported yet: the
/// watchdog re-reads every phone before acting), and phones it reports abnormal (-7),
/// restart failed (-6) or reset failed (-5). A silent phone in any other status is in
/// transition (creating, resetting, restarting, stopping) or out of service (frozen,
/// stopped, creation or stopping failed): it is silent for a reason, and left alone.
pub(super) async fn unhealthy_phones(
    db: &mut impl Sql,
    fresh_since: UtcTime,
) -> Result<Vec<PhoneHealth>, StoreError> {
    let sql = "SELECT phone_id, last_seen_at, cph_status, recovery_state FROM phones \
               WHERE (last_seen_at IS NOT NULL AND last_seen_at < $1 \
                   AND (cph_status IS NULL OR cph_status = 2)) \
                 OR cph_status IN (-5, -6, -7) \
               ORDER BY phone_id";
    Ok(db.fetch_all(sql, &args![fresh_since]).await?)
}

/// Closes playing sessions whose phone went silent, at their last heartbeat.
pub(super) async fn abandon_sessions_on_stale_phones(
    tx: &mut impl Sql,
    fresh_since: UtcTime,
    now: UtcTime,
) -> Result<Vec<Session>, StoreError> {
    let sql = concat!(
        "SELECT ",
        session_columns!(),
        " FROM sessions WHERE state = 'playing' AND phone_id IN \
           (SELECT phone_id FROM phones WHERE last_seen_at < $1)"
    );
    let rows: Vec<SessionRow> = tx.fetch_all(sql, &args![fresh_since]).await?;
    let mut abandoned = Vec::with_capacity(rows.len());
    for row in rows {
        let session = Session::try_from(row)?.abandon();
        save_session(tx, &session, now).await?;
        let free = "UPDATE phones SET current_session_id = NULL, current_app_id = NULL, \
                      current_session_started_at = NULL, updated_at = $2 \
                    WHERE current_session_id = $1";
        tx.execute(free, &args![session.session_id.as_str(), now])
            .await?;
        abandoned.push(session);
    }
    Ok(abandoned)
}

pub(super) async fn recoveries(
    db: &mut impl Sql,
    phone_id: Option<&PhoneId>,
    since: Option<UtcTime>,
    limit: i64,
) -> Result<Vec<Recovery>, StoreError> {
    let sql = concat!(
        "SELECT ",
        recovery_columns!(),
        " FROM recoveries \
         WHERE ($1 IS NULL OR phone_id = $1) AND ($2 IS NULL OR started_at >= $2) \
         ORDER BY id DESC LIMIT $3"
    );
    let args = args![phone_id.map(|p| p.as_str()), since, limit];
    Ok(db.fetch_all(sql, &args).await?)
}

pub(super) async fn pending_recoveries(db: &mut impl Sql) -> Result<Vec<Recovery>, StoreError> {
    let sql = concat!(
        "SELECT ",
        recovery_columns!(),
        " FROM recoveries WHERE outcome = 'pending' ORDER BY id"
    );
    Ok(db.fetch_all(sql, &[]).await?)
}

/// Logs a decision and marks the phone `recovering` (or `broken`) in one transaction.
pub(super) async fn start_recovery(
    tx: &mut impl Sql,
    r: &NewRecovery,
) -> Result<Recovery, StoreError> {
    let sql = concat!(
        "INSERT INTO recoveries \
           (phone_id, reason, action, dry_run, outcome, error, started_at, ended_at, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
        recovery_columns!()
    );
    let args = args![
        r.phone_id.as_str(),
        r.reason.as_str(),
        r.action.as_str(),
        r.dry_run,
        r.outcome.as_str(),
        r.error.as_deref(),
        r.started_at,
        r.ended_at,
        r.detail.as_deref(),
    ];
    let recovery: Option<Recovery> = tx.fetch_optional(sql, &args).await?;
    let recovery = recovery.ok_or_else(|| StoreError::Corrupt("INSERT returned no row".into()))?;
    if let Some(state) = r.phone_state {
        let mark = "UPDATE phones SET recovery_state = $2, updated_at = $3 WHERE phone_id = $1";
        tx.execute(
            mark,
            &args![r.phone_id.as_str(), state.as_str(), r.started_at],
        )
        .await?;
    }
    Ok(recovery)
}

pub(super) async fn finish_recovery(
    tx: &mut impl Sql,
    f: &FinishedRecovery,
) -> Result<(), StoreError> {
    let sql = "UPDATE recoveries SET outcome = $2, request_id = COALESCE($3, request_id), \
                 job_id = COALESCE($4, job_id), error = $5, ended_at = $6 \
               WHERE id = $1 AND outcome = 'pending'";
    let args = args![
        f.id,
        f.outcome.as_str(),
        f.request_id.as_deref(),
        f.job_id.as_deref(),
        f.error.as_deref(),
        f.ended_at,
    ];
    tx.execute(sql, &args).await?;
    Ok(())
}

/// What the control plane reported (or was just told) about one phone, written at once
/// rather than at the next phone sync: a stop through cphub, a status re-read before acting.
pub(super) async fn record_cph_status(
    db: &mut impl Sql,
    phone_id: &PhoneId,
    status: i32,
    now: UtcTime,
) -> Result<u64, StoreError> {
    let sql = "UPDATE phones SET cph_status = $2, cph_synced_at = $3, updated_at = $3 \
               WHERE phone_id = $1";
    Ok(db
        .execute(sql, &args![phone_id.as_str(), status, now])
        .await?)
}

/// Job accepted but not finished, or its answer lost (no job id yet): remember the ids,
/// keep the outcome pending.
pub(super) async fn note_recovery_job(
    db: &mut impl Sql,
    id: i64,
    request_id: Option<&str>,
    job_id: Option<&str>,
) -> Result<(), StoreError> {
    let sql = "UPDATE recoveries SET request_id = COALESCE($2, request_id), job_id = $3 \
               WHERE id = $1";
    db.execute(sql, &args![id, request_id, job_id]).await?;
    Ok(())
}

/// Phones heard from again while running are no longer recovering or broken.
pub(super) async fn clear_recovered(
    tx: &mut impl Sql,
    fresh_since: UtcTime,
) -> Result<u64, StoreError> {
    let sql = "UPDATE phones SET recovery_state = NULL WHERE recovery_state IS NOT NULL \
                 AND last_seen_at >= $1 AND (cph_status IS NULL OR cph_status = 2) \
                 AND NOT EXISTS (SELECT 1 FROM recoveries r WHERE r.phone_id = phones.phone_id \
                   AND r.outcome = 'pending')";
    Ok(tx.execute(sql, &args![fresh_since]).await?)
}

/// The pick of a mint: hold one free phone (the pinned one, or any) for the new session.
/// Two statements rather than `$5 IS NULL OR phone_id = $5`: that form hides the key from
/// the planner, so even a pinned mint scanned every phone. PostgreSQL skips rows another
/// mint has locked, so concurrent mints never wait for, or get, the same phone.
macro_rules! pick_phone_sql {
    (pinned, $lock:literal) => {
        concat!(
            "UPDATE phones SET allocated_session_id = $1, allocated_until = $2, updated_at = $3 \
             WHERE phone_id = (SELECT phone_id FROM phones WHERE phone_id = $5 AND ",
            free_phone_sql!(),
            $lock,
            ") RETURNING phone_id"
        )
    };
    (any, $lock:literal) => {
        concat!(
            "UPDATE phones SET allocated_session_id = $1, allocated_until = $2, updated_at = $3 \
             WHERE phone_id = (SELECT phone_id FROM phones WHERE ",
            free_phone_sql!(),
            " LIMIT 1",
            $lock,
            ") RETURNING phone_id"
        )
    };
}

fn pick_phone_sql<D: Sql>(pinned: bool) -> &'static str {
    match (pinned, D::LOCKS_ROWS) {
        (true, true) => pick_phone_sql!(pinned, " FOR UPDATE SKIP LOCKED"),
        (true, false) => pick_phone_sql!(pinned, ""),
        (false, true) => pick_phone_sql!(any, " FOR UPDATE SKIP LOCKED"),
        (false, false) => pick_phone_sql!(any, ""),
    }
}

pub(super) async fn mint_session<D: Sql>(
    tx: &mut D,
    req: &MintRequest,
) -> Result<Allocation, StoreError> {
    release_lapsed_holds(tx, req.now).await?;
    let session_id = req.access.session_id.as_str();
    let pinned = req.pinned_phone.as_ref().map(|p| p.as_str());
    let sql = pick_phone_sql::<D>(pinned.is_some());
    let args = args![session_id, req.hold_until, req.now, req.fresh_since, pinned];
    // The any-phone statement has no `$5`.
    let args = if pinned.is_some() {
        &args[..]
    } else {
        &args[..4]
    };
    let picked: Option<(String,)> = tx.fetch_optional(sql, args).await?;
    let Some((phone_id,)) = picked else {
        return refusal(tx, req.pinned_phone.as_ref()).await;
    };
    let insert = "INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state, \
                    minted_at, ticket_hash, aes_key, auth_ts, hold_until, created_at, updated_at) \
                  VALUES ($1, $2, $3, $4, TRUE, 'minted', $5, $6, $7, $8, $9, $5, $5)";
    let ticket_hash = req.access.ticket.hash_hex();
    let aes_key = req.access.aes_key.to_hex();
    let args = args![
        session_id,
        phone_id.as_str(),
        req.app_id.as_str(),
        req.user_id.as_str(),
        req.now,
        ticket_hash.as_str(),
        aes_key.as_str(),
        req.auth_ts,
        req.hold_until,
    ];
    tx.execute(insert, &args).await?;
    let phone_id = PhoneId::parse("phone_id", phone_id)
        .map_err(|e| StoreError::Corrupt(format!("allocated phone: {e}")))?;
    Ok(Allocation::Allocated { phone_id })
}

async fn refusal(tx: &mut impl Sql, pinned: Option<&PhoneId>) -> Result<Allocation, StoreError> {
    let Some(phone_id) = pinned else {
        return Ok(Allocation::NoFreePhone);
    };
    let sql = "SELECT 1 FROM phones WHERE phone_id = $1";
    let known: Option<(i32,)> = tx.fetch_optional(sql, &args![phone_id.as_str()]).await?;
    Ok(match known {
        Some(_) => Allocation::PhoneBusy,
        None => Allocation::UnknownPhone,
    })
}

pub(super) async fn active_sessions_by_app(
    db: &mut impl Sql,
) -> Result<Vec<(String, i64)>, StoreError> {
    let sql = "SELECT app_id, COUNT(*) FROM sessions WHERE state = 'playing' GROUP BY app_id";
    Ok(db.fetch_all(sql, &[]).await?)
}

pub(super) async fn phones_by_state(
    db: &mut impl Sql,
    fresh_since: UtcTime,
) -> Result<Vec<(String, i64)>, StoreError> {
    let sql = concat!(
        "SELECT ",
        phone_state_sql!(),
        " AS state, COUNT(*) FROM phones GROUP BY 1"
    );
    Ok(db.fetch_all(sql, &args![fresh_since]).await?)
}

/// Records what the control plane says about each phone (name, server, status).
pub(super) async fn sync_phones(
    tx: &mut impl Sql,
    phones: &[ControlPlanePhone],
    now: UtcTime,
) -> Result<(), StoreError> {
    let sql = "INSERT INTO phones (phone_id, phone_name, server_id, cph_status, cph_synced_at, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5, $5) \
               ON CONFLICT (phone_id) DO UPDATE SET phone_name = excluded.phone_name, \
                 server_id = excluded.server_id, cph_status = excluded.cph_status, \
                 cph_synced_at = excluded.cph_synced_at, updated_at = excluded.updated_at";
    for phone in phones {
        let args = args![
            phone.phone_id.as_str(),
            phone.phone_name.as_str(),
            phone.server_id.as_str(),
            phone.status,
            now,
        ];
        tx.execute(sql, &args).await?;
    }
    Ok(())
}

pub(super) async fn release_lapsed_holds(
    tx: &mut impl Sql,
    now: UtcTime,
) -> Result<u64, StoreError> {
    let expire = "UPDATE sessions SET state = 'expired', updated_at = $1 \
                  WHERE state IN ('minted', 'verified') AND hold_until < $1";
    let expired = tx.execute(expire, &args![now]).await?;
    let release = "UPDATE phones SET allocated_session_id = NULL, allocated_until = NULL, \
                     updated_at = $1 WHERE allocated_until < $1";
    tx.execute(release, &args![now]).await?;
    Ok(expired)
}

pub(super) async fn issued_access(
    db: &mut impl Sql,
    session_id: &SessionId,
) -> Result<Option<Issued>, StoreError> {
    let sql = "SELECT session_id, state, ticket_hash, aes_key, auth_ts, verified_at, \
                 sign_check_digest \
               FROM sessions WHERE session_id = $1 AND issued AND ticket_hash IS NOT NULL";
    let row: Option<IssuedAccessRow> = db.fetch_optional(sql, &args![session_id.as_str()]).await?;
    row.map(Issued::try_from).transpose()
}

/// Records each sign check in order; false where its session was no longer in the state it
/// was checked in (the ticket consumed already, the session ended).
pub(super) async fn mark_verified(
    tx: &mut impl Sql,
    verifications: &[Verification],
) -> Result<Vec<bool>, StoreError> {
    let mut recorded = Vec::with_capacity(verifications.len());
    for v in verifications {
        recorded.push(match v.admission {
            Admission::FirstUse { hold_until } => consume_ticket(tx, v, hold_until).await?,
            Admission::Reconnect => log_reconnect(tx, v).await?,
        });
    }
    Ok(recorded)
}

async fn consume_ticket(
    tx: &mut impl Sql,
    v: &Verification,
    hold_until: UtcTime,
) -> Result<bool, StoreError> {
    let session_id = v.session_id.as_str();
    let consume = "UPDATE sessions SET state = 'verified', verified_at = $2, \
                     sign_check_digest = $3, hold_until = $4, updated_at = $2 \
                   WHERE session_id = $1 AND state = 'minted'";
    let args = args![session_id, v.now, v.digest.as_str(), hold_until];
    let consumed = tx.execute(consume, &args).await? == 1;
    if consumed {
        // The phone minting held is the session's; a key lookup, not a scan.
        let extend = "UPDATE phones SET allocated_until = $2 WHERE allocated_session_id = $1 \
                        AND phone_id = (SELECT phone_id FROM sessions WHERE session_id = $1)";
        tx.execute(extend, &args![session_id, hold_until]).await?;
    }
    Ok(consumed)
}

/// Status 2 and outcome `admitted` (migration 0006): a sign check, not a chapter 6 event.
/// Inserted only while the session is live, so a quit committed since the sign check read
/// it wins.
async fn log_reconnect(tx: &mut impl Sql, v: &Verification) -> Result<bool, StoreError> {
    let log = "INSERT INTO session_events (session_id, status, phone_id, app_id, event_time, \
                 outcome, received_at) \
               SELECT session_id, 2, phone_id, app_id, $2, 'admitted', $2 FROM sessions \
               WHERE session_id = $1 AND state IN ('verified', 'playing')";
    Ok(tx
        .execute(log, &args![v.session_id.as_str(), v.now])
        .await?
        == 1)
}
