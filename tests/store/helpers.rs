//! Set-up for the store contract suite: a fresh SQLite file or PostgreSQL database per test,
//! opened with `cphub::store::connect` and migrated, and the few functions that build ids,
//! events and requests and call the `Store` methods that take ids.
//!
//! Every construction of a domain value and every id-taking call lives here, so that a
//! change of the `Store` signatures (ids as `SessionId`/`PhoneId`, enums for strings) is a
//! handful of edits in this file, not in every test. Tests name things with plain `&str`
//! and compare ids through `to_string()`, which reads the same for `String` and the id
//! types.
//!
//! `Backend`, `backend_tests!`, `postgres_available()` and `TestDb` are the HTTP suite's own,
//! from tests/common/db.rs.

use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

use cphub::access::{Issued, MintedAccess, Rules, Sealed, SignCheck, Ticket};
use cphub::config::Settings;
use cphub::domain::{
    Action, AppId, EventKind, GameEvent, Heartbeat, Outcome as RecoveryOutcome, PhoneId, Reason,
    Session, SessionId, UserId, UtcTime,
};
use cphub::store::MintTimes;
use cphub::store::{
    Admission, Allocation, Applied, ApplyRules, AttemptRecord, Claim, ControlPlanePhone,
    EventOutcome, MintRequest, NewRecovery, Phone, PresentedSignCheck, ReceivedEvent,
    SignCheckOutcome, Store, Verification,
};

#[path = "../common/db.rs"]
mod db;
pub use db::{
    Backend, TestDb, lock_waiters, postgres_available, run_scenario, sqlx_connect,
    wait_for_lock_waiters, within,
};

/// A migrated store on a fresh database; derefs to the `Store` under test.
pub struct TestStore {
    store: Arc<dyn Store>,
    _db: TestDb,
}

impl Deref for TestStore {
    type Target = dyn Store;

    fn deref(&self) -> &Self::Target {
        &*self.store
    }
}

impl TestStore {
    /// The database's URL, for a test's own connection beside the store.
    pub fn url(&self) -> &str {
        &self._db.url
    }

    /// The store as an `Arc`, to hand to spawned tasks.
    pub fn shared(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store)
    }
}

/// Whatever holds the store under test: a [`TestStore`], or an `Arc` of it in a task.
pub trait Book: Deref<Target = dyn Store> + Send + Sync {}

impl<T: Deref<Target = dyn Store> + Send + Sync> Book for T {}

pub async fn open(backend: Backend) -> TestStore {
    open_on(TestDb::new(backend).await).await
}

/// A store on `db`, migrated: for a database set up before cphub first connects to it.
pub async fn open_on(db: TestDb) -> TestStore {
    let settings = Settings::with_overrides(&format!("[database]\nurl = \"{}\"\n", db.url))
        .expect("test settings");
    let store = cphub::store::connect(&settings.database)
        .await
        .expect("store opens");
    store.migrate().await.expect("migrations run");
    TestStore { store, _db: db }
}

// ---- times -------------------------------------------------------------------------------

/// `"19:00:00"` is that time on the suite's day; a full RFC 3339 time is taken as is.
pub fn at(time: &str) -> UtcTime {
    let raw = if time.contains('T') {
        time.to_owned()
    } else {
        format!("2024-05-01T{time}Z")
    };
    UtcTime::parse("time", &raw).expect("valid test time")
}

// ---- ids ---------------------------------------------------------------------------------

pub const APP: &str = "com.example.game";

/// How long a phone's heartbeats may name no session before its playing session counts as
/// gone (chapter 6.4): the watchdog passes `fleet`'s stale time, 15 s by default.
pub const GAME_GONE_AFTER: std::time::Duration = std::time::Duration::from_secs(15);

pub fn sid(id: &str) -> SessionId {
    SessionId::parse("session_id", id.to_owned()).expect("valid session id")
}

pub fn pid(id: &str) -> PhoneId {
    PhoneId::parse("phone_id", id.to_owned()).expect("valid phone id")
}

pub fn aid(id: &str) -> AppId {
    AppId::parse("app_id", id.to_owned()).expect("valid app id")
}

