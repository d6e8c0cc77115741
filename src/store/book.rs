//! The SQL of the session book that both backends share, as plain functions over [`Sql`]
//! (a write transaction or a pool of either driver; see `sql.rs`). The row-locking clause of
//! the mint's pick (PostgreSQL locks rows; SQLite has one writer) and the one statement that
//! consumes a batch of tickets (data-modifying CTEs, or statements run as one query) are the
//! only differences.
//! Enter/quit events are the exception: they are applied a batch at a time with statements
//! over whole lists (`json_each` on SQLite, `UNNEST` on PostgreSQL), which each backend
//! writes in its own file, around the logic of `event_batch`.

use std::collections::HashSet;
use std::time::Duration;

use super::codec::{
    EventRecord, IssuedAccessRow, Phone, PhoneAppRow, PhoneHealth, PickedPhone, Recovery,
    SessionRow, StoredMint, SyncedProperty, access_infos_json, connect,
};
use super::sql::{Sql, args, json_list};
use super::{
    Admission, Allocation, ControlPlanePhone, FinishedRecovery, MintAnswer, MintKey, MintRequest,
    NewRecovery, PhoneApp, SessionFilter, StoreError, Verification,
};
use crate::access::{AesKey, Issued, MintedAccess, Ticket};
use crate::domain::{AppId, Connect, Outcome, PhoneId, Session, SessionId, UtcTime};

/// How a heartbeat updates a phone that already has a row. `last_seen_at` is cphub's clock
/// and moves on any heartbeat: a phone whose own clock stepped back is still alive and must
/// not look stale to the watchdog. What the heartbeat says (its time, session, app) only
/// replaces older news, so a delayed heartbeat cannot undo a newer one. A heartbeat naming
/// the session a quit ended on the phone (`heartbeat_ended_session_id`, migration 0023) was
/// sent before the quit: the game has exited, and a phone's heartbeat then names no session
/// (chapter 6.4), so it leaves the phone in none.
macro_rules! heartbeat_upsert {
    () => {
        concat!(
            " ON CONFLICT (phone_id) DO UPDATE SET \
               last_seen_at = CASE WHEN phones.last_seen_at IS NULL \
                   OR phones.last_seen_at < excluded.last_seen_at \
                 THEN excluded.last_seen_at ELSE phones.last_seen_at END, \
               updated_at = excluded.updated_at, \
               last_heartbeat_at = CASE WHEN ", $crate::store::book::newer_heartbeat!(),
            " THEN excluded.last_heartbeat_at ELSE phones.last_heartbeat_at END, \
               heartbeat_session_id = CASE WHEN NOT ", $crate::store::book::newer_heartbeat!(),
            " THEN phones.heartbeat_session_id WHEN ", $crate::store::book::names_ended_session!(),
            " THEN NULL ELSE excluded.heartbeat_session_id END, \
               heartbeat_app_id = CASE WHEN NOT ", $crate::store::book::newer_heartbeat!(),
            " THEN phones.heartbeat_app_id WHEN ", $crate::store::book::names_ended_session!(),
            " THEN NULL ELSE excluded.heartbeat_app_id END"
        )
    };
}

/// Whether the incoming heartbeat is at least as new, by the phone's clock, as the stored one.
macro_rules! newer_heartbeat {
    () => {
        "(phones.last_heartbeat_at IS NULL OR phones.last_heartbeat_at <= excluded.last_heartbeat_at)"
    };
}

/// Whether the incoming heartbeat names the session a quit already ended on the phone.
macro_rules! names_ended_session {
    () => {
        "excluded.heartbeat_session_id = phones.heartbeat_ended_session_id"
    };
}
pub(crate) use {names_ended_session, newer_heartbeat};
pub(crate) use heartbeat_upsert;

/// The columns of [`SessionRow`](crate::store::codec::SessionRow), in one place.
macro_rules! session_columns {
    () => {
        "session_id, phone_id, app_id, user_id, issued, state, minted_at, verified_at, \
         started_at, ended_at, reported_run_time, duration_seconds, run_time_mismatch, \
         end_reason, error_msg, last_heartbeat_at, created_at"
    };
}

/// The half of [`free_phone_sql`] that says the phone serves, whoever holds it: what a
/// queued entry's first poll checks again of the phone assigned to it (`queue::issue`).
macro_rules! serving_phone_sql {
    ($at:literal) => {
        concat!(
            "last_seen_at >= ",
            $at,
            " AND (cph_status IS NULL OR cph_status = 2) AND unlisted_at IS NULL \
               AND drained_by_rollout IS NULL AND recovery_state IS NULL"
        )
    };
}
pub(super) use serving_phone_sql;

/// A phone that may be given to a new session: in no session, held for none (the part
/// the `phones_free` index covers, so the pick never walks busy phones), heard from since
/// `$at`, running as far as the control plane knows (chapter 4.3.1: 2; every other status is
/// in transition, failed or out of service) and still listed by it (migration 0033), not
/// being recovered or given up on, and not drained by a rollout (the row's own mark, migration 0018, which `phones_free` also
/// leaves out: the drain writes the row a mint locks, so the two cannot cross).
macro_rules! free_phone_sql {
    ($at:literal) => {
        concat!(
            "allocated_session_id IS NULL AND current_session_id IS NULL \
               AND heartbeat_session_id IS NULL AND ",
            serving_phone_sql!($at)
        )
    };
}
pub(super) use free_phone_sql;

