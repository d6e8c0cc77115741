//! What differs between SQLite and PostgreSQL ([`Backend`]), and the one implementation of
//! [`Store`] on top of it: the shared SQL of `book.rs` run on the backend's reader or in its
//! write transaction, each method's errors named after it, so a log says which query failed.

use async_trait::async_trait;

use super::AccountPause;
use super::EndpointFilter;
use super::WebhookBacklog;
use super::event_batch::BatchTx;
use super::round::{self, Round, RoundDone};
use super::sql::Sql;
use super::{
    Allocation, Applied, ApplyRules, ControlPlanePhone, EventRecord, FinishedRecovery, Lease,
    MintRequest, NewRecovery, OutboxEvent, Phone, PhoneApp, PhoneHealth, ReceivedEvent, Recovery,
    Retention, Role, SessionFilter, Store, StoreError, Verification, book, outbox, pause, queue,
    retention,
};
use super::{AttemptView, Claim, ClaimedDelivery, DeliveryFilter, DeliveryView};
use super::{AuditFilter, AuditRecord, NewAuditEntry, audit};
use super::Durable;
use super::{ControlPlaneEncodeServer, EncodeServer, encode};
use super::{Issue, Joined, MintTimes, NewQueueEntry, QueueEntry, QueueIssue, QueuePass, SyncedProperty};
use super::{NewRollout, Rollout, RolloutPhone, StateChange, StepChange, rollout};
use super::{PhoneMarks, phone_marks};
use super::{PresentedSignCheck, SignCheckOutcome, sign_check_batch};
use crate::access::{Issued, Rules};
use crate::domain::WebhookEventId;
use crate::domain::{AppId, Connect, Heartbeat, PhoneId, QueueId, Session, SessionId, UtcTime};
use crate::usage::{self, UsageQuery, UsageRow};