// ---- events ------------------------------------------------------------------------------

/// A delivery of an event of `APP`, received by cphub two seconds after the phone's `time`.
pub fn event(
    kind: EventKind,
    session: &str,
    phone: &str,
    time: &str,
    run_time: Option<i64>,
) -> ReceivedEvent {
    let time = at(time);
    ReceivedEvent {
        event: GameEvent {
            kind,
            session_id: sid(session),
            phone_id: pid(phone),
            app_id: aid(APP),
            time,
            run_time,
            error_msg: None,
        },
        received_at: time.plus(std::time::Duration::from_secs(2)),
    }
}

/// 6.2: status 0.
pub fn enter(session: &str, phone: &str, time: &str) -> ReceivedEvent {
    event(EventKind::Enter, session, phone, time, None)
}

/// 6.3: status 1, with the reported run_time.
pub fn quit(session: &str, phone: &str, time: &str, run_time: i64) -> ReceivedEvent {
    event(EventKind::Quit, session, phone, time, Some(run_time))
}

/// The same delivery arriving again at another time of cphub's clock.
pub fn redelivered(delivery: &ReceivedEvent, received_at: &str) -> ReceivedEvent {
    ReceivedEvent {
        event: delivery.event.clone(),
        received_at: at(received_at),
    }
}

pub const TOLERANCE_SECS: u32 = 60;

/// Direct mode: sessions cphub did not mint are recorded from their first event.
pub async fn apply(store: &impl Book, events: &[ReceivedEvent]) -> Vec<Applied> {
    apply_with(store, events, true).await
}

/// Issued mode: events of sessions cphub did not mint are ignored.
pub async fn apply_minted_only(store: &impl Book, events: &[ReceivedEvent]) -> Vec<Applied> {
    apply_with(store, events, false).await
}

async fn apply_with(
    store: &impl Book,
    events: &[ReceivedEvent],
    record_unknown_sessions: bool,
) -> Vec<Applied> {
    let rules = ApplyRules {
        run_time_tolerance_secs: TOLERANCE_SECS,
        record_unknown_sessions,
    };
    let applied = store
        .apply_events(events, rules)
        .await
        .expect("events apply");
    assert_eq!(applied.len(), events.len(), "one result per delivery");
    applied
}

pub fn outcomes(applied: &[Applied]) -> Vec<EventOutcome> {
    applied.iter().map(|a| a.outcome).collect()
}

// ---- reading the book --------------------------------------------------------------------

pub async fn session(store: &impl Book, id: &str) -> Option<Session> {
    store.session(&sid(id)).await.expect("session reads")
}

/// One line of a session's event log, as behaviour: which event, what became of it, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub kind: EventKind,
    pub outcome: EventOutcome,
    pub time: UtcTime,
    pub run_time: Option<i64>,
    pub received_at: UtcTime,
}

/// The session's event log; empty when the session is not in the book.
pub async fn event_log(store: &impl Book, id: &str) -> Vec<LogLine> {
    let Some(session) = session(store, id).await else {
        return Vec::new();
    };
    let records = store
        .session_events(&session)
        .await
        .expect("event log reads");
    records
        .into_iter()
        .map(|r| LogLine {
            kind: match r.kind.as_str() {
                "enter" => EventKind::Enter,
                "quit" => EventKind::Quit,
                other => panic!("unknown event kind in the log: {other}"),
            },
            outcome: match r.outcome.as_str() {
                "accepted" => EventOutcome::Accepted,
                "conflict" => EventOutcome::Conflict,
                "duplicate" => EventOutcome::Duplicate,
                "ignored" => EventOutcome::Ignored,
                other => panic!("unknown outcome in the log: {other}"),
            },
            time: r.time,
            run_time: r.run_time,
            received_at: r.received_at,
        })
        .collect()
}

pub async fn phone(store: &impl Book, id: &str, fresh_since: UtcTime) -> Option<Phone> {
    store
        .phone(&pid(id), fresh_since)
        .await
        .expect("phone reads")
}

