//! The session book: one [`Store`] trait, a SQLite and a PostgreSQL backend, picked from the
//! `database.url` scheme. Each backend has its own migrations under `migrations/`. The SQL
//! both share is `book.rs`, written once over `sql::Sql`; a backend implements only what
//! differs (`backend::Backend`), and one blanket implementation makes every backend a
//! [`Store`] (docs/architecture.md "Inside the store").
//!
//! Writes reach the store through adaptors that decide how often it is touched:
//! the [`Writers`] commit enter/quit events, sign-check ticket consumptions and mints in
//! groups, every kind of a round in one transaction, [`HeartbeatBuffer`] coalesces heartbeats
//! in memory and flushes them in batches.

mod audit;
mod backend;
mod book;
mod codec;
mod encode;
mod event_batch;
mod filter;
mod group_commit;
mod heartbeat_buffer;
mod log_sync;
mod mint_batch;
mod outbox;
mod pause;
mod periodic;
mod phone_marks;
mod postgres;
mod postgres_analyze;
mod postgres_heartbeats;
mod queue;
mod retention;
mod round;
mod rollout;
mod sign_check_batch;
mod sql;
mod sqlite;
mod usage;
mod writers;

use std::sync::Arc;

use async_trait::async_trait;

use crate::access::{AesKey, DataCheck, Issued, MintedAccess, Refusal, Rules, SignCheck, Verdict};
use crate::config::{DatabaseSettings, DatabaseUrl};
use crate::domain::{
    AccessInfo, Action, AppId, Connect, GameEvent, Heartbeat, IdempotencyKey, Outcome, PhoneId,
    QueueId, Reason, RecoveryMark, Session, SessionId, UserId, UtcTime, WebhookEventId,
};
use crate::usage::{UsageQuery, UsageRow};

pub use audit::{AuditFilter, AuditRecord, NewAuditEntry};
use backend::Backend;
pub use codec::{
    Diagnostics, EncodeServer, EventRecord, Phone, PhoneHealth, Recovery, SyncedProperty,
};
pub use filter::{SessionFilter, SessionFilterArgs};
pub use group_commit::{Commit, GroupCommit, QueueMeter, WriterLimits};
pub use heartbeat_buffer::{FlushMeter, HeartbeatBuffer, HeartbeatFlusher, Unchanged};
pub use log_sync::Durable;
pub use outbox::{
    AttemptRecord, AttemptView, Claim, ClaimedDelivery, DeliveryFilter, DeliveryPosition,
    DeliveryView, EndpointBacklog, EndpointFilter, NextStep, OutboxEvent, WebhookBacklog,
};
pub use pause::AccountPause;
pub use phone_marks::{OutOfServiceMark, PausePeriod, PhoneMarks};
pub use postgres::PostgresStore;
pub use queue::{Issue, MintTimes, Joined, NewQueueEntry, QueueEntry, QueueIssue, QueuePass, Seat};
pub use retention::Retention;
pub use round::{Round, RoundDone};
pub use rollout::{NewRollout, Rollout, RolloutPhone, StateChange, StepChange};
pub use sqlite::SqliteStore;
pub use writers::{
    CommitRounds, EventWriter, Job, Minter, TicketWriter, WriteMeters, Write, Writers, Written,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is saturated: worth retrying later.
    #[error("database unavailable (in {op})")]
    Unavailable {
        /// The store operation, e.g. `mint_session` (see [`StoreError::during`]).
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database query failed (in {op})")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database answers but lacks migrations this binary needs: `serve` runs with
    /// `database.migrate_on_start` off and `cphub migrate` has not been run yet.
    #[error("the database schema is at migration {applied}, this binary needs {expected}")]
    NotMigrated { applied: i64, expected: i64 },
    #[error("stored row is invalid: {0}")]
    Corrupt(String),
    #[error("the event writer has stopped")]
    WriterStopped,
    /// Another writer changed what a batch read between its read and its write: on
    /// PostgreSQL, two of one cphub's writers each creating the row of a phone the book had
    /// not seen (the writers retry such a round, `writers::CommitRounds`), or a replica of a
    /// version that did not lock sessions first accepting one of its events. Nothing of the
    /// batch is committed; applied again, it is decided afresh.
    #[error("another writer accepted one of the batch's events first")]
    Raced,
    /// The database stopped answering in the middle of a write (a network dropping packets
    /// answers nothing, not even an error). The write may or may not have committed.
    #[error("database did not answer within {0:?}")]
    TimedOut(std::time::Duration),
    /// A write waited in its writer's queue longer than `database.write_queue_timeout_ms`
    /// and was refused without being tried: nothing of it is written.
    #[error("waited in the write queue longer than {0:?}; not written")]
    QueuedTooLong(std::time::Duration),
    /// Syncing SQLite's write-ahead log failed (`log_sync`): what was committed since the
    /// last good sync may not be on disk. Not worth retrying: every durable write fails
    /// until cphub is restarted.
    #[error("the write-ahead log could not be synced to disk: {0}")]
    LogNotSynced(String),
    /// A recovery or a rollout update was about to be written for a phone that already has
    /// one under way (another replica's request, the watchdog's pass, the rollout engine):
    /// nothing was written, and nothing may be sent. `rollout` names the rollout updating it.
    #[error("phone {phone} already has a recovery or an update under way")]
    PhoneBusy { phone: String, rollout: Option<i64> },
    /// A recovery of a silent phone was about to be written, but the phone has been heard
    /// since (`NewRecovery::unheard_since`): it came back, and may be serving a player.
    /// Nothing was written, and nothing may be sent.
    #[error("phone {0} was heard again; not recovering it")]
    PhoneHeard(String),
    /// A recovery or a rollout update was about to be written while `watchdog.max_in_flight`
    /// (the number given) jobs already run, counted under one lock across replicas: a
    /// watchdog pass, an operator's request and the rollout engine each checked the cap on
    /// their own read, seconds earlier. Nothing was written, and nothing may be sent.
    #[error("{0} recovery and update jobs are already running (watchdog.max_in_flight)")]
    InFlightCap(usize),
}

/// What a database error carries until the store names the operation it happened in.
const UNNAMED: &str = "unnamed operation";

impl StoreError {
    /// Names the store operation this error happened in, unless an inner one already did.
    pub fn during(self, op: &'static str) -> StoreError {
        match self {
            StoreError::Unavailable {
                op: UNNAMED,
                source,
            } => StoreError::Unavailable { op, source },
            StoreError::Query {
                op: UNNAMED,
                source,
            } => StoreError::Query { op, source },
            other => other,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. }
                | StoreError::WriterStopped
                | StoreError::TimedOut(_)
                | StoreError::QueuedTooLong(_)
        )
    }

    /// Whether the client should simply send the request again (503 with `Retry-After`):
    /// the database is away, or a race left nothing committed and a redelivery will be
    /// decided afresh.
    pub fn is_retryable(&self) -> bool {
        self.is_unavailable() || matches!(self, StoreError::Raced)
    }
}