/// A phone's state as the operator sees it, from its row; `$1` is the freshness cut-off.
/// One expression, so the gauge and the phone views can never disagree. A phone the control
/// plane no longer lists (migration 0033) is `unlisted`, whatever else the row says: cphub
/// can neither allocate nor recover it. The control plane's status (chapter 4.3.1) comes next: frozen (6), stopped (8), creation failed (-8) and
/// stopping failed (-9) are `out_of_service`, whatever else the row says; any other status
/// but running (2) — creating, resetting, restarting, stopping, or failed and awaiting the
/// watchdog — is `unavailable`. A phone a rollout drained (draining, updating, verifying:
/// the same mark as the free-phone pick reads, so what the operator sees is what allocation
/// skips) is `draining` when it would otherwise be idle, allocated or occupied: a fault
/// (out of service, recovering, broken, unavailable, stale) says more about the phone than
/// the rollout does, and the rollout waits on it anyway. A pause or an abort undrains its
/// `draining` phones (store/rollout.rs), so only the phones it still drives show here. See
/// the status table in docs/operations.md.
macro_rules! phone_state_sql {
    () => {
        "CASE \
           WHEN unlisted_at IS NOT NULL THEN 'unlisted' \
           WHEN cph_status IN (6, 8, -8, -9) THEN 'out_of_service' \
           WHEN recovery_state IS NOT NULL THEN recovery_state \
           WHEN cph_status IS NOT NULL AND cph_status <> 2 THEN 'unavailable' \
           WHEN last_seen_at IS NULL OR last_seen_at < $1 THEN 'stale' \
           WHEN drained_by_rollout IS NOT NULL THEN 'draining' \
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
         ended_at, detail, diagnostics"
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

pub(super) async fn session_events<D: Sql>(
    db: &mut D,
    session: &Session,
) -> Result<Vec<EventRecord>, StoreError> {
    // An event naming another app, or another phone, than the session was minted for is
    // flagged, not refused: the phone ran what it ran, and the session is still billed. A
    // reconnect line carries the session's own app and phone.
    let args = args![session.session_id.as_str(), session.created_at];
    Ok(db.fetch_all(session_events_sql::<D>(), &args).await?)
}

/// `$1`, `$2`: the session's id and creation time, as read. On PostgreSQL an event belongs
/// to its session by id and creation time (the event log's partition key, 0014;
/// `-infinity` on rows older than it): rows of a removed session wait in their day's
/// partition until it is dropped, and must not be read as another's. The time as a
/// parameter, not the joined row's, lets PostgreSQL open only that day's partition (and the
/// legacy and default ones) when the executor starts, not every day's since the book began.
fn session_events_sql<D: Sql>() -> &'static str {
    macro_rules! session_events {
        ($same_session:literal) => {
            concat!(
                "SELECT e.id, CASE e.status WHEN 0 THEN 'enter' WHEN 1 THEN 'quit' \
                   ELSE 'reconnect' END AS kind, e.phone_id, e.app_id, e.event_time AS time, \
                   e.run_time, e.error_msg, e.truncated, e.outcome, e.received_at, \
                   (s.issued AND e.app_id <> s.app_id) AS app_mismatch, \
                   (s.issued AND e.phone_id <> s.phone_id) AS phone_mismatch \
                 FROM session_events e JOIN sessions s ON s.session_id = e.session_id",
                " WHERE e.session_id = $1 AND s.created_at = $2",
                $same_session,
                " ORDER BY e.id"
            )
        };
    }
    match D::LOCKS_ROWS {
        true => {
            session_events!(" AND e.session_created_at IN ($2, '-infinity'::timestamptz)")
        }
        false => session_events!(""),
    }
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

/// Phones in id order, after `after` (keyset paging), optionally only those with `app`.
pub(super) async fn phones(
    db: &mut impl Sql,
    fresh_since: UtcTime,
    after: Option<&PhoneId>,
    app: Option<&AppId>,
    limit: i64,
) -> Result<Vec<Phone>, StoreError> {
    let after = after.map_or("", |p| p.as_str());
    let Some(app) = app else {
        let sql = concat!(
            "SELECT ",
            phone_columns!(),
            " FROM phones WHERE phone_id > $2 ORDER BY phone_id LIMIT $3"
        );
        return Ok(db.fetch_all(sql, &args![fresh_since, after, limit]).await?);
    };
    let sql = concat!(
        "SELECT ",
        phone_columns!(),
        " FROM phones WHERE phone_id > $2 AND EXISTS (SELECT 1 FROM phone_apps a \
           WHERE a.app_id = $4 AND a.phone_id = phones.phone_id) \
         ORDER BY phone_id LIMIT $3"
    );
    let args = args![fresh_since, after, limit, app.as_str()];
    Ok(db.fetch_all(sql, &args).await?)
}

pub(super) async fn phone_apps(
    db: &mut impl Sql,
    phone_id: &PhoneId,
) -> Result<Vec<PhoneApp>, StoreError> {
    let sql = "SELECT phone_id, app_id, app_version_id, version_code, version_name \
               FROM phone_apps WHERE phone_id = $1 ORDER BY app_id";
    let rows: Vec<PhoneAppRow> = db.fetch_all(sql, &args![phone_id.as_str()]).await?;
    rows.into_iter().map(PhoneApp::try_from).collect()
}

/// The recovery candidates (chapter 4.3.1): phones heard from before but silent since
/// `fresh_since` that the control plane reports running (or has not reported yet: the
/// watchdog re-reads every phone before acting), and phones it reports abnormal (-7),
/// restart failed (-6) or reset failed (-5). A silent phone in any other status is in
/// transition (creating, resetting, restarting, stopping) or out of service (frozen,
/// stopped, creation or stopping failed): it is silent for a reason, and left alone. A
/// phone a rollout is updating or verifying is left to the rollout: an update restarts the
/// game, and the rollout follows it to its end (migration 0016). A phone the control plane
/// no longer lists (migration 0033) is not one cphub can restart or reset.
pub(super) async fn unhealthy_phones(
    db: &mut impl Sql,
    fresh_since: UtcTime,
) -> Result<Vec<PhoneHealth>, StoreError> {
    let sql = "SELECT phone_id, server_id, last_seen_at, cph_status, recovery_state FROM phones \
               WHERE ((last_seen_at IS NOT NULL AND last_seen_at < $1 \
                   AND (cph_status IS NULL OR cph_status = 2)) \
                 OR cph_status IN (-5, -6, -7)) \
                 AND unlisted_at IS NULL \
                 AND NOT EXISTS (SELECT 1 FROM rollout_phones u \
                   WHERE u.phone_id = phones.phone_id AND u.state IN ('updating', 'verifying')) \
               ORDER BY phone_id";
    Ok(db.fetch_all(sql, &args![fresh_since]).await?)
}

/// How many phones in service the book knows on each server (chapter 4.3.1 `server_id`):
/// the share of a server's phones that fell silent is taken of these. Only phones whose
/// silence would be a fault count — reported running (2) or failed (-5, -6, -7), or not
/// reported yet — as only those are counted silent: a phone stopped on purpose (8), frozen
/// or in transition never heartbeats, and counted here it would dilute the share until a
/// server with many stopped phones could die without an incident, its running phones
/// restarted one by one. Nor do phones the control plane no longer lists, which are not
/// candidates either.
pub(super) async fn phones_per_server(db: &mut impl Sql) -> Result<Vec<(String, i64)>, StoreError> {
    let sql = "SELECT server_id, COUNT(*) FROM phones WHERE server_id IS NOT NULL \
                 AND (cph_status IS NULL OR cph_status IN (2, -5, -6, -7)) \
                 AND unlisted_at IS NULL \
               GROUP BY server_id";
    Ok(db.fetch_all(sql, &[]).await?)
}

/// The server incidents that still last (see migration 0005).
pub(super) async fn open_incidents(db: &mut impl Sql) -> Result<Vec<Recovery>, StoreError> {
    let sql = concat!(
        "SELECT ",
        recovery_columns!(),
        " FROM recoveries WHERE outcome = 'open' ORDER BY id"
    );
    Ok(db.fetch_all(sql, &[]).await?)
}

/// The server incidents closed at or after `since` (the grace after them): read from the
/// book, so that a replica that takes the watchdog over, or cphub restarted, knows them too.
pub(super) async fn incidents_closed_since(
    db: &mut impl Sql,
    since: UtcTime,
) -> Result<Vec<Recovery>, StoreError> {
    let sql = concat!(
        "SELECT ",
        recovery_columns!(),
        " FROM recoveries WHERE outcome = 'closed' AND ended_at >= $1 ORDER BY id"
    );
    Ok(db.fetch_all(sql, &args![since]).await?)
}

/// Ends an open server incident; `note` is added to what its detail already says.
pub(super) async fn close_incident(
    tx: &mut impl Sql,
    id: i64,
    ended_at: UtcTime,
    note: &str,
) -> Result<(), StoreError> {
    let sql = "UPDATE recoveries SET outcome = 'closed', ended_at = $2, \
                 detail = COALESCE(detail || '; ', '') || $3 \
               WHERE id = $1 AND outcome = 'open'";
    tx.execute(sql, &args![id, ended_at, note]).await?;
    Ok(())
}

/// The playing sessions the watchdog closes as abandoned (see [`abandoned_sql`]), read
/// without the writer: most passes find none, and the write is then not taken at all.
pub(super) async fn sessions_to_abandon<D: Sql>(
    db: &mut D,
    fresh_since: UtcTime,
    game_gone_after: Duration,
) -> Result<Vec<String>, StoreError> {
    let grace = game_gone_after.as_millis() as i64;
    let rows: Vec<(String,)> = db
        .fetch_all(abandoned_sql::<D>(false), &args![fresh_since, grace])
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Closes `candidates` (from [`sessions_to_abandon`]) that still are to be abandoned, at
/// their last heartbeat, and frees their phones.
pub(super) async fn abandon_sessions<D: Sql>(
    tx: &mut D,
    candidates: &[String],
    fresh_since: UtcTime,
    game_gone_after: Duration,
    now: UtcTime,
) -> Result<Vec<Session>, StoreError> {
    let grace = game_gone_after.as_millis() as i64;
    let ids = json_list(candidates)?;
    let args = args![fresh_since, grace, ids.as_str()];
    let rows: Vec<SessionRow> = tx.fetch_all(abandoned_sql::<D>(true), &args).await?;
    let mut abandoned = Vec::with_capacity(rows.len());
    for row in rows {
        let session = Session::try_from(row)?.abandon();
        save_session(tx, &session, now).await?;
        abandoned.push(session);
    }
    // Their phones in key order, as phone sync and the other writers of many phones lock
    // them: in session order, two such writers could each wait for the other.
    abandoned.sort_by(|a, b| a.phone_id.as_str().cmp(b.phone_id.as_str()));
    let free = "UPDATE phones SET current_session_id = NULL, current_app_id = NULL, \
                  current_session_started_at = NULL, updated_at = $2 \
                WHERE current_session_id = $1";
    for session in &abandoned {
        tx.execute(free, &args![session.session_id.as_str(), now])
            .await?;
    }
    Ok(abandoned)
}

/// Playing sessions whose game is gone without a quit: their phone is silent since `$1`, or
/// it is heard from but its heartbeats have named no session, or another, for `$2` ms of
/// its own clock since the session's last heartbeat (or its enter) — chapter 6.4: "After
/// you exit a cloud game, the value of session_id is left blank." The grace (`fleet`'s
/// stale time) lets a quit still being retried arrive first; the times compared are all
/// the phone's. `write`: the full rows of the candidates `$3`, locked on PostgreSQL in key
/// order as every writer takes sessions and read again once free, so a quit another
/// replica commits meanwhile ends the session and it is left as it ended (unlocked, the
/// abandonment wrote its older copy back over the quit, found by `scripts/scale-out`).
fn abandoned_sql<D: Sql>(write: bool) -> &'static str {
    macro_rules! abandoned {
        ($columns:expr, $grace:literal, $ids:literal, $lock:literal) => {
            concat!(
                "SELECT ",
                $columns,
                " FROM sessions WHERE state = 'playing'",
                $ids,
                " AND EXISTS (SELECT 1 FROM phones p WHERE p.phone_id = sessions.phone_id \
                   AND (p.last_seen_at < $1 \
                     OR ((p.heartbeat_session_id IS NULL \
                         OR p.heartbeat_session_id <> sessions.session_id) \
                       AND p.last_heartbeat_at >= \
                         COALESCE(sessions.last_heartbeat_at, sessions.started_at) + ",
                $grace,
                "))) ORDER BY session_id",
                $lock
            )
        };
    }
    match (D::LOCKS_ROWS, write) {
        (true, true) => abandoned!(
            session_columns!(),
            "$2::bigint * interval '1 millisecond'",
            " AND session_id IN (SELECT json_array_elements_text($3::json))",
            " FOR UPDATE"
        ),
        (true, false) => abandoned!("session_id", "$2::bigint * interval '1 millisecond'", "", ""),
        (false, true) => abandoned!(
            session_columns!(),
            "$2",
            " AND session_id IN (SELECT value FROM json_each($3))",
            ""
        ),
        (false, false) => abandoned!("session_id", "$2", "", ""),
    }
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

pub(super) async fn recovery(db: &mut impl Sql, id: i64) -> Result<Option<Recovery>, StoreError> {
    let sql = concat!(
        "SELECT ",
        recovery_columns!(),
        " FROM recoveries WHERE id = $1"
    );
    Ok(db.fetch_optional(sql, &args![id]).await?)
}

pub(super) async fn pending_recoveries(db: &mut impl Sql) -> Result<Vec<Recovery>, StoreError> {
    let sql = concat!(
        "SELECT ",
        recovery_columns!(),
        " FROM recoveries WHERE outcome = 'pending' ORDER BY id"
    );
    Ok(db.fetch_all(sql, &[]).await?)
}

/// Logs a decision and marks the phone `recovering` (or `broken`) in one transaction. A
/// pending one (a job about to be sent) is refused with [`StoreError::PhoneBusy`] while the
/// phone has another pending or a rollout update: checked here, under the phone's lock,
/// because the callers' own checks come before reads of the control plane that take
/// seconds, and a second actor may have decided meanwhile.
pub(super) async fn start_recovery<D: Sql>(
    tx: &mut D,
    r: &NewRecovery,
) -> Result<Recovery, StoreError> {
    if r.outcome == Outcome::Pending {
        let (pending, rollout) = phone_claims(tx, &r.phone_id).await?;
        if pending || rollout.is_some() {
            let phone = r.phone_id.to_string();
            return Err(StoreError::PhoneBusy { phone, rollout });
        }
        if let Some(since) = r.unheard_since
            && heard_since(tx, &r.phone_id, since).await?
        {
            return Err(StoreError::PhoneHeard(r.phone_id.to_string()));
        }
        if let Some(cap) = r.in_flight_cap
            && !room_for_a_job(tx, cap).await?
        {
            return Err(StoreError::InFlightCap(cap));
        }
    }
    let sql = concat!(
        "INSERT INTO recoveries \
           (phone_id, reason, action, dry_run, outcome, error, started_at, ended_at, detail, \
            diagnostics) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
        recovery_columns!()
    );
    let diagnostics = r.diagnostics.to_column();
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
        diagnostics.as_deref(),
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

/// Advisory lock key (PostgreSQL) of the count of jobs in flight: "cphubjob" in ASCII.
const JOBS_IN_FLIGHT_LOCK: i64 = 0x6370_6875_626a_6f62;

/// Whether fewer than `cap` recovery and rollout update jobs run, counted under one lock
/// held to the end of the transaction, which writes the new job's row: two writers (two
/// replicas, the watchdog's pass and an operator's request, a rollout) cannot both take the
/// last place. SQLite's one writer serializes them already. Taken after the phone's row
/// lock, in every writer.
pub(super) async fn room_for_a_job<D: Sql>(tx: &mut D, cap: usize) -> Result<bool, StoreError> {
    if D::LOCKS_ROWS {
        let lock = "SELECT pg_advisory_xact_lock($1)";
        tx.execute(lock, &args![JOBS_IN_FLIGHT_LOCK]).await?;
    }
    let running = jobs_in_flight(tx).await?;
    Ok(running < i64::try_from(cap).unwrap_or(i64::MAX))
}

/// The jobs `watchdog.max_in_flight` bounds: recoveries pending and rollout updates sent
/// and not ended.
pub(super) async fn jobs_in_flight(db: &mut impl Sql) -> Result<i64, StoreError> {
    let sql = "SELECT (SELECT COUNT(*) FROM recoveries WHERE outcome = 'pending') \
                 + (SELECT COUNT(*) FROM rollout_phones WHERE state = 'updating')";
    let row: Option<(i64,)> = db.fetch_optional(sql, &[]).await?;
    Ok(row.map_or(0, |(n,)| n))
}

/// Whether cphub heard the phone (a heartbeat received: `last_seen_at`) at or after `since`,
/// read after [`phone_claims`] locked its row: a heartbeat flush committed after the lock
/// waits for this transaction, and the phone it names is heard on the next pass.
async fn heard_since<D: Sql>(tx: &mut D, phone: &PhoneId, since: UtcTime) -> Result<bool, StoreError> {
    let sql = "SELECT EXISTS (SELECT 1 FROM phones WHERE phone_id = $1 AND last_seen_at >= $2)";
    let row: Option<(bool,)> = tx.fetch_optional(sql, &args![phone.as_str(), since]).await?;
    Ok(row.is_some_and(|(heard,)| heard))
}

/// Whether the phone has a pending recovery, and the rollout updating it if one is (its
/// phone `updating` or `verifying`). On PostgreSQL the phone's row is locked first, in a
/// statement of its own so that the check's snapshot is taken after the lock: the other
/// writer of a claim (a recovery or [`super::rollout::step`]) takes the same lock, and the
/// second sees what the first committed.
pub(super) async fn phone_claims<D: Sql>(
    tx: &mut D,
    phone_id: &PhoneId,
) -> Result<(bool, Option<i64>), StoreError> {
    if D::LOCKS_ROWS {
        let lock = "SELECT 1 FROM phones WHERE phone_id = $1 FOR UPDATE";
        let _: Option<(i32,)> = tx.fetch_optional(lock, &args![phone_id.as_str()]).await?;
    }
    let sql = "SELECT EXISTS (SELECT 1 FROM recoveries \
                 WHERE phone_id = $1 AND outcome = 'pending'), \
               (SELECT rollout_id FROM rollout_phones \
                 WHERE phone_id = $1 AND state IN ('updating', 'verifying') \
                 ORDER BY rollout_id DESC LIMIT 1)";
    let row: Option<(bool, Option<i64>)> = tx.fetch_optional(sql, &args![phone_id.as_str()]).await?;
    Ok(row.unwrap_or_default())
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
/// keep the outcome pending. `detail`, when given, replaces what the log said was done (a
/// reset sent again without properties it refused).
pub(super) async fn note_recovery_job(
    db: &mut impl Sql,
    id: i64,
    request_id: Option<&str>,
    job_id: Option<&str>,
    detail: Option<&str>,
) -> Result<(), StoreError> {
    let sql = "UPDATE recoveries SET request_id = COALESCE($2, request_id), job_id = $3, \
                 detail = COALESCE($4, detail) \
               WHERE id = $1";
    db.execute(sql, &args![id, request_id, job_id, detail])
        .await?;
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

/// The pick of a mint: hold one free phone (the pinned one, one with the app, or any) for
/// the new session. Separate statements rather than `$5 IS NULL OR phone_id = $5`: that form
/// hides the key from the planner, so even a pinned mint scanned every phone. A pick for an
/// app walks the free phones (`phones_free`) and probes `phone_apps` by its primary key for
/// each, stopping at the first with the app: the walk is short when the fleet is busy (few
/// free phones) and when it is not (most free phones have a deployed game). Written as
/// `EXISTS`: SQLite turns `phone_id IN (…)` into a list of every phone of the app first
/// (9 ms against 3 µs a pick with 100k phones); PostgreSQL plans both as the same
/// semi-join. PostgreSQL skips rows another mint has locked, so concurrent mints never wait
/// for, or get, the same phone.
macro_rules! pick_phone_sql {
    ($candidates:expr, $limit:expr, $lock:literal) => {
        concat!(
            "UPDATE phones SET allocated_session_id = $1, allocated_until = $2, updated_at = $3 \
             WHERE phone_id = (SELECT phone_id FROM phones WHERE ",
            $candidates,
            free_phone_sql!("$4"),
            $limit,
            $lock,
            ") RETURNING phone_id, server_id, access_infos"
        )
    };
}

/// The first free phone in key order (the `phones_free` index's order): the batch's set-wise
/// pick (`mint_batch.rs`) reads the free phones in the same order, so a mint gets the same
/// phone in a batch as alone.
macro_rules! first_free {
    () => {
        " ORDER BY phone_id LIMIT 1"
    };
}

/// The phone has the app `$app` deployed (see `pick_phone_sql!`).
macro_rules! has_app_sql {
    ($app:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM phone_apps a WHERE a.app_id = ",
            $app,
            " AND a.phone_id = phones.phone_id) AND "
        )
    };
}

/// Which phones a mint chooses from; the statement's `$5` is the pinned phone or the app.
#[derive(Clone, Copy)]
enum Candidates {
    Pinned,
    WithApp,
    Any,
}

fn pick_phone_sql<D: Sql>(candidates: Candidates) -> &'static str {
    match (candidates, D::LOCKS_ROWS) {
        // A pinned phone is waited for, not skipped: its row may be locked only by a
        // heartbeat flush, and skipping it would answer PHONE_BUSY for a free phone.
        (Candidates::Pinned, true) => pick_phone_sql!("phone_id = $5 AND ", "", " FOR UPDATE"),
        (Candidates::Pinned, false) => pick_phone_sql!("phone_id = $5 AND ", "", ""),
        (Candidates::WithApp, true) => {
            pick_phone_sql!(has_app_sql!("$5"), first_free!(), " FOR UPDATE SKIP LOCKED")
        }
        (Candidates::WithApp, false) => pick_phone_sql!(has_app_sql!("$5"), first_free!(), ""),
        (Candidates::Any, true) => pick_phone_sql!("", first_free!(), " FOR UPDATE SKIP LOCKED"),
        (Candidates::Any, false) => pick_phone_sql!("", first_free!(), ""),
    }
}

/// Holds a phone for the request's session: the one allocation path, for every caller.
async fn pick_phone<D: Sql>(
    tx: &mut D,
    req: &MintRequest,
) -> Result<Option<PickedPhone>, StoreError> {
    let (candidates, fifth) = match (&req.pinned_phone, req.match_app) {
        (Some(pinned), _) => (Candidates::Pinned, Some(pinned.as_str())),
        (None, true) => (Candidates::WithApp, Some(req.app_id.as_str())),
        (None, false) => (Candidates::Any, None),
    };
    let sql = pick_phone_sql::<D>(candidates);
    let session_id = req.access.session_id.as_str();
    let args = args![session_id, req.hold_until, req.now, req.fresh_since, fifth];
    // The any-phone statement has no `$5`.
    let args = if fifth.is_some() {
        &args[..]
    } else {
        &args[..4]
    };
    Ok(tx.fetch_optional(sql, args).await?)
}

/// [`pick_phone`], looking again while the only free phones are held by another
/// transaction. On PostgreSQL the pick skips locked rows, and a heartbeat flush or phone
/// sync holds the phones it writes for a few milliseconds: with few free phones a mint was
/// refused `NO_FREE_PHONE` although a phone was free (a CI run minting the last of four
/// phones saw it). The pick never waits for a row instead (the batch's lock order, in
/// docs/architecture.md): it sleeps a little and picks again, for [`HELD_PHONE_PATIENCE`]
/// at most. A pinned pick already waits for its one row.
async fn pick_phone_held_or_not<D: Sql>(
    tx: &mut D,
    req: &MintRequest,
) -> Result<Option<PickedPhone>, StoreError> {
    let may_be_held = D::LOCKS_ROWS && req.pinned_phone.is_none();
    let mut waited = Duration::ZERO;
    let mut pause = Duration::from_millis(2);
    loop {
        let picked = pick_phone(tx, req).await?;
        if picked.is_some() || !may_be_held || waited >= HELD_PHONE_PATIENCE {
            return Ok(picked);
        }
        if !free_phone_exists(tx, req).await? {
            return Ok(None);
        }
        tokio::time::sleep(pause).await;
        waited += pause;
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

/// How long a mint looks again for a free phone other transactions hold.
const HELD_PHONE_PATIENCE: Duration = Duration::from_millis(500);

/// Whether a phone the (unpinned) request could have is free, held by another transaction
/// or not: the pick's conditions without its lock.
async fn free_phone_exists(tx: &mut impl Sql, req: &MintRequest) -> Result<bool, StoreError> {
    let sql = match req.match_app {
        true => concat!(
            "SELECT phone_id FROM phones WHERE ",
            has_app_sql!("$2"),
            free_phone_sql!("$1"),
            " LIMIT 1"
        ),
        false => concat!("SELECT phone_id FROM phones WHERE ", free_phone_sql!("$1"), " LIMIT 1"),
    };
    let args = args![req.fresh_since, req.app_id.as_str()];
    // The any-phone statement has no `$2`.
    let args = if req.match_app { &args[..] } else { &args[..1] };
    let found: Option<(String,)> = tx.fetch_optional(sql, args).await?;
    Ok(found.is_some())
}

/// Mints one session in a transaction whose lapsed holds are already released (as of the
/// request's `now` or later): the callers release once for a whole batch or queue pass, so
/// that every mint's locks on PostgreSQL come after those of the release (see
/// [`release_lapsed_holds`]).
pub(super) async fn mint_released<D: Sql>(
    tx: &mut D,
    req: &MintRequest,
) -> Result<Allocation, StoreError> {
    if let Some(key) = &req.key
        && let Some(earlier) = claim_key(tx, key, req).await?
    {
        return Ok(earlier);
    }
    let Some(picked) = pick_phone_held_or_not::<D>(tx, req).await? else {
        if let Some(key) = &req.key {
            forget_key(tx, key).await?;
        }
        return refusal(tx, req.pinned_phone.as_ref()).await;
    };
    insert_minted(tx, req, &picked.phone_id).await?;
    if let Some(key) = &req.key {
        keep_connect(tx, key, &picked).await?;
    }
    let phone_id = PhoneId::parse("phone_id", picked.phone_id)
        .map_err(|e| StoreError::Corrupt(format!("allocated phone: {e}")))?;
    let connect = connect(picked.server_id, picked.access_infos.as_deref())?;
    Ok(Allocation::Allocated { phone_id, connect })
}

async fn insert_minted(
    tx: &mut impl Sql,
    req: &MintRequest,
    phone_id: &str,
) -> Result<(), StoreError> {
    let insert = "INSERT INTO sessions (session_id, phone_id, app_id, user_id, issued, state, \
                    minted_at, ticket_hash, aes_key, auth_ts, hold_until, created_at, updated_at) \
                  VALUES ($1, $2, $3, $4, TRUE, 'minted', $5, $6, $7, $8, $9, $5, $5)";
    let ticket_hash = req.access.ticket.hash_hex();
    let aes_key = req.access.aes_key.to_hex();
    let args = args![
        req.access.session_id.as_str(),
        phone_id,
        req.app_id.as_str(),
        req.user_id.as_str(),
        req.now,
        ticket_hash.as_str(),
        aes_key.as_str(),
        req.auth_ts,
        req.hold_until,
    ];
    tx.execute(insert, &args).await?;
    Ok(())
}

/// Records the mint's key, or answers for the earlier mint that recorded it. The key's
/// primary key decides, atomically: on PostgreSQL a concurrent duplicate's insert waits for
/// the first mint's transaction and then finds its row; SQLite has one writer. A key past its
/// time is free again.
async fn claim_key(
    tx: &mut impl Sql,
    key: &MintKey,
    req: &MintRequest,
) -> Result<Option<Allocation>, StoreError> {
    let lapsed = "DELETE FROM mint_keys WHERE idempotency_key = $1 AND expires_at <= $2";
    tx.execute(lapsed, &args![key.key.as_str(), req.now])
        .await?;
    let claim = "INSERT INTO mint_keys (idempotency_key, request_hash, session_id, ticket, \
                   created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (idempotency_key) DO NOTHING";
    let args = args![
        key.key.as_str(),
        key.request_hash.as_str(),
        req.access.session_id.as_str(),
        req.access.ticket.expose(),
        req.now,
        key.expires_at,
    ];
    if tx.execute(claim, &args).await? == 1 {
        return Ok(None);
    }
    let sql = "SELECT k.request_hash, k.session_id, k.ticket, s.aes_key, s.auth_ts, s.phone_id, \
                 k.server_id, k.access_infos \
               FROM mint_keys k JOIN sessions s ON s.session_id = k.session_id \
               WHERE k.idempotency_key = $1";
    let stored: Option<StoredMint> = tx.fetch_optional(sql, &args![key.key.as_str()]).await?;
    let stored = stored.ok_or_else(|| StoreError::Corrupt("idempotency key vanished".into()))?;
    if !constant_time_eq(&stored.request_hash, &key.request_hash) {
        return Ok(Some(Allocation::KeyReused));
    }
    Ok(Some(Allocation::Replayed(Box::new(replay(stored)?))))
}

/// A refusal is not an answer to replay: the retry may find a phone.
async fn forget_key(tx: &mut impl Sql, key: &MintKey) -> Result<(), StoreError> {
    let forget = "DELETE FROM mint_keys WHERE idempotency_key = $1";
    tx.execute(forget, &args![key.key.as_str()]).await?;
    Ok(())
}

/// Where to connect as answered, so a replay answers the same even after phone sync changed
/// the phone's access information.
async fn keep_connect(
    tx: &mut impl Sql,
    key: &MintKey,
    picked: &PickedPhone,
) -> Result<(), StoreError> {
    let sql = "UPDATE mint_keys SET server_id = $2, access_infos = $3 WHERE idempotency_key = $1";
    let args = args![
        key.key.as_str(),
        picked.server_id.as_deref(),
        picked.access_infos.as_deref(),
    ];
    tx.execute(sql, &args).await?;
    Ok(())
}

pub(super) fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The earlier mint's answer, from its session and what its key row kept.
pub(super) fn replay(stored: StoredMint) -> Result<MintAnswer, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("minted session {what}"));
    let access = MintedAccess {
        ticket: Ticket::presented(stored.ticket).ok_or_else(|| corrupt("ticket"))?,
        aes_key: AesKey::from_hex(&stored.aes_key).ok_or_else(|| corrupt("aes_key"))?,
        session_id: stored.session_id,
    };
    Ok(MintAnswer {
        access,
        auth_ts: stored.auth_ts,
        phone_id: PhoneId::try_from(stored.phone_id).map_err(|_| corrupt("phone_id"))?,
        connect: connect(stored.server_id, stored.access_infos.as_deref())?,
    })
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

/// Records what the control plane says about each phone (name, server, status), and its
/// access information where this sync read the phone's detail (kept otherwise).
///
/// Written in key order, as every other writer of `phones` locks its rows on PostgreSQL.
/// 4.3.1 lists phones newest first, and upserting them in that order locked the rows
/// against the heartbeat flush's order: every replica's sync and flush deadlocked, each
/// broken only after `deadlock_timeout`, and on a busy machine heartbeats reached the book
/// seconds late, so that the watchdog took phones in play for silent and abandoned their
/// sessions (found by the scale-out test with a rollout running).
pub(super) async fn sync_phones(
    tx: &mut impl Sql,
    phones: &[ControlPlanePhone],
    now: UtcTime,
) -> Result<(), StoreError> {
    let sql = "INSERT INTO phones (phone_id, phone_name, server_id, cph_status, cph_synced_at, \
                 access_infos, cph_update_time, cph_property, cph_property_at, created_at, \
                 updated_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $5, $5) \
               ON CONFLICT (phone_id) DO UPDATE SET phone_name = excluded.phone_name, \
                 server_id = excluded.server_id, cph_status = excluded.cph_status, \
                 cph_synced_at = excluded.cph_synced_at, updated_at = excluded.updated_at, \
                 access_infos = COALESCE(excluded.access_infos, phones.access_infos), \
                 cph_update_time = CASE WHEN excluded.access_infos IS NULL \
                   THEN phones.cph_update_time ELSE excluded.cph_update_time END, \
                 cph_property = COALESCE(excluded.cph_property, phones.cph_property), \
                 cph_property_at = COALESCE(excluded.cph_property_at, phones.cph_property_at), \
                 missed_at = NULL, unlisted_at = NULL";
    let mut in_key_order: Vec<&ControlPlanePhone> = phones.iter().collect();
    in_key_order.sort_unstable_by(|a, b| a.phone_id.cmp(&b.phone_id));
    for phone in in_key_order {
        let access = phone.access.as_deref().map(access_infos_json);
        let update_time = access.as_ref().and(phone.update_time.as_deref());
        let property_at = phone.property.as_ref().map(|_| now);
        let args = args![
            phone.phone_id.as_str(),
            phone.phone_name.as_str(),
            phone.server_id.as_str(),
            phone.status,
            now,
            access.as_deref(),
            update_time,
            phone.property.as_deref(),
            property_at,
        ];
        tx.execute(sql, &args).await?;
    }
    Ok(())
}

/// Notes a complete listing, begun at `began` and written at `now`, against every phone an
/// earlier one listed and this one left out (`missed_at`), and marks `unlisted` those a
/// listing begun after that note left out too (migration 0033). A phone never listed (known
/// only from its callbacks) has no `cph_synced_at` and is left as it is. The `CASE` reads
/// `missed_at` from before this listing.
///
/// A transaction of its own, after the listing's: on PostgreSQL it locks the rows it
/// changes in key order, as every writer of `phones` does; after the listing's upserts in
/// the same transaction, the two key orders one after the other could cross a heartbeat
/// flush of a phone missed once (the paging race) that still calls back.
pub(super) async fn note_missed_listing<S: Sql>(
    tx: &mut S,
    phones: &[ControlPlanePhone],
    began: UtcTime,
    now: UtcTime,
) -> Result<(), StoreError> {
    let listed: Vec<&str> = phones.iter().map(|p| p.phone_id.as_str()).collect();
    let listed = json_list(&listed)?;
    let sql = match S::LOCKS_ROWS {
        true => NOTE_MISSED_POSTGRES,
        false => NOTE_MISSED_SQLITE,
    };
    tx.execute(sql, &args![listed.as_str(), now, began]).await?;
    Ok(())
}

/// `$1`: the listed phone ids (a JSON array), `$2` now, `$3` when the listing began.
macro_rules! note_missed {
    ($missed:literal) => {
        concat!(
            "UPDATE phones SET missed_at = COALESCE(missed_at, $2), \
               unlisted_at = CASE WHEN missed_at < $3 THEN $2 END \
             WHERE ",
            $missed
        )
    };
}

const NOTE_MISSED_SQLITE: &str = note_missed!(
    "cph_synced_at IS NOT NULL AND unlisted_at IS NULL \
     AND phone_id NOT IN (SELECT value FROM json_each($1))"
);

/// An anti-join: `<> ALL` of 100,000 ids would compare each phone with every one.
const NOTE_MISSED_POSTGRES: &str = note_missed!(
    "phone_id IN (SELECT phone_id FROM phones \
       WHERE cph_synced_at IS NOT NULL AND unlisted_at IS NULL \
         AND NOT EXISTS (SELECT 1 FROM json_array_elements_text($1::json) AS l(id) \
           WHERE l.id = phones.phone_id) \
       ORDER BY phone_id FOR UPDATE)"
);

/// The control plane said it does not know a phone it listed before (4.3.2 answered
/// `CPS.0005`, 7.2): unlisted at once, as the next listings would mark it. A phone it never
/// listed (known from its callbacks only) is left as it is, as a listing leaves it.
pub(super) async fn record_unlisted(
    db: &mut impl Sql,
    phone_id: &PhoneId,
    now: UtcTime,
) -> Result<u64, StoreError> {
    let sql = "UPDATE phones SET missed_at = COALESCE(missed_at, $2), unlisted_at = $2, \
                 updated_at = $2 \
               WHERE phone_id = $1 AND cph_synced_at IS NOT NULL AND unlisted_at IS NULL";
    Ok(db.execute(sql, &args![phone_id.as_str(), now]).await?)
}

/// Replaces the whole of `phone_apps`: a sync lists every app's phones, so what it did not
/// list is no longer deployed.
pub(super) async fn sync_phone_apps(
    tx: &mut impl Sql,
    apps: &[PhoneApp],
    now: UtcTime,
) -> Result<(), StoreError> {
    tx.execute("DELETE FROM phone_apps", &[]).await?;
    let sql = "INSERT INTO phone_apps (app_id, phone_id, app_version_id, version_code, \
                 version_name, synced_at) VALUES ($1, $2, $3, $4, $5, $6) \
               ON CONFLICT (app_id, phone_id) DO NOTHING";
    for app in apps {
        let args = args![
            app.app_id.as_str(),
            app.phone_id.as_str(),
            app.app_version_id.as_deref(),
            app.version_code.as_deref(),
            app.version_name.as_deref(),
            now,
        ];
        tx.execute(sql, &args).await?;
    }
    Ok(())
}

/// The phone's properties as phone sync last read them (4.3.2), and when; None when it
/// never read any.
pub(super) async fn synced_property(
    db: &mut impl Sql,
    phone_id: &PhoneId,
) -> Result<Option<SyncedProperty>, StoreError> {
    let sql = "SELECT cph_property AS property, cph_property_at AS read_at FROM phones \
               WHERE phone_id = $1 AND cph_property IS NOT NULL";
    Ok(db.fetch_optional(sql, &args![phone_id.as_str()]).await?)
}

/// Where a client connects to the phone (4.3.2), as phone sync last read it; None for a
/// phone the book does not know.
pub(super) async fn phone_connect(
    db: &mut impl Sql,
    phone_id: &PhoneId,
) -> Result<Option<Connect>, StoreError> {
    let sql = "SELECT server_id, access_infos FROM phones WHERE phone_id = $1";
    let row: Option<(Option<String>, Option<String>)> =
        db.fetch_optional(sql, &args![phone_id.as_str()]).await?;
    row.map(|(server, access)| connect(server, access.as_deref()))
        .transpose()
}

/// Whether any phone has `app_id` deployed (5.1.2, as phone sync last read it); None while
/// the book knows of no deployment at all (no sync yet, or no control plane).
pub(super) async fn app_deployed(
    db: &mut impl Sql,
    app_id: &AppId,
) -> Result<Option<bool>, StoreError> {
    let sql = "SELECT EXISTS (SELECT 1 FROM phone_apps WHERE app_id = $1), \
                 EXISTS (SELECT 1 FROM phone_apps)";
    let row: Option<(bool, bool)> = db.fetch_optional(sql, &args![app_id.as_str()]).await?;
    Ok(row.and_then(|(this, any)| any.then_some(this)))
}

pub(super) async fn access_read(
    db: &mut impl Sql,
) -> Result<Vec<(String, Option<String>)>, StoreError> {
    let sql = "SELECT phone_id, cph_update_time FROM phones WHERE access_infos IS NOT NULL";
    Ok(db.fetch_all(sql, &[]).await?)
}

/// What the holds sweeper does each pass: [`release_lapsed_holds`], and the idempotency keys
/// past their time are forgotten. The mint paths do not sweep keys: each frees its own
/// lapsed keys by primary key (`claim_key`) or reads past them (`mint_batch`), where a
/// sweep of the whole table on every batch cost PostgreSQL 8 ms a batch on a book not yet
/// analysed.
pub(super) async fn sweep_lapsed<D: Sql>(tx: &mut D, now: UtcTime) -> Result<u64, StoreError> {
    let expired = release_lapsed_holds(tx, now, &[]).await?;
    let forget = "DELETE FROM mint_keys WHERE expires_at <= $1";
    tx.execute(forget, &args![now]).await?;
    Ok(expired)
}

/// Expires the sessions whose hold lapsed by `now` and frees their phones. On PostgreSQL the
/// phones of `pinned` (those a batch of mints names) are locked in the same key-ordered pass
/// as the lapsed ones: a batch then waits for phone rows only here, in key order, as the
/// heartbeat flush and phone sync do; every later pick of the batch takes a row it already
/// holds or skips locked ones (`pick_phone_sql`), so batches on two replicas cannot deadlock
/// over phones.
pub(super) async fn release_lapsed_holds<D: Sql>(
    tx: &mut D,
    now: UtcTime,
    pinned: &[&PhoneId],
) -> Result<u64, StoreError> {
    let expired = tx.execute(expire_lapsed_sql::<D>(), &args![now]).await?;
    lock_pinned(tx, now, pinned).await?;
    tx.execute(release_lapsed_sql::<D>(), &args![now]).await?;
    Ok(expired)
}

/// Lapsed holds' sessions expire. On PostgreSQL their rows are locked first, in key order
/// as every writer of `sessions` takes them: a plain `UPDATE … WHERE hold_until < $1` takes
/// them in scan order and can deadlock with an event batch (`ORDER BY session_id FOR UPDATE`).
/// A row another transaction changed meanwhile is checked again once locked.
fn expire_lapsed_sql<D: Sql>() -> &'static str {
    macro_rules! expire {
        ($lock:literal) => {
            concat!(
                "UPDATE sessions SET state = 'expired', updated_at = $1 \
                 WHERE state IN ('minted', 'verified') AND hold_until < $1",
                $lock
            )
        };
    }
    match D::LOCKS_ROWS {
        true => expire!(
            " AND session_id IN (SELECT session_id FROM sessions \
              WHERE state IN ('minted', 'verified') AND hold_until < $1 \
              ORDER BY session_id FOR UPDATE)"
        ),
        false => expire!(""),
    }
}

/// On PostgreSQL, locks the pinned phones and the lapsed ones in one pass in key order. A
/// plain `SELECT … FOR UPDATE`, not a lock inside the release's `UPDATE`: PostgreSQL skips
/// a semi-join's inner side when the outer one is empty, so with no lapsed hold the pinned
/// phones went unlocked (tests/store/lock_order.rs caught the deadlock). SQLite has one
/// writer and no row locks.
async fn lock_pinned<D: Sql>(
    tx: &mut D,
    now: UtcTime,
    pinned: &[&PhoneId],
) -> Result<(), StoreError> {
    if !D::LOCKS_ROWS || pinned.is_empty() {
        return Ok(());
    }
    let pinned = serde_json::to_string(&pinned)
        .map_err(|e| StoreError::Corrupt(format!("pinned phones: {e}")))?;
    let sql = "SELECT phone_id FROM phones \
               WHERE phone_id = ANY(ARRAY(SELECT json_array_elements_text($2::json))) \
                 OR allocated_until < $1 \
               ORDER BY phone_id FOR UPDATE";
    let _: Vec<(String,)> = tx.fetch_all(sql, &args![now, pinned.as_str()]).await?;
    Ok(())
}

/// Lapsed holds' phones go back to the pool, locked in key order on PostgreSQL as the
/// heartbeat flush and phone sync take them (tests/store/lock_order.rs: in scan order the
/// two deadlocked).
fn release_lapsed_sql<D: Sql>() -> &'static str {
    macro_rules! release {
        ($lock:literal) => {
            concat!(
                "UPDATE phones SET allocated_session_id = NULL, allocated_until = NULL, \
                 updated_at = $1 WHERE allocated_until < $1",
                $lock
            )
        };
    }
    match D::LOCKS_ROWS {
        true => release!(
            " AND phone_id IN (SELECT phone_id FROM phones WHERE allocated_until < $1 \
              ORDER BY phone_id FOR UPDATE)"
        ),
        false => release!(""),
    }
}

/// What a sign check reads of its session ([`IssuedAccessRow`]).
macro_rules! issued_access_columns {
    () => {
        "session_id, state, ticket_hash, aes_key, auth_ts, verified_at, sign_check_digest"
    };
}
pub(super) use issued_access_columns;

pub(super) async fn issued_access(
    db: &mut impl Sql,
    session_id: &SessionId,
) -> Result<Option<Issued>, StoreError> {
    let sql = concat!(
        "SELECT ",
        issued_access_columns!(),
        " FROM sessions WHERE session_id = $1 AND issued AND ticket_hash IS NOT NULL"
    );
    let row: Option<IssuedAccessRow> = db.fetch_optional(sql, &args![session_id.as_str()]).await?;
    row.map(Issued::try_from).transpose()
}

/// Records each sign check in order; false where its session was no longer in the state it
/// was checked in (the ticket consumed already, the session ended).
pub(super) async fn mark_verified<S: Sql>(
    tx: &mut S,
    verifications: &[Verification],
) -> Result<Vec<bool>, StoreError> {
    let firsts = first_uses::<S>(verifications);
    let mut first = vec![false; verifications.len()];
    firsts.iter().for_each(|f| first[f.place] = true);
    let consumed: HashSet<String> = consume_tickets(tx, &firsts)
        .await?
        .into_iter()
        .map(|(session_id,)| session_id)
        .collect();
    let mut recorded = Vec::with_capacity(verifications.len());
    for (i, v) in verifications.iter().enumerate() {
        recorded.push(match v.admission {
            Admission::FirstUse { .. } => first[i] && consumed.contains(v.session_id.as_str()),
            // After the batch's consumptions, as if each came later in the batch: a
            // reconnect's sign check read its session verified or playing, so no first use
            // in the batch can consume that session's ticket, and what they leave is the
            // same in either order.
            Admission::Reconnect { hold_until } => log_reconnect(tx, v, hold_until).await?,
        });
    }
    Ok(recorded)
}

/// A first use of a ticket: its place in the batch, the sign check, the phone's hold.
#[derive(serde::Serialize)]
struct FirstUse<'a> {
    #[serde(skip)]
    place: usize,
    session_id: &'a str,
    now: i64,
    digest: &'a str,
    hold_until: i64,
}

/// The first use of each session's ticket in the batch: a later one of the same session
/// finds the ticket consumed, as it did one by one. Times as the statement's JSON carries
/// them ([`Sql::json_time`]).
fn first_uses<S: Sql>(verifications: &[Verification]) -> Vec<FirstUse<'_>> {
    let mut seen = HashSet::new();
    let firsts = verifications
        .iter()
        .enumerate()
        .filter_map(|(place, v)| match v.admission {
            Admission::FirstUse { hold_until } => Some(FirstUse {
                place,
                session_id: v.session_id.as_str(),
                now: S::json_time(v.now),
                digest: v.digest.as_str(),
                hold_until: S::json_time(hold_until),
            }),
            Admission::Reconnect { .. } => None,
        });
    firsts.filter(|f| seen.insert(f.session_id)).collect()
}

/// Consumes the tickets of `firsts` in one statement, holding each consumed session's
/// phone (the one minting held for it) until its hold; the sessions it consumed.
async fn consume_tickets<S: Sql>(
    tx: &mut S,
    firsts: &[FirstUse<'_>],
) -> Result<Vec<(String,)>, StoreError> {
    if firsts.is_empty() {
        return Ok(Vec::new());
    }
    let batch = serde_json::to_string(firsts).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let sql = match S::MULTI_STATEMENT {
        true => CONSUME_TICKETS_SQLITE,
        false => CONSUME_TICKETS_POSTGRES,
    };
    Ok(tx.fetch_all(sql, &args![batch.as_str()]).await?)
}

/// The phones first, while their sessions are still `minted`, then the sessions: the
/// same condition picks both, in the one writer's transaction. `$1` as in
/// [`CONSUME_TICKETS_POSTGRES`], times in epoch milliseconds.
const CONSUME_TICKETS_SQLITE: &str = "\
    UPDATE phones SET allocated_until = b.hold_until \
    FROM (SELECT value ->> 'session_id' AS session_id, value ->> 'hold_until' AS hold_until \
        FROM json_each($1)) AS b, sessions \
    WHERE sessions.session_id = b.session_id AND sessions.state = 'minted' \
      AND phones.phone_id = sessions.phone_id AND phones.allocated_session_id = b.session_id; \
    UPDATE sessions SET state = 'verified', verified_at = b.now, \
      sign_check_digest = b.digest, hold_until = b.hold_until, updated_at = b.now \
    FROM (SELECT value ->> 'session_id' AS session_id, value ->> 'now' AS now, \
        value ->> 'digest' AS digest, value ->> 'hold_until' AS hold_until \
      FROM json_each($1)) AS b \
    WHERE sessions.session_id = b.session_id AND sessions.state = 'minted' \
    RETURNING sessions.session_id";

/// `$1`: a JSON array of [`FirstUse`], times in epoch microseconds. The phones' update
/// reads what the sessions' update returns, so it holds only phones whose ticket was
/// consumed here, locking sessions before phones as every writer does.
///
/// The sessions are named twice: the join alone left the plan to the planner's guesses (100
/// rows from `json_array_elements`; on a book that grew faster than autovacuum analysed it,
/// few sessions in all), and in a flash crowd on a fresh book it scanned every minted session
/// for each round: 22 ms a round, the most expensive statement of the run
/// (`pg_stat_statements`; docs/benchmarks.md). `= ANY(ARRAY(…))` gives it the primary key to
/// start from whatever it believes (bench/scaling/ticket_consume.sql).
const CONSUME_TICKETS_POSTGRES: &str = "\
    WITH b AS (SELECT value ->> 'session_id' AS session_id, value ->> 'digest' AS digest, \
        to_timestamp(0) + (value ->> 'now')::bigint * interval '1 microsecond' AS now, \
        to_timestamp(0) + (value ->> 'hold_until')::bigint * interval '1 microsecond' \
          AS hold_until \
      FROM json_array_elements($1::json)), \
    consumed AS (UPDATE sessions SET state = 'verified', verified_at = b.now, \
        sign_check_digest = b.digest, hold_until = b.hold_until, updated_at = b.now \
      FROM b WHERE sessions.session_id = ANY(ARRAY(SELECT session_id FROM b)) \
        AND sessions.session_id = b.session_id AND sessions.state = 'minted' \
      RETURNING sessions.session_id, sessions.phone_id, b.hold_until), \
    held AS (UPDATE phones SET allocated_until = consumed.hold_until FROM consumed \
      WHERE phones.phone_id = consumed.phone_id \
        AND phones.allocated_session_id = consumed.session_id) \
    SELECT session_id FROM consumed";

/// Status 2 and outcome `admitted` (migration 0006): a sign check, not a chapter 6 event.
/// Inserted only while the session is live, so a quit committed since the sign check read
/// it wins. A reconnect before the enter (the session still `verified`) moves the enter's
/// deadline as the first use set it: the player is connected again, and the hold lapsing
/// under them would expire the session and give the phone to the next player.
async fn log_reconnect<D: Sql>(
    tx: &mut D,
    v: &Verification,
    hold_until: UtcTime,
) -> Result<bool, StoreError> {
    let session_id = v.session_id.as_str();
    let logged = tx.execute(reconnect_sql::<D>(), &args![session_id, v.now]).await? == 1;
    if logged {
        let args = args![session_id, hold_until];
        let session = "UPDATE sessions SET hold_until = $2 \
                       WHERE session_id = $1 AND state = 'verified' AND hold_until < $2";
        tx.execute(session, &args).await?;
        // By the session's phone: `allocated_session_id` has no index of its own.
        let phone = "UPDATE phones SET allocated_until = $2 \
                     WHERE phone_id = (SELECT phone_id FROM sessions WHERE session_id = $1) \
                       AND allocated_session_id = $1 AND allocated_until < $2";
        tx.execute(phone, &args).await?;
    }
    Ok(logged)
}

/// On PostgreSQL the line carries its session's creation time, the event log's partition
/// key (0014).
fn reconnect_sql<D: Sql>() -> &'static str {
    macro_rules! reconnect {
        ($key:literal, $value:literal) => {
            concat!(
                "INSERT INTO session_events (session_id, status, phone_id, app_id, event_time, \
                   outcome, received_at",
                $key,
                ") SELECT session_id, 2, phone_id, app_id, $2, 'admitted', $2",
                $value,
                " FROM sessions WHERE session_id = $1 AND state IN ('verified', 'playing')"
            )
        };
    }
    match D::LOCKS_ROWS {
        true => reconnect!(", session_created_at", ", created_at"),
        false => reconnect!("", ""),
    }
}