/// The phone's state as the operator sees it (idle, allocated, occupied, stale, …).
pub async fn phone_state(store: &impl Book, id: &str, fresh_since: UtcTime) -> String {
    let phone = phone(store, id, fresh_since).await.expect("phone is known");
    phone.state.to_string()
}

/// An optional id (session or phone) as text, whatever its type.
pub fn text<T: ToString>(id: &Option<T>) -> Option<String> {
    id.as_ref().map(ToString::to_string)
}

// ---- heartbeats --------------------------------------------------------------------------

/// A heartbeat the phone sent at `time` (its clock), playing `session` of `APP` or idle,
/// that cphub received at `received_at` (its clock).
pub fn heartbeat(phone: &str, time: &str, session: Option<&str>, received_at: &str) -> Heartbeat {
    Heartbeat {
        phone_id: pid(phone),
        time: at(time),
        session_id: session.map(sid),
        app_id: session.map(|_| aid(APP)),
        received_at: at(received_at),
    }
}

pub async fn record(store: &impl Book, heartbeats: &[Heartbeat]) {
    store
        .record_heartbeats(heartbeats)
        .await
        .expect("heartbeats record");
}

/// Records webhook attempts the way the dispatcher does, in a claim's transaction, with a
/// claim that takes nothing (`limit` 0), so a test chooses when deliveries are claimed.
pub async fn record_attempts(store: &impl Book, attempts: &[AttemptRecord], now: &str) {
    let claim = Claim {
        endpoint: "billing",
        now: at(now),
        lease_until: at(now),
        by: "recorder",
        limit: 0,
        recording: attempts,
    };
    let claimed = store.claim_webhook_deliveries(&claim).await;
    assert!(
        claimed.expect("attempts record").is_empty(),
        "limit 0 claims nothing"
    );
}

/// Makes the phones known and idle: one idle heartbeat each, sent and received at `time`.
pub async fn idle_phones(store: &impl Book, phones: &[&str], time: &str) {
    let beats: Vec<_> = phones
        .iter()
        .map(|p| heartbeat(p, time, None, time))
        .collect();
    record(store, &beats).await;
}

// ---- minting and sign checks -------------------------------------------------------------

/// A mint of `session` for `APP` and player `u-1`, optionally pinned to a phone.
pub struct Mint<'a> {
    pub session: &'a str,
    pub pinned: Option<&'a str>,
    pub now: &'a str,
    pub hold_until: &'a str,
    /// Phones not heard from since then are stale.
    pub fresh_since: &'a str,
}

pub const USER: &str = "u-1";

pub fn mint_request(m: &Mint<'_>) -> MintRequest {
    let mut access = MintedAccess::mint(Settings::with_overrides("").unwrap().access.cipher);
    access.session_id = sid(m.session).to_string();
    MintRequest {
        access,
        app_id: AppId::parse("app_id", APP.to_owned()).unwrap(),
        user_id: UserId::parse("user_id", USER.to_owned()).unwrap(),
        pinned_phone: m.pinned.map(pid),
        auth_ts: at(m.hold_until).epoch_millis(),
        hold_until: at(m.hold_until),
        now: at(m.now),
        fresh_since: at(m.fresh_since),
        match_app: false,
        key: None,
    }
}

/// A mint at 19:00 on phones heard from at 18:59, holding until 19:01, fresh since 18:58.
pub fn at_seven(session: &str) -> Mint<'_> {
    Mint {
        session,
        pinned: None,
        now: "19:00:00",
        hold_until: "19:01:00",
        fresh_since: "18:58:00",
    }
}

/// Mint times of the queue: at 19:00, fresh since 18:58, held until 19:02:05; no app
/// knowledge (the phones of these tests are not synced from a control plane).
pub fn mint_times() -> MintTimes {
    MintTimes {
        now: at("19:00:00"),
        fresh_since: at("18:58:00"),
        auth_ts: at("19:02:00").epoch_millis(),
        hold_until: at("19:02:05"),
        match_app: false,
    }
}

pub async fn mint(store: &impl Book, m: Mint<'_>) -> Allocation {
    store
        .mint_session(&mint_request(&m))
        .await
        .expect("mint runs")
}