/// Runs a write within `limit` (`database.write_timeout_ms`). Without it a silent network
/// would hold the single writer, and every request queued behind it, until the kernel gives
/// up on the connection — many minutes. Dropping the write mid-way is safe: the
/// transaction never commits, or it did and its redelivery is recognised as a duplicate.
pub async fn within<T>(
    limit: std::time::Duration,
    write: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, write)
        .await
        .unwrap_or(Err(StoreError::TimedOut(limit)))
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_transient(&e) {
            StoreError::Unavailable {
                op: UNNAMED,
                source: e,
            }
        } else {
            StoreError::Query {
                op: UNNAMED,
                source: e,
            }
        }
    }
}

/// Errors that say "not now" rather than "never": connection trouble, a full pool, a busy
/// SQLite file, a PostgreSQL shutting down or refusing connections.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        // Protocol: a connection cut mid-handshake (a restarting server, a proxy or load
        // balancer dropping it) reads as garbage, not as a query that can never work.
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // SQLite: 5 BUSY, 6 LOCKED. PostgreSQL: class 08 connection, 53 resources,
            // 57P0x operator intervention (shutdown, crash recovery), and 40P01 / 40001:
            // a deadlock (the heartbeat flush locks phones then sessions, event batches
            // sessions then phones) or serialization failure aborts one side, which is
            // simply sent again.
            matches!(code.as_ref(), "5" | "6" | "517" | "262" | "40P01" | "40001")
                || code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
        }),
        _ => false,
    }
}

/// What applying one delivery of an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventOutcome {
    /// First delivery: the session changed.
    Accepted,
    /// Same event again: nothing changed.
    Duplicate,
    /// Same session and status but different facts: logged, not applied.
    Conflict,
    /// A session cphub did not mint, with `callbacks.record_unknown_sessions` off.
    Ignored,
}

/// How events are applied (from `callbacks.*`).
#[derive(Debug, Clone, Copy)]
pub struct ApplyRules {
    pub run_time_tolerance_secs: u32,
    pub record_unknown_sessions: bool,
}

/// A session to mint and the phone to hold for it.
#[derive(Debug)]
pub struct MintRequest {
    pub access: MintedAccess,
    pub app_id: AppId,
    pub user_id: UserId,
    /// Allocate exactly this phone, if free.
    pub pinned_phone: Option<PhoneId>,
    /// Ticket expiry as issued: epoch ms.
    pub auth_ts: i64,
    /// The phone is held until then unless the sign check extends it.
    pub hold_until: UtcTime,
    pub now: UtcTime,
    /// Phones not heard from since then are stale and not allocated.
    pub fresh_since: UtcTime,
    /// Take only a phone the book knows has `app_id` deployed (`phone_apps`, from phone
    /// sync): `Settings::matches_apps`, off without a control plane (the only source of that
    /// knowledge) and with `access.match_app = false`. A pinned phone is taken as asked
    /// either way.
    pub match_app: bool,
    /// The request's `Idempotency-Key`, recorded in the mint's own transaction.
    pub key: Option<MintKey>,
}