/// A database the session book can live in. The connection handling (SQLite's single writer
/// with `BEGIN IMMEDIATE`, PostgreSQL's pool), the migrations, the set-wise statements over
/// lists (`json_each` vs `UNNEST`), the usage query and leadership are the backend's own.
#[async_trait]
pub(super) trait Backend: Send + Sync + 'static {
    /// A write transaction, in which an event batch (`event_batch::apply`) runs too.
    type Tx: Sql + BatchTx;
    /// Where reads go (a cheap handle on a pool).
    type Reader: Sql;

    async fn begin_write(&self) -> Result<Self::Tx, StoreError>;
    /// Commits; the ticket says when the commit is durable (`log_sync`).
    async fn commit(&self, tx: Self::Tx) -> Result<Durable, StoreError>;
    fn reader(&self) -> Self::Reader;

    async fn migrate(&self) -> Result<(), StoreError>;
    async fn ping(&self) -> Result<(), StoreError>;
    async fn apply_events(
        &self,
        events: &[ReceivedEvent],
        rules: ApplyRules,
    ) -> Result<Vec<Applied>, StoreError>;
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<Vec<usize>, StoreError>;
    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError>;
    async fn explain_usage(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError>;
    /// The whole buckets of a query split for the rollups (`crate::usage::Split`).
    async fn usage_rollups(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError>;
    async fn explain_usage_rollups(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError>;
    async fn try_lead(&self, role: Role) -> Result<Option<Box<dyn Lease>>, StoreError>;
    /// PostgreSQL's day partitions of the event log: made ahead, dropped past retention.
    async fn maintain_event_log(
        &self,
        now: UtcTime,
        drop_before: Option<UtcTime>,
    ) -> Result<u64, StoreError>;
}

/// Runs `$call(&mut tx, args…)` from `book` in one write transaction of `$backend`, commits
/// it and returns once the commit is durable; with `durable_later`, once it is committed,
/// with its [`Durable`] ticket.
macro_rules! in_transaction {
    ($backend:ident, $call:ident($($arg:expr),* $(,)?)) => {
        in_transaction!($backend, book::$call($($arg),*))
    };
    ($backend:ident, $module:ident::$call:ident($($arg:expr),* $(,)?)) => {
        in_transaction!(@span $call, async {
            let (result, durable) =
                in_transaction!(@commit $backend, $module::$call($($arg),*)).await?;
            durable.wait().await?;
            Ok::<_, StoreError>(result)
        })
    };
    (durable_later $backend:ident, $module:ident::$call:ident($($arg:expr),* $(,)?)) => {
        in_transaction!(@span $call, in_transaction!(@commit $backend, $module::$call($($arg),*)))
    };
    (@commit $backend:ident, $module:ident::$call:ident($($arg:expr),*)) => {
        async {
            let mut tx = $backend.begin_write().await?;
            let result = $module::$call(&mut tx, $($arg),*).await?;
            let durable = $backend.commit(tx).await?;
            Ok::<_, StoreError>((result, durable))
        }
    };
    (@span $call:ident, $write:expr) => {
        tracing::Instrument::instrument(
            $write,
            // A child of whatever asked for the write (a request, the watchdog's pass), so
            // a trace shows the time spent waiting for the writer and committing.
            tracing::info_span!("store write", op = stringify!($call)),
        )
        .await
    };
}

/// `.map_err(during("op"))`: names the operation in which a store error happened.
/// The newest migration recorded as applied, read the same way on both backends.
pub(super) const APPLIED_MIGRATION: &str =
    "SELECT MAX(version) FROM _sqlx_migrations WHERE success";

/// Whether `applied` (the newest applied migration, none on an empty database) is the
/// newest `migrator` embeds. A newer one (a later binary migrated, then rolled back) is
/// fine: migrations only add.
pub(super) fn schema_is_current(
    migrator: &sqlx::migrate::Migrator,
    applied: Option<i64>,
) -> Result<(), StoreError> {
    let expected = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = applied.unwrap_or(0);
    match applied >= expected {
        true => Ok(()),
        false => Err(StoreError::NotMigrated { applied, expected }),
    }
}

fn during(op: &'static str) -> impl Fn(StoreError) -> StoreError {
    move |error| error.during(op)
}

#[async_trait]
impl<B: Backend> Store for B {
    async fn migrate(&self) -> Result<(), StoreError> {
        Backend::migrate(self).await.map_err(during("migrate"))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Backend::ping(self).await.map_err(during("ping"))
    }

    async fn apply_events(
        &self,
        events: &[ReceivedEvent],
        rules: ApplyRules,
    ) -> Result<Vec<Applied>, StoreError> {
        let applied = Backend::apply_events(self, events, rules).await;
        applied.map_err(during("apply_events"))
    }

    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<Vec<usize>, StoreError> {
        let recorded = Backend::record_heartbeats(self, heartbeats).await;
        recorded.map_err(during("record_heartbeats"))
    }

    async fn session(&self, session_id: &SessionId) -> Result<Option<Session>, StoreError> {
        let found = book::session(&mut self.reader(), session_id).await;
        found.map_err(during("session"))
    }

    async fn sessions(
        &self,
        filter: &SessionFilter,
        limit: i64,
    ) -> Result<Vec<Session>, StoreError> {
        let found = book::sessions(&mut self.reader(), filter, limit).await;
        found.map_err(during("sessions"))
    }

    async fn session_events(&self, session: &Session) -> Result<Vec<EventRecord>, StoreError> {
        let found = book::session_events(&mut self.reader(), session).await;
        found.map_err(during("session_events"))
    }

    async fn phone(
        &self,
        phone_id: &PhoneId,
        fresh_since: UtcTime,
    ) -> Result<Option<Phone>, StoreError> {
        let found = book::phone(&mut self.reader(), phone_id, fresh_since).await;
        found.map_err(during("phone"))
    }

    async fn phones(
        &self,
        fresh_since: UtcTime,
        after: Option<&PhoneId>,
        app: Option<&AppId>,
        limit: i64,
    ) -> Result<Vec<Phone>, StoreError> {
        let found = book::phones(&mut self.reader(), fresh_since, after, app, limit).await;
        found.map_err(during("phones"))
    }

    async fn phone_apps(&self, phone_id: &PhoneId) -> Result<Vec<PhoneApp>, StoreError> {
        let found = book::phone_apps(&mut self.reader(), phone_id).await;
        found.map_err(during("phone_apps"))
    }

    async fn unhealthy_phones(&self, fresh_since: UtcTime) -> Result<Vec<PhoneHealth>, StoreError> {
        let found = book::unhealthy_phones(&mut self.reader(), fresh_since).await;
        found.map_err(during("unhealthy_phones"))
    }

    async fn phones_per_server(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let found = book::phones_per_server(&mut self.reader()).await;
        found.map_err(during("phones_per_server"))
    }

    async fn open_incidents(&self) -> Result<Vec<Recovery>, StoreError> {
        let found = book::open_incidents(&mut self.reader()).await;
        found.map_err(during("open_incidents"))
    }

    async fn incidents_closed_since(&self, since: UtcTime) -> Result<Vec<Recovery>, StoreError> {
        let found = book::incidents_closed_since(&mut self.reader(), since).await;
        found.map_err(during("incidents_closed_since"))
    }

    async fn close_incident(
        &self,
        id: i64,
        ended_at: UtcTime,
        note: &str,
    ) -> Result<(), StoreError> {
        let closed = in_transaction!(self, close_incident(id, ended_at, note));
        closed.map_err(during("close_incident"))
    }

    async fn abandon_sessions(
        &self,
        fresh_since: UtcTime,
        game_gone_after: std::time::Duration,
        now: UtcTime,
    ) -> Result<Vec<Session>, StoreError> {
        let mut reader = self.reader();
        let found = book::sessions_to_abandon(&mut reader, fresh_since, game_gone_after).await;
        let candidates = found.map_err(during("sessions_to_abandon"))?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let abandoned = in_transaction!(
            self,
            abandon_sessions(&candidates, fresh_since, game_gone_after, now)
        );
        abandoned.map_err(during("abandon_sessions"))
    }

    async fn recoveries(
        &self,
        phone_id: Option<&PhoneId>,
        since: Option<UtcTime>,
        limit: i64,
    ) -> Result<Vec<Recovery>, StoreError> {
        let found = book::recoveries(&mut self.reader(), phone_id, since, limit).await;
        found.map_err(during("recoveries"))
    }

    async fn pending_recoveries(&self) -> Result<Vec<Recovery>, StoreError> {
        let found = book::pending_recoveries(&mut self.reader()).await;
        found.map_err(during("pending_recoveries"))
    }

    async fn recovery(&self, id: i64) -> Result<Option<Recovery>, StoreError> {
        let found = book::recovery(&mut self.reader(), id).await;
        found.map_err(during("recovery"))
    }

    async fn sync_encode_servers(
        &self,
        servers: &[ControlPlaneEncodeServer],
        now: UtcTime,
    ) -> Result<(), StoreError> {
        let synced = in_transaction!(self, encode::sync_encode_servers(servers, now));
        synced.map_err(during("sync_encode_servers"))
    }

    async fn encode_servers(&self) -> Result<Vec<EncodeServer>, StoreError> {
        let found = encode::encode_servers(&mut self.reader()).await;
        found.map_err(during("encode_servers"))
    }

    async fn start_recovery(&self, recovery: &NewRecovery) -> Result<Recovery, StoreError> {
        let started = in_transaction!(self, start_recovery(recovery));
        started.map_err(during("start_recovery"))
    }

    async fn note_recovery_job(
        &self,
        id: i64,
        request_id: Option<&str>,
        job_id: Option<&str>,
        detail: Option<&str>,
    ) -> Result<(), StoreError> {
        let noted = in_transaction!(self, note_recovery_job(id, request_id, job_id, detail));
        noted.map_err(during("note_recovery_job"))
    }

    async fn finish_recovery(&self, finished: &FinishedRecovery) -> Result<(), StoreError> {
        let done = in_transaction!(self, finish_recovery(finished));
        done.map_err(during("finish_recovery"))
    }

    async fn clear_recovered(&self, fresh_since: UtcTime) -> Result<u64, StoreError> {
        let cleared = in_transaction!(self, clear_recovered(fresh_since));
        cleared.map_err(during("clear_recovered"))
    }

    async fn try_lead(&self, role: Role) -> Result<Option<Box<dyn Lease>>, StoreError> {
        Backend::try_lead(self, role)
            .await
            .map_err(during("try_lead"))
    }

    async fn mint_sessions(
        &self,
        requests: &[&MintRequest],
    ) -> Result<Vec<Allocation>, StoreError> {
        let minted = in_transaction!(self, queue::mint_batch(requests));
        minted.map_err(during("mint_sessions"))
    }

    async fn write_round(&self, round: &Round<'_>) -> Result<(RoundDone, Durable), StoreError> {
        let written = in_transaction!(durable_later self, round::write(round));
        written.map_err(during("write_round"))
    }

    async fn join_queue(
        &self,
        entry: &NewQueueEntry,
        times: &MintTimes,
    ) -> Result<Joined, StoreError> {
        let joined = async {
            let mut tx = self.begin_write().await?;
            let joined = queue::join(&mut tx, entry).await?;
            queue::serve(&mut tx, times, &[]).await?;
            self.commit(tx).await?.wait().await?;
            Ok(joined)
        };
        joined.await.map_err(during("join_queue"))
    }

    async fn queue_entry(
        &self,
        queue_id: &QueueId,
        now: UtcTime,
    ) -> Result<Option<QueueEntry>, StoreError> {
        let found = queue::entry(&mut self.reader(), queue_id, now).await;
        found.map_err(during("queue_entry"))
    }

    async fn queue_entries(&self, now: UtcTime, limit: i64) -> Result<Vec<QueueEntry>, StoreError> {
        let found = queue::entries(&mut self.reader(), now, limit).await;
        found.map_err(during("queue_entries"))
    }

    async fn extend_queue_entry(
        &self,
        queue_id: &QueueId,
        token_name: &str,
        now: UtcTime,
        expires_at: UtcTime,
    ) -> Result<bool, StoreError> {
        let extended =
            in_transaction!(self, queue::extend(queue_id, token_name, now, expires_at));
        extended.map_err(during("extend_queue_entry"))
    }

    async fn issue_queued_session(&self, issue: &QueueIssue) -> Result<Issue, StoreError> {
        let issued = in_transaction!(self, queue::issue(issue));
        issued.map_err(during("issue_queued_session"))
    }

    async fn leave_queue(
        &self,
        queue_id: &QueueId,
        token_name: &str,
        now: UtcTime,
    ) -> Result<bool, StoreError> {
        let left = in_transaction!(self, queue::leave(queue_id, token_name, now));
        left.map_err(during("leave_queue"))
    }

    async fn serve_queue(&self, times: &MintTimes) -> Result<QueuePass, StoreError> {
        let served = async {
            // Every replica passes several times a second; on SQLite a write transaction
            // would take the one writer from the event writer for nothing.
            if queue::is_empty(&mut self.reader()).await? {
                return Ok(QueuePass::default());
            }
            let mut tx = self.begin_write().await?;
            let expired = queue::expire(&mut tx, times.now).await?;
            let assigned = queue::serve(&mut tx, times, &[]).await?;
            self.commit(tx).await?.wait().await?;
            Ok(QueuePass { expired, assigned })
        };
        served.await.map_err(during("serve_queue"))
    }

    async fn queue_lengths(&self, now: UtcTime) -> Result<Vec<(String, i64)>, StoreError> {
        let found = queue::lengths(&mut self.reader(), now).await;
        found.map_err(during("queue_lengths"))
    }

    async fn sessions_started_since(
        &self,
        app_id: &AppId,
        since: UtcTime,
    ) -> Result<i64, StoreError> {
        let found = queue::started_since(&mut self.reader(), app_id, since).await;
        found.map_err(during("sessions_started_since"))
    }

    async fn issued_access(&self, session_id: &SessionId) -> Result<Option<Issued>, StoreError> {
        let found = book::issued_access(&mut self.reader(), session_id).await;
        found.map_err(during("issued_access"))
    }

    async fn check_signs(
        &self,
        checks: &[PresentedSignCheck],
        rules: &Rules,
    ) -> Result<Vec<SignCheckOutcome>, StoreError> {
        let checked = in_transaction!(self, sign_check_batch::check_signs(checks, rules));
        checked.map_err(during("check_signs"))
    }

    async fn mark_verified(&self, verifications: &[Verification]) -> Result<Vec<bool>, StoreError> {
        let marked = in_transaction!(self, mark_verified(verifications));
        marked.map_err(during("mark_verified"))
    }

    async fn active_sessions_by_app(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let found = book::active_sessions_by_app(&mut self.reader()).await;
        found.map_err(during("active_sessions_by_app"))
    }

    async fn phones_by_state(
        &self,
        fresh_since: UtcTime,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let found = book::phones_by_state(&mut self.reader(), fresh_since).await;
        found.map_err(during("phones_by_state"))
    }

    async fn sync_phones(
        &self,
        phones: &[ControlPlanePhone],
        began: UtcTime,
        now: UtcTime,
    ) -> Result<(), StoreError> {
        let synced = in_transaction!(self, sync_phones(phones, now));
        synced.map_err(during("sync_phones"))?;
        // An empty listing is more likely the wrong project than a fleet released whole: it
        // unlists nothing (phone sync warns).
        if phones.is_empty() {
            return Ok(());
        }
        let noted = in_transaction!(self, note_missed_listing(phones, began, now));
        noted.map_err(during("note_missed_listing"))
    }

    async fn record_unlisted(&self, phone_id: &PhoneId, now: UtcTime) -> Result<(), StoreError> {
        let recorded = in_transaction!(self, record_unlisted(phone_id, now));
        recorded.map(drop).map_err(during("record_unlisted"))
    }

    async fn sync_phone_apps(&self, apps: &[PhoneApp], now: UtcTime) -> Result<(), StoreError> {
        let synced = in_transaction!(self, sync_phone_apps(apps, now));
        synced.map_err(during("sync_phone_apps"))
    }

    async fn synced_property(
        &self,
        phone_id: &PhoneId,
    ) -> Result<Option<SyncedProperty>, StoreError> {
        let found = book::synced_property(&mut self.reader(), phone_id).await;
        found.map_err(during("synced_property"))
    }

    async fn phone_connect(&self, phone_id: &PhoneId) -> Result<Option<Connect>, StoreError> {
        let found = book::phone_connect(&mut self.reader(), phone_id).await;
        found.map_err(during("phone_connect"))
    }

    async fn app_deployed(&self, app_id: &AppId) -> Result<Option<bool>, StoreError> {
        let found = book::app_deployed(&mut self.reader(), app_id).await;
        found.map_err(during("app_deployed"))
    }

    async fn access_read(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let found = book::access_read(&mut self.reader()).await;
        found.map_err(during("access_read"))
    }

    async fn record_cph_status(
        &self,
        phone_id: &PhoneId,
        status: i32,
        now: UtcTime,
    ) -> Result<u64, StoreError> {
        let recorded = in_transaction!(self, record_cph_status(phone_id, status, now));
        recorded.map_err(during("record_cph_status"))
    }

    async fn release_lapsed_holds(&self, now: UtcTime) -> Result<u64, StoreError> {
        let released = in_transaction!(self, sweep_lapsed(now));
        released.map_err(during("release_lapsed_holds"))
    }

    async fn outbox(&self, after_seq: i64, limit: i64) -> Result<Vec<OutboxEvent>, StoreError> {
        let found = outbox::events(&mut self.reader(), after_seq, limit).await;
        found.map_err(during("outbox"))
    }

    async fn register_webhook_endpoints(
        &self,
        endpoints: &[EndpointFilter],
        now: UtcTime,
    ) -> Result<(), StoreError> {
        let registered = in_transaction!(self, outbox::register_endpoints(endpoints, now));
        registered.map_err(during("register_webhook_endpoints"))
    }

    async fn fan_out_webhooks(
        &self,
        endpoints: &[EndpointFilter],
        now: UtcTime,
        first_attempt_at: UtcTime,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let fanned = in_transaction!(
            self,
            outbox::fan_out(endpoints, now, first_attempt_at, limit)
        );
        fanned.map_err(during("fan_out_webhooks"))
    }

    async fn claim_webhook_deliveries(
        &self,
        claim: &Claim<'_>,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let claimed = in_transaction!(self, outbox::claim(claim));
        claimed.map_err(during("claim_webhook_deliveries"))
    }

    async fn write_webhook_ticks(
        &self,
        interval_secs: i64,
        now: UtcTime,
    ) -> Result<u64, StoreError> {
        let written = in_transaction!(self, outbox::write_ticks(interval_secs, now));
        written.map_err(during("write_webhook_ticks"))
    }

    async fn webhook_backlog(&self) -> Result<WebhookBacklog, StoreError> {
        let found = outbox::backlog(&mut self.reader()).await;
        found.map_err(during("webhook_backlog"))
    }

    async fn webhook_oldest_undelivered(
        &self,
        endpoints: &[String],
    ) -> Result<Vec<Option<UtcTime>>, StoreError> {
        let found = outbox::oldest_undelivered(&mut self.reader(), endpoints).await;
        found.map_err(during("webhook_oldest_undelivered"))
    }

    async fn webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<DeliveryView>, StoreError> {
        let found = outbox::deliveries(&mut self.reader(), filter).await;
        found.map_err(during("webhook_deliveries"))
    }

    async fn webhook_delivery(
        &self,
        endpoint: &str,
        event_id: &WebhookEventId,
    ) -> Result<Option<(DeliveryView, Vec<AttemptView>)>, StoreError> {
        let found = outbox::delivery(&mut self.reader(), endpoint, event_id).await;
        found.map_err(during("webhook_delivery"))
    }

    async fn retry_webhook_delivery(
        &self,
        endpoint: &str,
        event_id: &WebhookEventId,
        now: UtcTime,
    ) -> Result<bool, StoreError> {
        let retried = in_transaction!(self, outbox::retry(endpoint, event_id, now));
        retried.map_err(during("retry_webhook_delivery"))
    }

    async fn replay_webhooks(
        &self,
        endpoint: &EndpointFilter,
        since: UtcTime,
        now: UtcTime,
    ) -> Result<u64, StoreError> {
        // Chunk by chunk, each its own write, in outbox order, so the writer is never held
        // for long: a subject's replayed events still go out in their order (an earlier
        // chunk's before a later one's), though an event recorded meanwhile may go out
        // between two of them. A replay that fails part-way has put back the chunks before
        // the failure; asked again, it puts them back again and goes on (docs/webhooks.md).
        let range = outbox::replay_range(&mut self.reader(), since).await;
        let Some((first, last)) = range.map_err(during("replay_webhooks"))? else {
            return Ok(0);
        };
        let (mut after, mut replayed) = (first - 1, 0);
        loop {
            let chunk = in_transaction!(self, outbox::replay(endpoint, since, (after, last), now));
            let Some((count, newest)) = chunk.map_err(during("replay_webhooks"))? else {
                return Ok(replayed);
            };
            (after, replayed) = (newest, replayed + count);
        }
    }

    async fn open_account_pause(
        &self,
        code: &str,
        probe: &PhoneId,
        now: UtcTime,
    ) -> Result<bool, StoreError> {
        let opened = in_transaction!(self, pause::open(code, probe, now));
        opened.map_err(during("open_account_pause"))
    }

    async fn close_account_pause(&self, now: UtcTime) -> Result<bool, StoreError> {
        let closed = in_transaction!(self, pause::close(now));
        closed.map_err(during("close_account_pause"))
    }

    async fn account_pause(&self) -> Result<Option<AccountPause>, StoreError> {
        let found = pause::current(&mut self.reader()).await;
        found.map_err(during("account_pause"))
    }

    async fn record_audit(&self, entry: &NewAuditEntry) -> Result<i64, StoreError> {
        let recorded = in_transaction!(self, audit::record(entry));
        recorded.map_err(during("record_audit"))
    }

    async fn settle_audit(
        &self,
        id: i64,
        status: i64,
        error_code: Option<&str>,
    ) -> Result<(), StoreError> {
        let settled = in_transaction!(self, audit::settle(id, status, error_code));
        settled.map_err(during("settle_audit"))
    }

    async fn audit_log(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let found = audit::list(&mut self.reader(), filter).await;
        found.map_err(during("audit_log"))
    }

    async fn prune_audit_log(&self, before: UtcTime) -> Result<u64, StoreError> {
        let pruned = in_transaction!(self, audit::prune(before));
        pruned.map_err(during("prune_audit_log"))
    }

    async fn prune_webhook_deliveries(&self, before: UtcTime) -> Result<u64, StoreError> {
        let pruned = in_transaction!(self, outbox::prune(before));
        pruned.map_err(during("prune_webhook_deliveries"))
    }

    async fn create_rollout(&self, new: &NewRollout) -> Result<Option<Rollout>, StoreError> {
        let created = in_transaction!(self, rollout::create(new));
        created.map_err(during("create_rollout"))
    }

    async fn rollouts(&self, limit: i64) -> Result<Vec<Rollout>, StoreError> {
        let found = rollout::list(&mut self.reader(), limit).await;
        found.map_err(during("rollouts"))
    }

    async fn rollout(&self, id: i64) -> Result<Option<Rollout>, StoreError> {
        let found = rollout::get(&mut self.reader(), id).await;
        found.map_err(during("rollout"))
    }

    async fn rollout_phones(&self, id: i64) -> Result<Vec<RolloutPhone>, StoreError> {
        let found = rollout::phones(&mut self.reader(), id).await;
        found.map_err(during("rollout_phones"))
    }

    async fn phone_marks(
        &self,
        phone: &PhoneId,
        since: UtcTime,
        limit: i64,
    ) -> Result<PhoneMarks, StoreError> {
        let found = phone_marks::read(&mut self.reader(), phone, since, limit).await;
        found.map_err(during("phone_marks"))
    }

    async fn driven_rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        let found = rollout::driven(&mut self.reader()).await;
        found.map_err(during("driven_rollouts"))
    }

    async fn set_rollout_state(
        &self,
        change: &StateChange<'_>,
    ) -> Result<Option<Rollout>, StoreError> {
        let set = in_transaction!(self, rollout::set_state(change));
        set.map_err(during("set_rollout_state"))
    }

    async fn return_drained_rollout_phones(
        &self,
        id: i64,
        now: UtcTime,
    ) -> Result<u64, StoreError> {
        let returned = in_transaction!(self, rollout::return_drained(id, now));
        returned.map_err(during("return_drained_rollout_phones"))
    }

    async fn take_rollout_batch(
        &self,
        id: i64,
        batch: i64,
        size: i64,
        now: UtcTime,
        rested: UtcTime,
    ) -> Result<u64, StoreError> {
        let taken = in_transaction!(self, rollout::take_batch(id, batch, size, now, rested));
        taken.map_err(during("take_rollout_batch"))
    }

    async fn step_rollout_phone(&self, change: &StepChange<'_>) -> Result<bool, StoreError> {
        let moved = in_transaction!(self, rollout::step(change));
        moved.map_err(during("step_rollout_phone"))
    }

    async fn finish_rollout(&self, id: i64, now: UtcTime) -> Result<bool, StoreError> {
        let finished = in_transaction!(self, rollout::finish(id, now));
        finished.map_err(during("finish_rollout"))
    }

    async fn rollout_jobs_in_flight(&self) -> Result<i64, StoreError> {
        let found = rollout::jobs_in_flight(&mut self.reader()).await;
        found.map_err(during("rollout_jobs_in_flight"))
    }

    async fn jobs_in_flight(&self) -> Result<i64, StoreError> {
        let found = book::jobs_in_flight(&mut self.reader()).await;
        found.map_err(during("jobs_in_flight"))
    }

    async fn rollout_updating(&self, phone: &PhoneId) -> Result<Option<i64>, StoreError> {
        let found = rollout::updating(&mut self.reader(), phone).await;
        found.map_err(during("rollout_updating"))
    }

    async fn rollout_phones_by_step(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let found = rollout::phones_by_step(&mut self.reader()).await;
        found.map_err(during("rollout_phones_by_step"))
    }

    async fn maintain_event_log(
        &self,
        now: UtcTime,
        drop_before: Option<UtcTime>,
    ) -> Result<u64, StoreError> {
        let maintained = Backend::maintain_event_log(self, now, drop_before).await;
        maintained.map_err(during("maintain_event_log"))
    }

    async fn remove_old_sessions(&self, retention: &Retention) -> Result<u64, StoreError> {
        let removed = in_transaction!(self, retention::remove_batch(retention));
        removed.map_err(during("remove_old_sessions"))
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        let Some(split) = query.split_for_rollups() else {
            return Store::usage_raw(self, query).await;
        };
        let mut rows = Vec::new();
        if !split.raw.pieces.is_empty() {
            rows = Backend::usage(self, &split.raw)
                .await
                .map_err(during("usage"))?;
        }
        if !split.rollups.pieces.is_empty() {
            let rolled = Backend::usage_rollups(self, &split.rollups).await;
            rows.extend(rolled.map_err(during("usage (rollups)"))?);
        }
        Ok(usage::merge(rows))
    }

    async fn usage_raw(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        Backend::usage(self, query).await.map_err(during("usage"))
    }

    /// The plans of the parts [`Store::usage`] runs, the edges' first.
    async fn explain_usage(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError> {
        let Some(split) = query.split_for_rollups() else {
            let plan = Backend::explain_usage(self, query).await;
            return plan.map_err(during("explain_usage"));
        };
        let mut steps = Vec::new();
        if !split.raw.pieces.is_empty() {
            steps.push("-- the edges, from the sessions".to_owned());
            let plan = Backend::explain_usage(self, &split.raw).await;
            steps.extend(plan.map_err(during("explain_usage"))?);
        }
        if !split.rollups.pieces.is_empty() {
            steps.push("-- the whole buckets, from the rollups".to_owned());
            let plan = Backend::explain_usage_rollups(self, &split.rollups).await;
            steps.extend(plan.map_err(during("explain_usage (rollups)"))?);
        }
        Ok(steps)
    }
}