/// The phone a mint allocated, or None when it refused.
pub fn allocated(allocation: &Allocation) -> Option<String> {
    match allocation {
        Allocation::Allocated { phone_id, .. } => Some(phone_id.to_string()),
        _ => None,
    }
}

pub async fn issued(store: &impl Book, session: &str) -> Option<Issued> {
    store
        .issued_access(&sid(session))
        .await
        .expect("access reads")
}

/// A first successful sign check of `session` at `now`, holding its phone until `hold_until`.
pub fn verification(session: &str, digest: &str, now: &str, hold_until: &str) -> Verification {
    Verification {
        session_id: sid(session),
        digest: digest.to_owned(),
        now: at(now),
        admission: Admission::FirstUse {
            hold_until: at(hold_until),
        },
    }
}

/// The ticket of `session` presented again at `now` (a client reconnecting), asking for no
/// longer hold than the session has.
pub fn reconnect(session: &str, now: &str) -> Verification {
    reconnect_holding(session, now, now)
}

/// As [`reconnect`], holding the phone of a session not entered yet until `hold_until`.
pub fn reconnect_holding(session: &str, now: &str, hold_until: &str) -> Verification {
    Verification {
        session_id: sid(session),
        digest: format!("reconnect at {now}"),
        now: at(now),
        admission: Admission::Reconnect {
            hold_until: at(hold_until),
        },
    }
}

pub async fn mark_verified(store: &impl Book, verifications: &[Verification]) -> Vec<bool> {
    store
        .mark_verified(verifications)
        .await
        .expect("sign checks record")
}

/// Mints `session` as [`at_seven`] does; its ticket and key.
pub async fn minted(store: &impl Book, session: &str) -> MintedAccess {
    let request = mint_request(&at_seven(session));
    store.mint_session(&request).await.expect("mint runs");
    request.access
}

/// `minted`'s ticket presented with the mint's `auth_ts` and no `encrypted_data`; `nonce`
/// tells requests apart (the same nonce: an identical request).
pub fn presented(minted: &MintedAccess, nonce: &str) -> SignCheck {
    let ticket = Ticket::presented(minted.ticket.expose().to_owned()).unwrap();
    let auth_ts = at(at_seven("").hold_until).epoch_millis();
    SignCheck::new(ticket, auth_ts, Sealed::Absent, [nonce, ""])
}

/// `check` presented for `session` at 19:00:10, a first use holding its phone until 19:03.
pub fn sign_check(session: &str, check: SignCheck) -> PresentedSignCheck {
    PresentedSignCheck {
        session_id: sid(session),
        presented: check,
        now: at("19:00:10"),
        hold_until: at("19:03:00"),
    }
}

/// `checks` decided as one batch, with `access.reconnect` set to `reconnect`.
pub async fn check_signs(
    store: &impl Book,
    checks: &[PresentedSignCheck],
    reconnect: &str,
) -> Vec<SignCheckOutcome> {
    let settings = Settings::with_overrides(&format!("[access]\nreconnect = \"{reconnect}\"\n"));
    let rules = Rules::from(&settings.unwrap().effective_access());
    store
        .check_signs(checks, &rules)
        .await
        .expect("sign checks decide")
}

pub async fn release_lapsed_holds(store: &impl Book, now: &str) -> u64 {
    store
        .release_lapsed_holds(at(now))
        .await
        .expect("holds release")
}

// ---- the fleet and the recovery log ------------------------------------------------------

/// Phone sync (chapter 4.3.1) of `phones` as `(phone, server)`, all running, listed and
/// written at `time`.
pub async fn sync(store: &impl Book, phones: &[(&str, &str)], time: &str) {
    sync_begun(store, phones, time, time).await;
}