/// An `Idempotency-Key` as a mint records it.
#[derive(Debug, Clone)]
pub struct MintKey {
    pub key: IdempotencyKey,
    /// Identifies the request's content (SHA-256 hex): the same key with another is refused.
    pub request_hash: String,
    /// The key is forgotten then (`access.idempotency_ttl_secs` after the mint).
    pub expires_at: UtcTime,
}

/// The answer of an earlier mint with the same key and request, to be sent again.
#[derive(Debug)]
pub struct MintAnswer {
    pub access: MintedAccess,
    pub auth_ts: i64,
    pub phone_id: PhoneId,
    pub connect: Connect,
}

/// Two replays are the same answer; the ticket is compared by its hash, in constant time.
impl PartialEq for MintAnswer {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        let tickets = (self.access.ticket.hash_hex().as_bytes())
            .ct_eq(other.access.ticket.hash_hex().as_bytes());
        bool::from(tickets)
            && self.access.session_id == other.access.session_id
            && self.auth_ts == other.auth_ts
            && self.phone_id == other.phone_id
            && self.connect == other.connect
    }
}

impl Eq for MintAnswer {}

/// An application deployed on a phone (chapter 5.1.2, Table 5-4), as the book keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PhoneApp {
    #[serde(skip)]
    pub phone_id: PhoneId,
    pub app_id: AppId,
    pub app_version_id: Option<String>,
    pub version_code: Option<String>,
    pub version_name: Option<String>,
}

/// A phone as the control plane lists it (chapter 4.3.1), the part the book keeps.
#[derive(Debug, Clone, Default)]
pub struct ControlPlanePhone {
    pub phone_id: String,
    pub phone_name: String,
    pub server_id: String,
    pub status: i32,
    /// The list's `update_time`.
    pub update_time: Option<String>,
    /// From the phone's detail (4.3.2), when this sync read it; None keeps what the book has.
    pub access: Option<Vec<AccessInfo>>,
    /// The detail's `property` (appendix A.1), when this sync read it and it had one; None
    /// keeps what the book has. A reset falls back to it when the phone cannot be read.
    pub property: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Allocation {
    Allocated {
        phone_id: PhoneId,
        connect: Connect,
    },
    NoFreePhone,
    PhoneBusy,
    UnknownPhone,
    /// The key was minted with before, with the same request: that answer again.
    Replayed(Box<MintAnswer>),
    /// The key was minted with before, with another request.
    KeyReused,
}

/// What applying one delivery did, and the session after it when it was accepted.
#[derive(Debug, Clone)]
pub struct Applied {
    pub outcome: EventOutcome,
    pub session: Option<Session>,
}

/// The states a phone can be in as the operator sees it (see `book::phone_state_sql!`):
/// `unavailable` is a control-plane status in transition or failed, `out_of_service` one
/// the phone is out of service in (chapter 4.3.1; docs/operations.md has the table),
/// `draining` one a rollout took from allocation, `unlisted` one the control plane no longer
/// lists (migration 0033).
pub const PHONE_STATES: [&str; 10] = [
    "idle",
    "allocated",
    "occupied",
    "stale",
    "unavailable",
    "out_of_service",
    "recovering",
    "broken",
    "draining",
    "unlisted",
];

/// A decision to log (see `recoveries` in the migration).
#[derive(Debug, Clone)]
pub struct NewRecovery {
    pub phone_id: PhoneId,
    pub reason: Reason,
    pub action: Action,
    pub dry_run: bool,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub started_at: UtcTime,
    pub ended_at: Option<UtcTime>,
    /// What else was done or seen (the properties a reset re-applied; why it was skipped).
    pub detail: Option<String>,
    /// `recovering` or `broken` to set on the phone, if any.
    pub phone_state: Option<RecoveryMark>,
    /// What the diagnostic commands gave, run right before a reset (chapter 4.7.5).
    pub diagnostics: Diagnostics,
    /// A pending recovery of a phone because it fell silent: refused
    /// ([`StoreError::PhoneHeard`]) when the phone was heard at or after this, i.e. it came
    /// back while the recovery was being prepared (the re-read, a reset's diagnostics).
    pub unheard_since: Option<UtcTime>,
    /// A pending recovery: refused ([`StoreError::InFlightCap`]) when this many recovery
    /// and rollout update jobs already run (`watchdog.max_in_flight`).
    pub in_flight_cap: Option<usize>,
}

/// An encoding server as the control plane lists it (chapter 4.6.1), to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneEncodeServer {
    pub encode_server_id: String,
    pub encode_server_name: String,
    pub server_id: String,
    pub server_type: i32,
    pub status: i32,
}

#[derive(Debug, Clone)]
pub struct FinishedRecovery {
    pub id: i64,
    pub outcome: Outcome,
    pub request_id: Option<String>,
    pub job_id: Option<String>,
    pub error: Option<String>,
    pub ended_at: UtcTime,
}

/// What a replica leads: each role has its own lease, so the watchdog and the retention of
/// the book may be led by different replicas, and neither waits for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Watchdog,
    Retention,
    /// Closing abandoned sessions (`watchdog::Abandonment`).
    Abandonment,
}

/// Being the one replica that acts in a [`Role`]. Held until dropped or until the
/// connection that holds it is lost.
#[async_trait]
pub trait Lease: Send {
    async fn held(&mut self) -> bool;
}

/// A sign check as presented, decided and recorded in the ticket writer's batch (see
/// [`Store::check_signs`]).
pub struct PresentedSignCheck {
    pub session_id: SessionId,
    pub presented: SignCheck,
    pub now: UtcTime,
    /// How long a first use holds the session's phone.
    pub hold_until: UtcTime,
}

/// A decided sign check: what `encrypted_data` showed, and the verdict with the session's
/// key to answer, or the refusal.
pub struct SignCheckOutcome {
    pub data: Option<DataCheck>,
    pub verdict: Result<(Verdict, AesKey), Refusal>,
}

/// A successful sign check to be recorded (see [`Store::mark_verified`]).
#[derive(Debug, Clone)]
pub struct Verification {
    pub session_id: SessionId,
    /// Identifies the request, so an identical retry can be told from a replay.
    pub digest: String,
    pub now: UtcTime,
    pub admission: Admission,
}

/// What a successful sign check records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The first: the ticket is consumed and the phone held until `hold_until`.
    FirstUse { hold_until: UtcTime },
    /// The ticket again while the session is live (a client reconnecting): a `reconnect`
    /// line in the session's event log; before the enter, the phone is held until
    /// `hold_until` again, as after the first use.
    Reconnect { hold_until: UtcTime },
}