/// As [`sync`], for a listing begun at `began` and written at `time`.
pub async fn sync_begun(store: &impl Book, phones: &[(&str, &str)], began: &str, time: &str) {
    let listed: Vec<ControlPlanePhone> = (phones.iter())
        .map(|(phone, server)| ControlPlanePhone {
            phone_id: phone.to_string(),
            phone_name: format!("name-{phone}"),
            server_id: server.to_string(),
            status: 2,
            ..ControlPlanePhone::default()
        })
        .collect();
    let synced = store.sync_phones(&listed, at(began), at(time)).await;
    synced.expect("sync");
}

/// A server incident (reason `server_incident`, action `hold`, outcome `open`) of `server`.
pub fn server_incident(server: &str, time: &str) -> NewRecovery {
    NewRecovery {
        phone_id: pid(server),
        reason: Reason::ServerIncident,
        action: Action::Hold,
        dry_run: false,
        outcome: RecoveryOutcome::Open,
        error: None,
        started_at: at(time),
        ended_at: None,
        detail: Some(format!("{server} went dark")),
        phone_state: None,
        diagnostics: Default::default(),
        unheard_since: None,
        in_flight_cap: None,
    }
}

// ---- older schemas -----------------------------------------------------------------------

/// The schema as an older cphub left it: every migration below `version`.
pub async fn migrate_before(backend: Backend, url: &str, version: i64) {
    let mut migrator = match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    let before: Vec<_> = (migrator.iter())
        .filter(|m| m.version < version)
        .cloned()
        .collect();
    migrator.migrations = before.into();
    let ran = match backend {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).expect("test url");
            let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true)).await;
            migrator.run(&pool.expect("test database")).await
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.expect("test database");
            migrator.run(&pool).await
        }
    };
    ran.unwrap_or_else(|e| panic!("migrations before {version}: {e}"));
}

/// Today's code writes each event with its session's creation time, the event log's
/// partition key on PostgreSQL (0014), and names it in its conflict target: an event log
/// older than 0014 is given the column and that key, as 0014 would, so that today's code
/// can play an old book; and the function its event batch reads accepted events through
/// (0030, which replaces it when the book's own migrations reach it).
pub async fn given_todays_event_key(backend: Backend, url: &str) {
    use sqlx::Executor;
    if backend == Backend::Sqlite {
        return;
    }
    let pool = sqlx::PgPool::connect(url).await.expect("test database");
    pool.execute(
        "ALTER TABLE session_events ADD COLUMN session_created_at TIMESTAMPTZ NOT NULL \
           DEFAULT '-infinity'; \
         CREATE UNIQUE INDEX session_events_once_by_key \
           ON session_events (session_id, status, session_created_at) \
           WHERE outcome = 'accepted'",
    )
    .await
    .expect("the event key");
    pool.execute(include_str!(
        "../../migrations/postgres/0030_accepted_events_read_from_their_partitions.sql"
    ))
    .await
    .expect("the accepted events' read");
}

/// Today's code writes a quit's phone with `heartbeat_ended_session_id` (0023): an old book
/// is lent the column while today's code plays it (`lent` true), and gives it back before
/// its own migrations run (`lent` false), which add it as 0023 would.
pub async fn lend_todays_phone_column(backend: Backend, url: &str, lent: bool) {
    let sql = match lent {
        true => "ALTER TABLE phones ADD COLUMN heartbeat_ended_session_id TEXT",
        false => "ALTER TABLE phones DROP COLUMN heartbeat_ended_session_id",
    };
    let done = raw_execute(backend, url, sql).await;
    done.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Runs `sql` on the book at `url` from a connection of its own, past the store: what the
/// database itself accepts or refuses.
pub async fn raw_execute(backend: Backend, url: &str, sql: &str) -> Result<(), sqlx::Error> {
    use sqlx::Executor;
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(url).await.expect("test database");
            pool.execute(sqlx::AssertSqlSafe(sql.to_owned()))
                .await
                .map(drop)
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(url).await.expect("test database");
            pool.execute(sqlx::AssertSqlSafe(sql.to_owned()))
                .await
                .map(drop)
        }
    }
}

/// Numbers drawn from `seed`: `next(n)` is one below `n`. Xorshift: the suite needs no
/// random crate, and a seed gives the same draws on every run.
pub fn draws(seed: u64) -> impl FnMut(u64) -> u64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    }
}