/// An event with the time cphub received it.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    pub event: GameEvent,
    pub received_at: UtcTime,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Cheap round trip for readiness checks: the database answers and holds every
    /// migration this binary embeds ([`StoreError::NotMigrated`] otherwise).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Applies `events` in one transaction (group commit): all commit or none do.
    async fn apply_events(
        &self,
        events: &[ReceivedEvent],
        rules: ApplyRules,
    ) -> Result<Vec<Applied>, StoreError>;

    /// Records the latest heartbeat of each phone (at most one per phone) in one
    /// transaction. Returns the indices of those deferred: on PostgreSQL, the heartbeats
    /// whose session or phone another writer held, skipped rather than waited for (the
    /// caller writes them again later); never any on SQLite, which has one writer.
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<Vec<usize>, StoreError>;

    async fn session(&self, session_id: &SessionId) -> Result<Option<Session>, StoreError>;

    /// Sessions newest first, filtered, after the cursor.
    async fn sessions(
        &self,
        filter: &SessionFilter,
        limit: i64,
    ) -> Result<Vec<Session>, StoreError>;

    /// The event log of `session` (as [`Store::session`] read it), oldest first. Its
    /// creation time finds its events on PostgreSQL, whose log is partitioned by it.
    async fn session_events(&self, session: &Session) -> Result<Vec<EventRecord>, StoreError>;

    /// The phone with its state; phones unheard-of since `fresh_since` are stale.
    async fn phone(
        &self,
        phone_id: &PhoneId,
        fresh_since: UtcTime,
    ) -> Result<Option<Phone>, StoreError>;

    /// Phones in id order after `after` (keyset paging; None: from the first), only those
    /// with `app` deployed when it is given.
    async fn phones(
        &self,
        fresh_since: UtcTime,
        after: Option<&PhoneId>,
        app: Option<&AppId>,
        limit: i64,
    ) -> Result<Vec<Phone>, StoreError>;

    /// The applications deployed on the phone, by app id.
    async fn phone_apps(&self, phone_id: &PhoneId) -> Result<Vec<PhoneApp>, StoreError>;

    /// Phones the watchdog should look at: silent since `fresh_since`, or reported unwell.
    async fn unhealthy_phones(&self, fresh_since: UtcTime) -> Result<Vec<PhoneHealth>, StoreError>;

    /// The number of phones in service (reported running or failed, or not reported yet) on
    /// each server, for servers the control plane named.
    async fn phones_per_server(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Server incidents (reason `server_incident`) still open, oldest first.
    async fn open_incidents(&self) -> Result<Vec<Recovery>, StoreError>;

    /// Server incidents closed at or after `since`, oldest first.
    async fn incidents_closed_since(&self, since: UtcTime) -> Result<Vec<Recovery>, StoreError>;

    /// Ends an open server incident at `ended_at`, adding `note` to its detail.
    async fn close_incident(
        &self,
        id: i64,
        ended_at: UtcTime,
        note: &str,
    ) -> Result<(), StoreError>;

    /// Closes, at their last heartbeat, playing sessions whose game is gone without a quit:
    /// their phone silent since `fresh_since`, or heard from but naming no session (or
    /// another) in its heartbeats for `game_gone_after` since the session's last one
    /// (chapter 6.4). Their phones are free again.
    async fn abandon_sessions(
        &self,
        fresh_since: UtcTime,
        game_gone_after: std::time::Duration,
        now: UtcTime,
    ) -> Result<Vec<Session>, StoreError>;

    /// The recovery log, newest first, optionally of one phone and since a time.
    async fn recoveries(
        &self,
        phone_id: Option<&PhoneId>,
        since: Option<UtcTime>,
        limit: i64,
    ) -> Result<Vec<Recovery>, StoreError>;

    async fn pending_recoveries(&self) -> Result<Vec<Recovery>, StoreError>;

    /// One line of the recovery log, with its diagnostics.
    async fn recovery(&self, id: i64) -> Result<Option<Recovery>, StoreError>;

    /// Replaces the encoding servers with those the control plane listed (chapter 4.6.1).
    async fn sync_encode_servers(
        &self,
        servers: &[ControlPlaneEncodeServer],
        now: UtcTime,
    ) -> Result<(), StoreError>;

    /// The encoding servers as last synced, in id order.
    async fn encode_servers(&self) -> Result<Vec<EncodeServer>, StoreError>;

    async fn start_recovery(&self, recovery: &NewRecovery) -> Result<Recovery, StoreError>;

    /// Notes a recovery's request and job ids; `detail`, when given, replaces its detail.
    async fn note_recovery_job(
        &self,
        id: i64,
        request_id: Option<&str>,
        job_id: Option<&str>,
        detail: Option<&str>,
    ) -> Result<(), StoreError>;

    async fn finish_recovery(&self, finished: &FinishedRecovery) -> Result<(), StoreError>;

    /// Clears `recovering`/`broken` from phones that heartbeat and run again.
    async fn clear_recovered(&self, fresh_since: UtcTime) -> Result<u64, StoreError>;

    /// Tries to become the acting replica; None while another holds it.
    async fn try_lead(&self, role: Role) -> Result<Option<Box<dyn Lease>>, StoreError>;

    /// Releases lapsed holds, serves the wait queue (so players already waiting get free
    /// phones first), then atomically picks an idle phone (or the pinned one) that has the
    /// app when `match_app`, holds it and records the minted session; concurrent calls never
    /// get the same phone. With a key, records it in the same transaction, or answers the
    /// earlier mint of that key.
    async fn mint_session(&self, request: &MintRequest) -> Result<Allocation, StoreError> {
        let mut minted = self.mint_sessions(&[request]).await?;
        minted
            .pop()
            .ok_or_else(|| StoreError::Corrupt("a mint without an answer".into()))
    }

    /// [`Store::mint_session`] for each request, in order, in one transaction (the mint
    /// writer's group commit): one answer per request, each what minting the requests one
    /// by one would have answered (see `queue::mint_batch` for the one exception).
    async fn mint_sessions(&self, requests: &[&MintRequest])
    -> Result<Vec<Allocation>, StoreError>;

    /// A writer's round in one transaction: its mints as [`Store::mint_sessions`], then its
    /// sign checks as [`Store::check_signs`], then its events as [`Store::apply_events`],
    /// all committed or none.
    /// Returns once the round is committed and visible, with the ticket that says when it
    /// is durable: its writes must not be answered before.
    async fn write_round(&self, round: &Round<'_>) -> Result<(RoundDone, Durable), StoreError>;

    /// Adds the entry at the back of its app's queue, unless the player already has one
    /// there still in play (then that one, `new` false: a retried join), and serves the
    /// queue in the same transaction, so an entry that finds a free phone is assigned at once.
    async fn join_queue(&self, entry: &NewQueueEntry, times: &MintTimes)
    -> Result<Joined, StoreError>;

    /// The live entry with its place; None once it left, expired or never was.
    async fn queue_entry(
        &self,
        queue_id: &QueueId,
        now: UtcTime,
    ) -> Result<Option<QueueEntry>, StoreError>;

    /// Live entries per app in serving order (assigned ones first).
    async fn queue_entries(&self, now: UtcTime, limit: i64) -> Result<Vec<QueueEntry>, StoreError>;

    /// Moves a live entry's expiry on; false when it is gone or another token's.
    async fn extend_queue_entry(
        &self,
        queue_id: &QueueId,
        token_name: &str,
        now: UtcTime,
        expires_at: UtcTime,
    ) -> Result<bool, StoreError>;

    /// Issues the ticket of an assigned entry's session (see `store/queue.rs`).
    async fn issue_queued_session(&self, issue: &QueueIssue) -> Result<Issue, StoreError>;

    /// Takes the entry out of the queue; false when there was none, or it is another token's.
    async fn leave_queue(
        &self,
        queue_id: &QueueId,
        token_name: &str,
        now: UtcTime,
    ) -> Result<bool, StoreError>;

    /// One pass of the queue: drops expired entries, then gives free phones to the heads.
    async fn serve_queue(&self, times: &MintTimes) -> Result<QueuePass, StoreError>;

    /// Waiting entries per app.
    async fn queue_lengths(&self, now: UtcTime) -> Result<Vec<(String, i64)>, StoreError>;

    /// Sessions of the app started since then (the queue's wait estimate).
    async fn sessions_started_since(
        &self,
        app_id: &AppId,
        since: UtcTime,
    ) -> Result<i64, StoreError>;

    /// The access data of a session cphub minted; None for unknown or direct-mode sessions.
    async fn issued_access(&self, session_id: &SessionId) -> Result<Option<Issued>, StoreError>;

    /// Decides sign checks and records the admitted ones, in order, in one transaction:
    /// each is decided by every rule of `access::decide` against its session as the checks
    /// before it in `checks` left it, and a first use or reconnect is recorded as
    /// [`Store::mark_verified`] records it. One read of the sessions for all of `checks`.
    async fn check_signs(
        &self,
        checks: &[PresentedSignCheck],
        rules: &Rules,
    ) -> Result<Vec<SignCheckOutcome>, StoreError>;

    /// Records sign checks, in order, in one transaction. A first use consumes the ticket:
    /// `minted` becomes `verified` and the phone's hold is extended to `hold_until`; false
    /// where another sign check consumed it first. A reconnect is logged; false where the
    /// session is no longer verified or playing.
    async fn mark_verified(&self, verifications: &[Verification]) -> Result<Vec<bool>, StoreError>;

    /// Sessions playing now, per app.
    async fn active_sessions_by_app(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Phones per state; those not heard from since `fresh_since` are stale.
    async fn phones_by_state(&self, fresh_since: UtcTime)
    -> Result<Vec<(String, i64)>, StoreError>;

    /// Records the control plane's view of the phones (one transaction): `phones` is a
    /// complete listing (4.3.1), begun at `began`. Then (a second transaction) a phone
    /// listed before and left out of it is noted missed, and one left out by two listings
    /// that did not overlap in time is marked unlisted (migration 0033); an empty listing
    /// notes nothing.
    async fn sync_phones(
        &self,
        phones: &[ControlPlanePhone],
        began: UtcTime,
        now: UtcTime,
    ) -> Result<(), StoreError>;

    /// 4.3.2 answered `CPS.0005` for a phone the control plane listed before: unlisted now.
    async fn record_unlisted(&self, phone_id: &PhoneId, now: UtcTime) -> Result<(), StoreError>;

    /// Replaces the book's knowledge of which apps are on which phones (one transaction).
    async fn sync_phone_apps(&self, apps: &[PhoneApp], now: UtcTime) -> Result<(), StoreError>;

    /// Where a client connects to the phone (4.3.2: its server and access information), as
    /// phone sync last read it; None for a phone the book does not know.
    async fn phone_connect(&self, phone_id: &PhoneId) -> Result<Option<Connect>, StoreError>;

    /// Whether any phone has the app deployed (5.1.2, as phone sync last read it); None while
    /// the book knows of no deployment at all.
    async fn app_deployed(&self, app_id: &AppId) -> Result<Option<bool>, StoreError>;

    /// Phones whose access information the book has, with the list's `update_time` when it
    /// was read: phone sync reads a phone's detail again only when that moved.
    async fn access_read(&self) -> Result<Vec<(String, Option<String>)>, StoreError>;

    /// The phone's properties (4.3.2) as phone sync last read them, and when.
    async fn synced_property(
        &self,
        phone_id: &PhoneId,
    ) -> Result<Option<SyncedProperty>, StoreError>;

    /// Records one phone's control-plane status (chapter 4.3.1) now, ahead of the next
    /// phone sync: a stop sent through cphub, a status re-read before acting. Phones the
    /// book has no row for are left out; the number updated.
    async fn record_cph_status(
        &self,
        phone_id: &PhoneId,
        status: i32,
        now: UtcTime,
    ) -> Result<u64, StoreError>;

    /// Expires minted/verified sessions whose hold lapsed and frees their phones; forgets
    /// idempotency keys past their time.
    async fn release_lapsed_holds(&self, now: UtcTime) -> Result<u64, StoreError>;

    /// The webhook outbox after `after_seq`, in commit order per subject (migration 0013).
    async fn outbox(&self, after_seq: i64, limit: i64) -> Result<Vec<OutboxEvent>, StoreError>;

    /// Notes where the feed of each endpoint not seen before starts (migration 0035), so
    /// that a new endpoint is not sent the outbox's history; and each one's event filter,
    /// seen `now`, for every replica's fan-out (migration 0036).
    async fn register_webhook_endpoints(
        &self,
        endpoints: &[EndpointFilter],
        now: UtcTime,
    ) -> Result<(), StoreError>;

    /// Gives outbox rows their deliveries, one per endpoint that wants the type; how many
    /// rows were fanned out.
    async fn fan_out_webhooks(
        &self,
        endpoints: &[EndpointFilter],
        now: UtcTime,
        first_attempt_at: UtcTime,
        limit: i64,
    ) -> Result<u64, StoreError>;

    /// Records `claim.recording`, then leases an endpoint's due deliveries, at most one per
    /// subject (docs/webhooks.md), in one transaction.
    async fn claim_webhook_deliveries(
        &self,
        claim: &Claim<'_>,
    ) -> Result<Vec<ClaimedDelivery>, StoreError>;

    /// Writes the `session.tick` due by `now` of each playing session; how many.
    async fn write_webhook_ticks(
        &self,
        interval_secs: i64,
        now: UtcTime,
    ) -> Result<u64, StoreError>;

    /// Each endpoint's pending deliveries, counted, and the oldest event not fanned out
    /// (the console's webhook list).
    async fn webhook_backlog(&self) -> Result<WebhookBacklog, StoreError>;

    /// For each of `endpoints`, the commit time of the oldest event it has still to take
    /// (`cphub_webhook_oldest_undelivered_seconds`); `None` when it has none. Reads a row
    /// or two per endpoint, however long the backlog.
    async fn webhook_oldest_undelivered(
        &self,
        endpoints: &[String],
    ) -> Result<Vec<Option<UtcTime>>, StoreError>;

    /// Webhook deliveries, newest first (`cphub webhooks list`, `GET /api/v1/webhooks/deliveries`).
    async fn webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryView>, StoreError>;

    /// One delivery with its attempts (`cphub webhooks show`).
    async fn webhook_delivery(
        &self,
        endpoint: &str,
        event_id: &WebhookEventId,
    ) -> Result<Option<(DeliveryView, Vec<AttemptView>)>, StoreError>;

    /// Puts a delivery back to pending, due now (`cphub webhooks retry`); false if unknown.
    async fn retry_webhook_delivery(
        &self,
        endpoint: &str,
        event_id: &WebhookEventId,
        now: UtcTime,
    ) -> Result<bool, StoreError>;

    /// Delivers an endpoint's events since `since` again (`cphub webhooks replay`).
    async fn replay_webhooks(
        &self,
        endpoint: &EndpointFilter,
        since: UtcTime,
        now: UtcTime,
    ) -> Result<u64, StoreError>;

    /// Records that the control plane refuses the account (7.2) unless a pause is open
    /// already; true if this call opened it (and wrote its `fleet.incident`).
    async fn open_account_pause(
        &self,
        code: &str,
        probe: &PhoneId,
        now: UtcTime,
    ) -> Result<bool, StoreError>;

    /// Ends the open pause, if any; true if this call ended it (and wrote its
    /// `fleet.incident`).
    async fn close_account_pause(&self, now: UtcTime) -> Result<bool, StoreError>;

    /// The open pause, if any.
    async fn account_pause(&self) -> Result<Option<AccountPause>, StoreError>;

    /// Adds a line to the audit trail; its id.
    async fn record_audit(&self, entry: &NewAuditEntry) -> Result<i64, StoreError>;

    /// Writes the outcome (`status`, `error_code`) of the line `id`, written as its call
    /// began.
    async fn settle_audit(
        &self,
        id: i64,
        status: i64,
        error_code: Option<&str>,
    ) -> Result<(), StoreError>;

    /// The audit trail, newest first.
    async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;

    /// Deletes audit lines older than `before` (book retention); how many.
    async fn prune_audit_log(&self, before: UtcTime) -> Result<u64, StoreError>;

    /// Deletes deliveries delivered before `before`; how many.
    async fn prune_webhook_deliveries(&self, before: UtcTime) -> Result<u64, StoreError>;

    /// Records a rollout and its target phones; None while another rollout of the app is
    /// running or paused.
    async fn create_rollout(&self, new: &NewRollout) -> Result<Option<Rollout>, StoreError>;

    /// Rollouts, newest first.
    async fn rollouts(&self, limit: i64) -> Result<Vec<Rollout>, StoreError>;

    async fn rollout(&self, id: i64) -> Result<Option<Rollout>, StoreError>;

    /// A rollout's phones, in phone id order, with what the engine needs of each phone.
    async fn rollout_phones(&self, id: i64) -> Result<Vec<RolloutPhone>, StoreError>;

    /// What else the book recorded about a phone, newest first, `limit` of each kind: its
    /// rollout steps, when it was learned out of service, the account's pauses since `since`.
    async fn phone_marks(
        &self,
        phone: &PhoneId,
        since: UtcTime,
        limit: i64,
    ) -> Result<PhoneMarks, StoreError>;

    /// Rollouts the engine drives: running, or with phones still drained.
    async fn driven_rollouts(&self) -> Result<Vec<Rollout>, StoreError>;

    /// Pauses, resumes or aborts (see `store/rollout.rs`); None when it was in none of
    /// `change.from`.
    async fn set_rollout_state(
        &self,
        change: &StateChange<'_>,
    ) -> Result<Option<Rollout>, StoreError>;

    /// Returns to the pool the draining phones of a rollout no longer running: a send that
    /// failed without anything done puts its phone back to draining, and a pause or abort
    /// may have landed during the call. How many went back.
    async fn return_drained_rollout_phones(&self, id: i64, now: UtcTime)
    -> Result<u64, StoreError>;

    /// Drains the next batch's phones; how many it took. A phone refused its send without
    /// anything done is taken only if that was before `rested`.
    async fn take_rollout_batch(
        &self,
        id: i64,
        batch: i64,
        size: i64,
        now: UtcTime,
        rested: UtcTime,
    ) -> Result<u64, StoreError>;

    /// Moves one rollout phone on; false when it was no longer at `change.from`, or (an
    /// update about to be sent, `change.attempt`) when a recovery is pending on it.
    async fn step_rollout_phone(&self, change: &StepChange<'_>) -> Result<bool, StoreError>;

    /// Ends a running rollout whose phones are all done or failed; whether it did.
    async fn finish_rollout(&self, id: i64, now: UtcTime) -> Result<bool, StoreError>;

    /// Rollout updates sent and not ended yet, over all rollouts.
    async fn rollout_jobs_in_flight(&self) -> Result<i64, StoreError>;

    /// The jobs `watchdog.max_in_flight` bounds: recoveries pending and rollout updates
    /// sent and not ended, counted in one read.
    async fn jobs_in_flight(&self) -> Result<i64, StoreError>;

    /// The rollout updating or verifying the phone, if one is.
    async fn rollout_updating(&self, phone: &PhoneId) -> Result<Option<i64>, StoreError>;

    /// Phones per rollout step, over the rollouts under way.
    async fn rollout_phones_by_step(&self) -> Result<Vec<(String, i64)>, StoreError>;

    /// Removes one batch of sessions old enough for [`Retention`], with their event logs, in
    /// one transaction; how many sessions went (fewer than the batch: nothing more to do).
    async fn remove_old_sessions(&self, retention: &Retention) -> Result<u64, StoreError>;

    /// On PostgreSQL, the event log's day partitions (migration 0014): those of the coming
    /// week made, those wholly before `drop_before` dropped, after moving the events of the
    /// sessions still in the book out of them. How many were dropped. Nothing on SQLite,
    /// whose log is one table.
    async fn maintain_event_log(
        &self,
        now: UtcTime,
        drop_before: Option<UtcTime>,
    ) -> Result<u64, StoreError>;

    /// Usage per group over the query's pieces of time, unsorted (see `crate::usage`): whole
    /// rollup buckets from `usage_rollups`, the rest from the sessions.
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError>;

    /// The same figures computed from the sessions alone, which [`Store::usage`] must equal
    /// exactly (the rollup tests compare them).
    async fn usage_raw(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError>;

    /// The database's plan for [`Store::usage`], one line per step.
    async fn explain_usage(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError>;
}

/// Opens the backend that `settings.url` names. Every [`Backend`] is a [`Store`].
pub async fn connect(settings: &DatabaseSettings) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match &settings.url {
        DatabaseUrl::Sqlite(url) => Arc::new(SqliteStore::connect(url, settings).await?),
        DatabaseUrl::Postgres(url) => Arc::new(PostgresStore::connect(url, settings).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn an_error_names_the_operation_it_happened_in_once() {
        let error = StoreError::from(sqlx::Error::PoolTimedOut).during("mint_session");
        assert!(error.is_unavailable());
        assert_eq!(error.to_string(), "database unavailable (in mint_session)");
        // The innermost name wins: an outer caller cannot relabel it.
        let error = error.during("outer");
        assert_eq!(error.to_string(), "database unavailable (in mint_session)");
        let error = StoreError::from(sqlx::Error::RowNotFound).during("session");
        assert_eq!(error.to_string(), "database query failed (in session)");
    }
}
