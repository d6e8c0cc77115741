//! The fleet watchdog (docs/operations.md). Each pass, on the one replica that
//! holds the lease: unhealthy phones are
//! restarted, then reset (after the operator's diagnostics, `diagnostics.rs`), then marked
//! broken, within budgets; abnormal encoding servers are restarted within their own
//! (`encode.rs`); every decision goes to the recovery log, and the jobs are followed to
//! their end. The loops that free phones without a control plane live here too: the hold
//! sweeper ([`HoldSweeper`]) and the closing of abandoned sessions ([`Abandonment`]).

mod abandon;
mod diagnostics;
mod encode;
mod holds;
mod incidents;
mod lease;
mod policy;
mod reset;
mod retention;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use chrono::SecondsFormat;
use tokio::task::JoinHandle;

pub use abandon::{Abandonment, AbandonmentTask};
pub use holds::HoldSweeper;
use incidents::Servers;
pub use policy::{
    Action, Budgets, Decision, Outcome, Past, Reason, Standing, acted, candidate, decide,
};
use reset::ResetProperty;
pub use retention::{BookRetention, RetentionTask};

use crate::clock::Clock;
use crate::config::{FleetSettings, WatchdogSettings};
use crate::cph::properties::merge_for_reset;
use crate::cph::{
    ACCOUNT_CODES, CphClient, CphError, PHONE_NOT_FOUND, PhoneDetail, model::job_status, model::status,
};
use crate::domain::{ParseError, PhoneId, RecoveryMark, UtcTime};
use crate::metrics::Metrics;
use crate::rollout::Rollouts;
use crate::store::{
    Diagnostics, FinishedRecovery, HeartbeatBuffer, NewRecovery, PhoneHealth, Recovery, Role,
    Store, StoreError,
};
use crate::telemetry::ErrorChain;

/// Beyond the sends themselves, for [`Watchdog::sending_bound`]: the sender's own steps
/// between logging a recovery and noting its job (a store write or two).
const SENDING_MARGIN: Duration = Duration::from_secs(10);

/// The CPH calls one recovery's send can make, for [`Watchdog::sending_bound`]: a reset,
/// its one resend without the properties it was refused for (`reset.rs`), and, when the
/// resend's answer is lost (502/504), the lookup of its jobs by request id (4.4.2) that
/// reconciles it (`CphClient::batch`). It was two, and a recovery whose resend was being
/// reconciled could be re-read, and closed as succeeded, before its reset was accepted.
const CALLS_PER_SEND: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("phone {0} is excluded from recovery (watchdog.exclude)")]
    Excluded(String),
    #[error("a recovery of phone {0} is already in progress")]
    InProgress(String),
    #[error("phone {0} reached watchdog.hourly_cap recoveries in the last hour")]
    HourlyCap(String),
    #[error("watchdog.max_in_flight recovery jobs are already running")]
    InFlightCap,
    /// Left out of the control plane's listings (4.3.1) or unknown to it (4.3.2 `CPS.0005`):
    /// a restart or reset would be refused for a phone it does not have.
    #[error("the control plane no longer lists phone {0}")]
    Unlisted(String),
    /// A silent phone came back while its recovery was being prepared: nothing sent.
    #[error("phone {0} was heard again; nothing sent")]
    Heard(String),
    /// An update restarts the game and the rollout follows it to its end: a restart would
    /// cut it short, a reset undo it (docs/operations.md, "Rolling out a game version").
    #[error("rollout {rollout} is updating phone {phone}; retry once its update ended")]
    InRollout { phone: String, rollout: i64 },
    /// `watchdog.enabled = false` on this replica: a job sent from here would be followed
    /// by nobody, its recovery `pending` for good (and counted against the in-flight cap).
    #[error(
        "the watchdog is off on this replica (watchdog.enabled = false): nothing would follow \
         the job; use `cphub phones restart|reset --wait`, which follows it itself"
    )]
    Off,
    /// A phone id the control plane gave that cphub cannot take: a bug, not a refusal.
    #[error(transparent)]
    Invalid(#[from] ParseError),
}

pub struct Watchdog {
    store: Arc<dyn Store>,
    client: Arc<CphClient>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    settings: WatchdogSettings,
    stale_after: Duration,
    /// How long a phone that fell silent on a server the incident rule watches waits for
    /// its server-mates: two heartbeat intervals (see [`Servers::waits`]).
    incident_window: Duration,
    /// The callback properties a reset re-applies; None when callbacks.public_url is unset.
    reset_property: Option<String>,
    started: Instant,
    /// Recovery ids whose job this process is following.
    following: Mutex<HashSet<i64>>,
    /// Set while the control plane refuses the account (7.2 CPS.0006/0007/0008): no
    /// recovery is started until a call goes through again.
    paused: Mutex<Option<Pause>>,
    /// When this watchdog was made, and the newest recovery-log id it has looked at for
    /// account refusals recorded by others ([`Watchdog::notice_account_refusals`]).
    created_at: UtcTime,
    account_log_seen: Mutex<i64>,
    /// The rollout engine, run after each pass on the same lease: one replica acts on the
    /// fleet, and a recovery and an update are never decided at the same time.
    rollouts: OnceLock<Arc<Rollouts>>,
    /// This replica's heartbeat buffer: silence is not judged while it is behind.
    heartbeats: OnceLock<Arc<HeartbeatBuffer>>,
    /// When the encoding servers were last listed (see `encode.rs`).
    encode_servers_listed: Mutex<Option<Instant>>,
}

/// Why recoveries are paused, and the phone whose re-read tells when they may resume.
/// `recorded` once the pause is in `account_pauses` (its `fleet.incident` written): a pause
/// begins where no `.await` fits (a guard, a closure), so it is recorded just after.
#[derive(Debug, Clone)]
struct Pause {
    code: String,
    probe: String,
    recorded: bool,
}

pub struct WatchdogTask(JoinHandle<()>);

impl WatchdogTask {
    pub fn stop(self) {
        self.0.abort();
    }
}

impl Watchdog {
    pub fn new(
        store: Arc<dyn Store>,
        client: Arc<CphClient>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        settings: WatchdogSettings,
        fleet: &FleetSettings,
        reset_property: Option<String>,
    ) -> Arc<Watchdog> {
        if reset_property.is_none() {
            tracing::warn!(
                "callbacks.public_url is unset: the watchdog will restart phones but not reset them"
            );
        }
        let created_at = clock.now();
        Arc::new(Watchdog {
            store,
            client,
            clock,
            metrics,
            settings,
            stale_after: fleet.stale_after(),
            incident_window: Duration::from_secs(2 * fleet.heartbeat_interval_secs),
            reset_property,
            started: Instant::now(),
            following: Mutex::new(HashSet::new()),
            paused: Mutex::new(None),
            encode_servers_listed: Mutex::new(None),
            created_at,
            account_log_seen: Mutex::new(0),
            rollouts: OnceLock::new(),
            heartbeats: OnceLock::new(),
        })
    }

    /// Drives the rollouts after each pass (see the field).
    pub fn drive_rollouts(&self, rollouts: Arc<Rollouts>) {
        let _ = self.rollouts.set(rollouts);
    }

    /// The buffer this replica's heartbeats wait in: while it has not caught up with a
    /// failed flush, no phone is judged silent.
    pub fn judge_silence_by(&self, heartbeats: Arc<HeartbeatBuffer>) {
        let _ = self.heartbeats.set(heartbeats);
    }

    /// Whether the book's `last_seen_at` can be trusted: no heartbeat flush has failed
    /// since the last that wrote everything it took. After a database outage every phone
    /// looks silent until the backlog is written, and restarting the fleet for cphub's
    /// outage is the wave `startup_grace_secs` keeps a restart of cphub from causing.
    fn heartbeats_caught_up(&self) -> bool {
        (self.heartbeats.get()).is_none_or(|buffer| buffer.caught_up(self.stale_after))
    }

    /// Runs passes every `watchdog.interval_ms` while this replica holds the lease.
    pub fn spawn(self: &Arc<Self>) -> WatchdogTask {
        let watchdog = Arc::clone(self);
        WatchdogTask(tokio::spawn(async move { watchdog.run().await }))
    }

    async fn run(self: Arc<Self>) {
        let mut lease = None;
        let mut ticks =
            tokio::time::interval(Duration::from_millis(self.settings.interval_ms.max(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if lease.is_none() {
                lease = self.store.try_lead(Role::Watchdog).await.unwrap_or_else(|error| {
                    tracing::warn!(error = %ErrorChain(&error), "watchdog cannot ask for the lease");
                    None
                });
                if lease.is_some() {
                    tracing::info!("this replica runs the watchdog");
                    self.metrics.watchdog_leader.set(1);
                }
            }
            let Some(held) = lease.as_mut() else { continue };
            if !held.held().await {
                tracing::warn!("watchdog lease lost");
                self.metrics.watchdog_leader.set(0);
                lease = None;
                continue;
            }
            if let Err(error) = self.pass().await {
                tracing::warn!(error = %ErrorChain(&error), "watchdog pass failed; will retry");
            }
            if let Some(rollouts) = self.rollouts.get()
                && let Err(error) = rollouts.tick().await
            {
                tracing::warn!(error = %ErrorChain(&error), "rollout tick failed; will retry");
            }
        }
    }

    /// One look at the fleet.
    pub async fn pass(self: &Arc<Self>) -> Result<(), WatchdogError> {
        let now = self.clock.now();
        let fresh_since = now.minus(self.stale_after);
        let pending = self.store.pending_recoveries().await?;
        self.follow_pending(&pending, now);
        self.store.clear_recovered(fresh_since).await?;
        // Monotonic: a wall-clock jump cannot end the grace early.
        if self.started.elapsed() < Duration::from_secs(self.settings.startup_grace_secs) {
            return Ok(());
        }
        if !self.heartbeats_caught_up() {
            tracing::debug!("heartbeats not all in the book since a failed flush; no phone judged silent");
            return Ok(());
        }
        let phones = self.store.unhealthy_phones(fresh_since).await?;
        let servers = self.server_incidents(&phones, fresh_since, now).await?;
        self.notice_account_refusals().await?;
        self.record_pause().await?;
        if !self.account_usable().await? {
            return Ok(());
        }
        // Rollout updates share the budget (docs/operations.md "Rolling out a game version").
        let mut in_flight = pending.len() + self.store.rollout_jobs_in_flight().await? as usize;
        in_flight += self.watch_encode_servers(now, in_flight).await?;
        for phone in phones {
            if self.pause().is_some() {
                break;
            }
            if self.left_alone(&phone, &servers, fresh_since) {
                continue;
            }
            let silent = phone.last_seen_at.is_some_and(|seen| seen < fresh_since);
            match self.consider(&phone, silent, now, in_flight).await {
                Ok(started) => in_flight += started as usize,
                // The book counted the cap reached (jobs started elsewhere since the pass
                // read it): the rest of the pass prepares no more jobs it could not send.
                Err(WatchdogError::InFlightCap) => in_flight = self.settings.max_in_flight,
                Err(error) => return Err(error),
            }
        }
        self.record_pause().await
    }

    /// Excluded and broken phones, phones of a server with an open (or just closed)
    /// incident, and phones that just fell silent on a server the incident rule watches are
    /// not considered.
    fn left_alone(&self, phone: &PhoneHealth, servers: &Servers, fresh_since: UtcTime) -> bool {
        if self.set_aside(phone) {
            return true;
        }
        if servers.holds(phone) {
            tracing::debug!(phone_id = %phone.phone_id, "watchdog leaves a phone alone: its server has an incident, open or just closed");
            return true;
        }
        servers.waits(phone, fresh_since, self.incident_window)
    }

    fn pause(&self) -> Option<Pause> {
        self.paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The control plane refused the account (7.2): pauses every recovery. Logged once per
    /// pause, not once per phone.
    fn pause_for_account(&self, code: &str, phone_id: &str) {
        let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        if paused.is_none() {
            tracing::warn!(
                code,
                phone_id,
                "CPH refuses the account (chapter 7.2: CPS.0006 arrears, CPS.0007 frozen, \
                 CPS.0008 unverified): all recoveries paused until a person fixes the account"
            );
            self.metrics.cph_account_blocked.set(1);
            *paused = Some(Pause {
                code: code.to_owned(),
                probe: phone_id.to_owned(),
                recorded: false,
            });
        }
    }

    /// Pauses when `error` is account-level (7.2); true if it was.
    fn pause_if_account_level(&self, error: &CphError, phone_id: &str) -> bool {
        let code = error.code().filter(|_| error.is_account_level());
        if let Some(code) = code {
            self.pause_for_account(code, phone_id);
        }
        code.is_some()
    }

    /// Account refusals (7.2) recorded in the log by others since the last look — `cphub
    /// phones reset|restart`, run as a process of its own, records one when it hits arrears
    /// — pause recoveries here too. Rows older than this watchdog are not looked at.
    async fn notice_account_refusals(&self) -> Result<(), WatchdogError> {
        let log = self
            .store
            .recoveries(None, Some(self.created_at), 50)
            .await?;
        let refused = {
            let mut seen = self
                .account_log_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let newer = log.iter().filter(|r| r.id > *seen);
            let refused = newer.clone().find(|r| past(r).account_blocked).cloned();
            *seen = newer.map(|r| r.id).max().unwrap_or(*seen);
            refused
        };
        if let Some(refusal) = refused {
            let error = refusal.error.unwrap_or_default();
            let code = error.split(':').next().unwrap_or_default();
            self.pause_for_account(code, &refusal.phone_id);
        }
        self.adopt_recorded_pause().await
    }

    /// A pause recorded by another replica, or by this process before a restart, pauses
    /// here too: the durable record, not each replica's memory, says whether the account is
    /// refused. Adopted as recorded, so it is not opened (nor announced) a second time.
    async fn adopt_recorded_pause(&self) -> Result<(), WatchdogError> {
        if self.pause().is_some() {
            return Ok(());
        }
        let Some(open) = self.store.account_pause().await? else {
            return Ok(());
        };
        self.pause_for_account(&open.code, open.probe_phone_id.as_str());
        self.mark_recorded();
        Ok(())
    }

    /// Writes a pause begun in memory to `account_pauses`, which writes its
    /// `fleet.incident` in the same transaction; a pause already open there (another
    /// replica's) is left as it is, so there is one event per pause.
    async fn record_pause(&self) -> Result<(), WatchdogError> {
        let Some(pause) = self.pause().filter(|p| !p.recorded) else {
            return Ok(());
        };
        let probe = PhoneId::parse("probe", pause.probe.clone())?;
        let now = self.clock.now();
        self.store
            .open_account_pause(&pause.code, &probe, now)
            .await?;
        self.mark_recorded();
        Ok(())
    }

    fn mark_recorded(&self) {
        let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = paused.as_mut() {
            current.recorded = true;
        }
    }

    /// While paused, one cheap call (re-reading the phone that was refused, chapter 4.3.2)
    /// tells whether the account is usable again; false while it is not. Any answer other
    /// than an account-level error (even a 404) means the account is served again.
    async fn account_usable(&self) -> Result<bool, WatchdogError> {
        let Some(pause) = self.pause() else {
            return Ok(true);
        };
        let still_refused = match self.client.phone(&pause.probe).await {
            Ok(_) => false,
            Err(error) if error.is_account_level() => true,
            Err(error @ CphError::Api { .. }) => {
                tracing::debug!(error = %ErrorChain(&error), "the account is served again");
                false
            }
            Err(error) => {
                tracing::debug!(error = %ErrorChain(&error), "recoveries stay paused: the control plane cannot be asked");
                true
            }
        };
        if still_refused {
            return Ok(false);
        }
        // The end is recorded (with its fleet.incident) before recoveries resume: if the
        // write fails, the pause stays and the next pass asks again.
        self.store.close_account_pause(self.clock.now()).await?;
        tracing::info!(
            code = pause.code,
            "CPH serves the account again: recoveries resume"
        );
        *self.paused.lock().unwrap_or_else(PoisonError::into_inner) = None;
        self.metrics.cph_account_blocked.set(0);
        Ok(true)
    }

    /// Decides for one phone; true when a job was started, [`WatchdogError::InFlightCap`]
    /// when the book found `watchdog.max_in_flight` jobs running as it was logged. Only a
    /// candidate of chapter 4.3.1 is considered, and it is re-read from the control plane
    /// (chapter 4.3.2) right before a restart or reset: the book's status may be a phone
    /// sync old.
    async fn consider(
        self: &Arc<Self>,
        phone: &PhoneHealth,
        silent: bool,
        now: UtcTime,
        in_flight: usize,
    ) -> Result<bool, WatchdogError> {
        let Some(reason) = candidate(phone.cph_status, silent) else {
            tracing::debug!(phone_id = %phone.phone_id, cph_status = phone.cph_status, "watchdog leaves a phone alone: its status is not recovered");
            return Ok(false);
        };
        let history = self.history(&phone.phone_id, now).await?;
        match decide(reason, &history, now, &self.budgets()) {
            Decision::Wait(why) => {
                tracing::debug!(phone_id = %phone.phone_id, why, "watchdog waits");
                Ok(false)
            }
            Decision::Act(Action::MarkBroken) => {
                self.mark_broken(&phone.phone_id, reason, now).await?;
                Ok(false)
            }
            Decision::Act(_) if in_flight >= self.settings.max_in_flight => {
                tracing::debug!(phone_id = %phone.phone_id, "watchdog waits: jobs in flight at the cap");
                Ok(false)
            }
            Decision::Act(action) => {
                let detail = match self.client.phone(phone.phone_id.as_str()).await {
                    Ok(detail) => detail,
                    Err(error) if error.code() == Some(PHONE_NOT_FOUND) => {
                        self.gone(phone.phone_id.as_str(), now).await?;
                        return Ok(false);
                    }
                    Err(error) => {
                        if !self.pause_if_account_level(&error, phone.phone_id.as_str()) {
                            tracing::warn!(phone_id = %phone.phone_id, error = %ErrorChain(&error), "watchdog waits: the phone cannot be re-read before acting");
                        }
                        return Ok(false);
                    }
                };
                let fresh = detail.phone.status;
                let Some(reason) = candidate(Some(fresh), silent) else {
                    self.skip(&phone.phone_id, reason, action, fresh).await?;
                    return Ok(false);
                };
                // The status may have changed within the candidates (running to restart
                // failed): decided again on the fresh one.
                match decide(reason, &history, now, &self.budgets()) {
                    Decision::Act(action @ (Action::Restart | Action::Reset)) => {
                        match self.recover(&phone.phone_id, reason, action, Some(detail)).await {
                            Ok(_) => Ok(!self.settings.dry_run),
                            // An operator's recovery or a rollout update came first, or the
                            // phone came back while the recovery was being prepared.
                            Err(
                                WatchdogError::InProgress(_)
                                | WatchdogError::InRollout { .. }
                                | WatchdogError::Heard(_),
                            ) => Ok(false),
                            Err(error) => Err(error),
                        }
                    }
                    _ => Ok(false),
                }
            }
        }
    }

    /// 4.3.2 answered `CPS.0005` (7.2, "the cloud phone you queried does not exist"): the
    /// phone is gone, its server released outside cphub. Unlisted at once, as the next phone
    /// syncs would mark it, rather than re-read every pass until they do.
    async fn gone(&self, phone_id: &str, now: UtcTime) -> Result<(), WatchdogError> {
        let Ok(phone_id) = PhoneId::parse("phone_id", phone_id.to_owned()) else {
            return Ok(());
        };
        tracing::info!(%phone_id, "the control plane does not know the phone (CPS.0005): unlisted, left alone");
        self.store.record_unlisted(&phone_id, now).await?;
        Ok(())
    }

    /// The phone was re-read right before acting and is no longer a candidate: nothing is
    /// sent; the skip goes to the log, and the fresh status to the book at once, so that
    /// neither the next pass nor allocation goes by the old one.
    async fn skip(
        &self,
        phone_id: &PhoneId,
        reason: Reason,
        action: Action,
        fresh: i32,
    ) -> Result<(), WatchdogError> {
        let now = self.clock.now();
        let detail = format!(
            "re-read before the {action} (chapter 4.3.2): status {fresh} ({}), no longer a \
             recovery candidate; left alone",
            status::name(fresh)
        );
        tracing::info!(%phone_id, cph_status = fresh, action = action.as_str(), "watchdog skips a recovery: the phone's status changed since the last sync");
        self.store.record_cph_status(phone_id, fresh, now).await?;
        let record = NewRecovery {
            phone_id: phone_id.clone(),
            reason,
            action,
            dry_run: self.settings.dry_run,
            outcome: Outcome::Skipped,
            error: None,
            started_at: now,
            ended_at: Some(now),
            detail: Some(detail),
            phone_state: None,
            diagnostics: Default::default(),
            unheard_since: None,
            in_flight_cap: None,
        };
        self.store.start_recovery(&record).await?;
        self.metrics
            .recoveries
            .with_label_values(&[action.as_str(), Outcome::Skipped.as_str()])
            .inc();
        Ok(())
    }

    /// Whether a job sent from this replica is followed: refused with
    /// [`WatchdogError::Off`] when its loop does not run, as a job sent by a request (the
    /// API, the console) would be followed by nobody. The CLI's `--wait` follows its own.
    pub fn check_followed(&self) -> Result<(), WatchdogError> {
        match self.settings.enabled {
            true => Ok(()),
            false => Err(WatchdogError::Off),
        }
    }

    /// A restart or reset asked for by an operator (`POST /api/v1/phones/{id}/restart`):
    /// the same log and budgets, but no waiting out cooldowns or grace periods.
    pub async fn manual(
        self: &Arc<Self>,
        phone_id: &PhoneId,
        action: Action,
    ) -> Result<Recovery, WatchdogError> {
        let now = self.clock.now();
        if self.excluded(phone_id) {
            return Err(WatchdogError::Excluded(phone_id.to_string()));
        }
        let fresh_since = now.minus(self.stale_after);
        let phone = self.store.phone(phone_id, fresh_since).await?;
        if phone.is_some_and(|p| p.state == "unlisted") {
            return Err(WatchdogError::Unlisted(phone_id.to_string()));
        }
        if let Some(rollout) = self.store.rollout_updating(phone_id).await? {
            let phone = phone_id.to_string();
            return Err(WatchdogError::InRollout { phone, rollout });
        }
        let history = self.history(phone_id, now).await?;
        if history
            .first()
            .is_some_and(|p| p.outcome == Outcome::Pending)
        {
            return Err(WatchdogError::InProgress(phone_id.to_string()));
        }
        if acted(&history) as u32 >= self.settings.hourly_cap {
            return Err(WatchdogError::HourlyCap(phone_id.to_string()));
        }
        let running = usize::try_from(self.store.jobs_in_flight().await?).unwrap_or(0);
        if running >= self.settings.max_in_flight {
            return Err(WatchdogError::InFlightCap);
        }
        let recovered = self.recover(phone_id, Reason::Manual, action, None).await;
        self.record_pause().await?;
        recovered
    }

    /// Excluded, or marked broken: never acted on automatically, nor counted towards a
    /// server incident.
    fn set_aside(&self, phone: &PhoneHealth) -> bool {
        self.excluded(&phone.phone_id) || phone.recovery_state.as_deref() == Some("broken")
    }

    /// On `watchdog.exclude`: never acted on, automatically or by hand.
    fn excluded(&self, phone_id: &PhoneId) -> bool {
        self.settings.exclude.iter().any(|p| p == phone_id.as_str())
    }

    fn budgets(&self) -> Budgets {
        Budgets {
            grace_after_recovery: Duration::from_secs(self.settings.grace_after_recovery_secs),
            cooldown: Duration::from_secs(self.settings.cooldown_secs),
            hourly_cap: self.settings.hourly_cap,
            dry_run: self.settings.dry_run,
        }
    }

    async fn history(&self, phone_id: &PhoneId, now: UtcTime) -> Result<Vec<Past>, WatchdogError> {
        let hour_ago = now.minus(Duration::from_secs(3600));
        // Skipped decisions are kept: `decide` and `acted` pass over them.
        let log = self
            .store
            .recoveries(Some(phone_id), Some(hour_ago), 50)
            .await?;
        Ok(log.iter().map(past).collect())
    }

    async fn mark_broken(
        &self,
        phone_id: &PhoneId,
        reason: Reason,
        now: UtcTime,
    ) -> Result<(), WatchdogError> {
        tracing::error!(
            %phone_id,
            "phone marked broken: recoveries keep failing; left alone until it heartbeats again"
        );
        let record = NewRecovery {
            phone_id: phone_id.clone(),
            reason,
            action: Action::MarkBroken,
            dry_run: self.settings.dry_run,
            outcome: if self.settings.dry_run {
                Outcome::DryRun
            } else {
                Outcome::Succeeded
            },
            error: None,
            started_at: now,
            ended_at: Some(now),
            detail: None,
            phone_state: (!self.settings.dry_run).then_some(RecoveryMark::Broken),
            diagnostics: Default::default(),
            unheard_since: None,
            in_flight_cap: None,
        };
        self.store.start_recovery(&record).await?;
        self.metrics
            .recoveries
            .with_label_values(&["mark_broken", record.outcome.as_str()])
            .inc();
        Ok(())
    }

    /// Logs the decision, then (unless dry run) calls the control plane and follows the job.
    /// `detail`: the phone as just re-read (chapter 4.3.2), if it was; a reset reads it if not.
    async fn recover(
        self: &Arc<Self>,
        phone_id: &PhoneId,
        reason: Reason,
        action: Action,
        detail: Option<PhoneDetail>,
    ) -> Result<Recovery, WatchdogError> {
        let dry_run = self.settings.dry_run;
        let mut reset = match action {
            Action::Reset => match self.reset_property(phone_id, detail).await {
                Ok(reset) => Some(reset),
                Err(error) => return self.refuse(phone_id, reason, action, error).await,
            },
            Action::Restart | Action::MarkBroken | Action::Hold => None,
        };
        // Only a reset that will be sent wipes the evidence; a dry run calls nothing.
        let diagnostics = match (&reset, dry_run) {
            (Some(_), false) => self.diagnose(phone_id).await,
            _ => Diagnostics::default(),
        };
        let now = self.clock.now();
        let record = NewRecovery {
            phone_id: phone_id.clone(),
            reason,
            action,
            dry_run,
            outcome: if dry_run {
                Outcome::DryRun
            } else {
                Outcome::Pending
            },
            error: None,
            started_at: now,
            ended_at: dry_run.then_some(now),
            detail: reset.as_ref().map(|r| r.note.clone()),
            phone_state: (!dry_run).then_some(RecoveryMark::Recovering),
            diagnostics,
            // Decided on the pass's snapshot, then seconds of reads and diagnostics: a phone
            // heard meanwhile may have a player again, whom a reset would cut off.
            unheard_since: (reason == Reason::Stale).then(|| now.minus(self.stale_after)),
            in_flight_cap: Some(self.settings.max_in_flight),
        };
        let recovery = match self.store.start_recovery(&record).await {
            Ok(recovery) => recovery,
            Err(StoreError::PhoneHeard(phone)) => {
                tracing::info!(%phone_id, action = action.as_str(), "recovery not sent: the phone was heard again while it was being prepared");
                return Err(WatchdogError::Heard(phone));
            }
            Err(StoreError::InFlightCap(cap)) => {
                tracing::info!(%phone_id, action = action.as_str(), cap, "recovery not sent: watchdog.max_in_flight jobs were started meanwhile (another replica, an operator, a rollout)");
                return Err(WatchdogError::InFlightCap);
            }
            Err(StoreError::PhoneBusy { phone, rollout }) => {
                tracing::info!(%phone_id, action = action.as_str(), "recovery not sent: another one, or a rollout update, was decided for the phone meanwhile");
                return Err(match rollout {
                    Some(rollout) => WatchdogError::InRollout { phone, rollout },
                    None => WatchdogError::InProgress(phone),
                });
            }
            Err(error) => return Err(error.into()),
        };
        tracing::info!(
            %phone_id,
            reason = reason.as_str(),
            action = action.as_str(),
            dry_run,
            "watchdog recovers a phone"
        );
        if dry_run {
            self.metrics
                .recoveries
                .with_label_values(&[action.as_str(), "dry_run"])
                .inc();
            return Ok(recovery);
        }
        let started = self.start_job(phone_id, action, reset.as_mut()).await;
        // The reset may have been sent again without properties it refused: say so.
        let detail = reset.as_ref().map(|r| r.note.as_str());
        match started {
            Ok(Started::Job { request_id, job_id }) => {
                self.store
                    .note_recovery_job(recovery.id, request_id.as_deref(), Some(&job_id), detail)
                    .await?;
                self.follow(recovery.id, phone_id.as_str(), action, job_id);
            }
            Ok(Started::Unknown { request_id, error }) => {
                tracing::warn!(%phone_id, action = action.as_str(), request_id, error, "recovery sent, its answer lost (chapter 7.1.2): pending until reconciled, never sent again");
                self.store
                    .note_recovery_job(recovery.id, request_id.as_deref(), None, detail)
                    .await?;
            }
            Err((outcome, error)) => {
                self.store
                    .note_recovery_job(recovery.id, None, None, detail)
                    .await?;
                self.finish(recovery.id, action, outcome, None, Some(error))
                    .await?
            }
        }
        // As it stands now, its job or its refusal recorded: a manual restart's answer says
        // what became of it, not the row as first inserted (`pending`, no job).
        // A failed read changes nothing of what was sent: the row as first inserted then.
        let now = self.store.recovery(recovery.id).await.ok().flatten();
        Ok(now.unwrap_or(recovery))
    }

    /// A recovery that cannot be sent safely: logged as an error, nothing called.
    async fn refuse(
        &self,
        phone_id: &PhoneId,
        reason: Reason,
        action: Action,
        error: String,
    ) -> Result<Recovery, WatchdogError> {
        tracing::warn!(%phone_id, action = action.as_str(), error, "recovery not sent");
        let now = self.clock.now();
        let record = NewRecovery {
            phone_id: phone_id.clone(),
            reason,
            action,
            dry_run: self.settings.dry_run,
            outcome: Outcome::Error,
            error: Some(error),
            started_at: now,
            ended_at: Some(now),
            detail: None,
            phone_state: None,
            diagnostics: Default::default(),
            unheard_since: None,
            in_flight_cap: None,
        };
        let recovery = self.store.start_recovery(&record).await?;
        self.metrics
            .recoveries
            .with_label_values(&[action.as_str(), Outcome::Error.as_str()])
            .inc();
        Ok(recovery)
    }

    /// The property a reset sends, and what the log says about it. A reset restores factory
    /// settings (chapter 4.3.5), so the phone's own properties (chapter 4.3.2, appendix A.1)
    /// go in with cphub's callback ones over them. When they cannot be had, no reset: it
    /// would wipe them.
    async fn reset_property(
        &self,
        phone_id: &PhoneId,
        detail: Option<PhoneDetail>,
    ) -> Result<ResetProperty, String> {
        let Some(ours) = self.reset_property.as_deref() else {
            return Err(
                "callbacks.public_url is unset: a reset would erase the callback URLs".into(),
            );
        };
        let (current, fallback) = self.own_property(phone_id, detail).await?;
        let (property, kept) = merge_for_reset(&current, ours)
            .map_err(|error| format!("not reset, its properties would be lost: {error}"))?;
        Ok(ResetProperty::new(property, kept, fallback))
    }

    /// The phone's own properties: from `detail` (just re-read) or a read now (4.3.2). When
    /// that read fails or reports none, the properties phone sync last read instead, with
    /// why (the second value); a phone sync never read, neither. A read refused for the
    /// account (7.2) has no fallback: it pauses recoveries, as any other call of the
    /// watchdog does, and is recorded as an account refusal — a manual reset reads the phone
    /// here, and must not leave the other recoveries running into the same refusal.
    async fn own_property(
        &self,
        phone_id: &PhoneId,
        detail: Option<PhoneDetail>,
    ) -> Result<(String, Option<String>), String> {
        let read = match detail {
            Some(detail) => Ok(detail),
            None => self.client.phone(phone_id.as_str()).await,
        };
        let why = match read {
            Ok(PhoneDetail {
                property: Some(current),
                ..
            }) => return Ok((current, None)),
            Ok(_) => {
                "the control plane did not report the phone's properties (chapter 4.3.2)".to_owned()
            }
            Err(error) if self.pause_if_account_level(&error, phone_id.as_str()) => {
                let code = error.code().unwrap_or_default();
                return Err(account_refusal(code, &error.to_string()));
            }
            Err(error) => format!(
                "the phone's properties cannot be read (chapter 4.3.2): {}",
                ErrorChain(&error)
            ),
        };
        match self.store.synced_property(phone_id).await {
            Ok(Some(synced)) => {
                let at = synced
                    .read_at
                    .datetime()
                    .to_rfc3339_opts(SecondsFormat::Secs, true);
                let source = format!("{why}; as phone sync read them at {at}");
                Ok((synced.property, Some(source)))
            }
            Ok(None) => Err(format!(
                "{why}, and phone sync never read them: a reset would wipe them"
            )),
            Err(error) => Err(format!(
                "{why}, nor can phone sync's last read of them be ({}): a reset would wipe them",
                ErrorChain(&error)
            )),
        }
    }

    /// Starts the control-plane job, or says why there is none.
    async fn start_job(
        &self,
        phone_id: &PhoneId,
        action: Action,
        reset: Option<&mut ResetProperty>,
    ) -> Result<Started, (Outcome, String)> {
        let batch = match (action, reset) {
            (Action::Restart, _) => self.client.restart(&[phone_id.to_string()]).await,
            (Action::Reset, Some(reset)) => self.send_reset(phone_id, reset).await,
            // A reset without properties restores factory settings (4.3.5), the callback
            // URLs among them: the phone would never call back. Never sent.
            (Action::Reset, None) => {
                let why = "a reset needs the properties to re-apply; none were prepared";
                return Err((Outcome::Error, why.into()));
            }
            (Action::MarkBroken | Action::Hold, _) => {
                unreachable!("marking broken or holding starts no job")
            }
        };
        if let Err(error) = &batch
            && error.is_outcome_unknown()
        {
            let request_id = match error {
                CphError::AnswerLost { request_id, .. } => request_id.clone(),
                _ => None,
            };
            return Ok(Started::Unknown {
                request_id,
                error: ErrorChain(error).to_string(),
            });
        }
        let batch = batch.map_err(|error: CphError| {
            if self.pause_if_account_level(&error, phone_id.as_str()) {
                let code = error.code().unwrap_or_default();
                (Outcome::Error, account_refusal(code, &error.to_string()))
            } else {
                (Outcome::Error, ErrorChain(&error).to_string())
            }
        })?;
        if let Some(item) = batch.failures().next() {
            let code = item.error_code.clone().unwrap_or_default();
            let message = item.error_msg.clone().unwrap_or_default();
            if ACCOUNT_CODES.contains(&code.as_str()) {
                self.pause_for_account(&code, phone_id.as_str());
                return Err((Outcome::Error, account_refusal(&code, &message)));
            }
            // Refused in its entry: no job started, so nothing is known against the phone
            // (7.2 `CPS.0003` "try again later", `CPS.0010` a phone busy with another job,
            // `CPS.0004`/`CPS.0005` a phone the control plane does not know, which the
            // next pass's re-read (4.3.2) unlists). An error, backed off and tried again
            // gently; a failure would be answered with a factory reset at once.
            return Err((Outcome::Error, format!("{code}: {message}")));
        }
        let job = batch.jobs().next().map(|(_, job)| job.to_owned());
        job.map(|job_id| Started::Job {
            request_id: batch.request_id.clone(),
            job_id,
        })
        // Neither a job nor a refusal for the phone: nothing is known to have started.
        .ok_or((Outcome::Error, "no job in the answer".into()))
    }

    /// Follows pending recoveries this process is not following yet (after a restart of
    /// cphub or a change of leader), so each ends up with an outcome.
    ///
    /// One with neither a job nor a request id yet may still be being sent, by this process
    /// or another (a replica, a `cphub phones reset`): it is reconciled only once its send
    /// would have ended ([`Watchdog::sending_bound`]). Reconciled earlier, the phone re-read
    /// was still running, its reset not yet accepted, and the recovery was closed as
    /// succeeded before its reset had even been sent.
    fn follow_pending(self: &Arc<Self>, pending: &[Recovery], now: UtcTime) {
        let sending_since = now.minus(self.sending_bound());
        for recovery in pending {
            let action = match recovery.action {
                Action::Reset => Action::Reset,
                // Marking broken or holding starts no job: nothing pending to follow.
                Action::Restart | Action::MarkBroken | Action::Hold => Action::Restart,
            };
            let sending = recovery.started_at > sending_since;
            match &recovery.job_id {
                Some(job_id) => {
                    self.follow(recovery.id, &recovery.phone_id, action, job_id.clone())
                }
                None if recovery.request_id.is_none() && sending => {}
                None => self.reconcile(recovery.clone(), action, !sending),
            }
        }
    }

    /// How long after its recovery is logged a recovery's POST may still be under way:
    /// [`CALLS_PER_SEND`] calls, each with its retries ([`CphClient::longest_call`]).
    fn sending_bound(&self) -> Duration {
        self.client.longest_call() * CALLS_PER_SEND + SENDING_MARGIN
    }

    /// A pending recovery without a job: its POST's answer was lost (chapter 7.1.2), or
    /// cphub stopped before it noted the job. Never sent again: its jobs are looked up by
    /// request id (chapter 4.4.2) when one is known, else the phone is re-read (chapter
    /// 4.3.2). Left pending, for the next pass, while neither tells. The phone is re-read
    /// only once the send would have ended (`may_read_phone`), even when the request is
    /// known: a 504 (7.1.2, the gateway timing out) does not say the backend will not
    /// start the job later, and a phone read before then still shows its old status.
    fn reconcile(self: &Arc<Self>, recovery: Recovery, action: Action, may_read_phone: bool) {
        if !self
            .following
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(recovery.id)
        {
            return;
        }
        let watchdog = Arc::clone(self);
        tokio::spawn(async move {
            let settled = watchdog.settle(&recovery, action, may_read_phone).await;
            watchdog
                .following
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&recovery.id);
            match settled {
                Ok(Some(job_id)) => {
                    watchdog.follow(recovery.id, &recovery.phone_id, action, job_id);
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(recovery = recovery.id, error = %ErrorChain(&error), "unknown recovery outcome not reconciled; will try again");
                }
            }
        });
    }

    /// What became of a recovery whose answer was lost: `Some(job)` to follow, or None
    /// (finished here, or still unknown).
    async fn settle(
        &self,
        recovery: &Recovery,
        action: Action,
        may_read_phone: bool,
    ) -> Result<Option<String>, WatchdogError> {
        if let Some(request_id) = &recovery.request_id {
            match self.client.jobs_by_request(request_id).await {
                Ok(jobs) => {
                    if let Some(job) = jobs
                        .into_iter()
                        .find(|j| j.phone_id.as_deref().is_none_or(|p| p == recovery.phone_id))
                    {
                        self.store
                            .note_recovery_job(recovery.id, None, Some(&job.job_id), None)
                            .await?;
                        return Ok(Some(job.job_id));
                    }
                }
                // The account refused: nothing can be read.
                Err(error) if self.pause_if_account_level(&error, &recovery.phone_id) => {
                    return Ok(None);
                }
                // A passing failure (5xx, a timeout, CPS.0003, the breaker open): the jobs
                // may yet be listed, and a late-starting job (a 504) found and followed.
                Err(error) if error.may_pass() => return Ok(None),
                // Refused for good (4.4.2 not knowing the request id would leave the
                // recovery pending, its phone `recovering`, for ever): the phone tells.
                Err(error) => {
                    tracing::debug!(recovery = recovery.id, error = %ErrorChain(&error), "jobs of a lost answer not listed (4.4.2); the phone's status decides");
                }
            }
        }
        if !may_read_phone {
            return Ok(None);
        }
        if recovery.reason == Reason::EncodeServerAbnormal {
            if let Some((outcome, note)) = self.settle_encode_server(&recovery.phone_id).await {
                self.finish(recovery.id, action, outcome, None, Some(note))
                    .await?;
            }
            return Ok(None);
        }
        let fresh = match self.client.phone(&recovery.phone_id).await {
            Ok(detail) => detail.phone.status,
            // The phone is gone (its server released elsewhere): no job will tell more, and
            // re-reading it every pass would only repeat the answer.
            Err(error) if error.code() == Some(PHONE_NOT_FOUND) => {
                let note = "outcome unknown (chapter 7.1.2), no job found; re-read: the control plane does not know the phone (CPS.0005)";
                self.finish(recovery.id, action, Outcome::Error, None, Some(note.to_owned()))
                    .await?;
                self.gone(&recovery.phone_id, self.clock.now()).await?;
                return Ok(None);
            }
            Err(error) => {
                self.pause_if_account_level(&error, &recovery.phone_id);
                return Ok(None);
            }
        };
        let note = format!(
            "outcome unknown (chapter 7.1.2), no job found; re-read: status {fresh} ({})",
            status::name(fresh)
        );
        let outcome = match Standing::of(fresh) {
            // Restarting or resetting: the job is under way; ask again next pass.
            Standing::Transitional => return Ok(None),
            // Running, with no job found: whether it ran is not known (a 500 or 503 may have
            // started nothing). An error, so a restart is tried again rather than taken for
            // one that did not help and answered with a reset (`policy::decide`).
            Standing::Running => Outcome::Error,
            Standing::Failed(_) => Outcome::Failed,
            Standing::OutOfService => Outcome::Error,
        };
        self.finish(recovery.id, action, outcome, None, Some(note))
            .await?;
        Ok(None)
    }

    fn follow(self: &Arc<Self>, id: i64, phone_id: &str, action: Action, job_id: String) {
        if !self
            .following
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
        {
            return;
        }
        let watchdog = Arc::clone(self);
        let phone_id = phone_id.to_owned();
        tokio::spawn(async move {
            let (outcome, error) = match watchdog.client.follow_job(&job_id).await {
                Ok(job) if job.status == job_status::SUCCEEDED => (Outcome::Succeeded, None),
                Ok(job) => (
                    Outcome::Failed,
                    Some(format!(
                        "{}: {}",
                        job.error_code.unwrap_or_default(),
                        job.error_msg.unwrap_or_default()
                    )),
                ),
                Err(error) if watchdog.pause_if_account_level(&error, &phone_id) => {
                    let code = error.code().unwrap_or_default();
                    (
                        Outcome::Error,
                        Some(account_refusal(code, &error.to_string())),
                    )
                }
                Err(error) => (Outcome::Error, Some(ErrorChain(&error).to_string())),
            };
            if let Err(error) = watchdog
                .finish(id, action, outcome, Some(job_id), error)
                .await
            {
                tracing::warn!(error = %ErrorChain(&error), "recovery outcome not recorded; will follow again");
            }
            watchdog
                .following
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
        });
    }

    async fn finish(
        &self,
        id: i64,
        action: Action,
        outcome: Outcome,
        job_id: Option<String>,
        error: Option<String>,
    ) -> Result<(), WatchdogError> {
        if let Some(error) = &error {
            tracing::warn!(
                recovery = id,
                action = action.as_str(),
                outcome = outcome.as_str(),
                error,
                "recovery did not succeed"
            );
        }
        let finished = FinishedRecovery {
            id,
            outcome,
            request_id: None,
            job_id,
            error,
            ended_at: self.clock.now(),
        };
        self.store.finish_recovery(&finished).await?;
        self.metrics
            .recoveries
            .with_label_values(&[action.as_str(), outcome.as_str()])
            .inc();
        Ok(())
    }
}

/// What a restart or reset POST came to.
enum Started {
    Job {
        request_id: Option<String>,
        job_id: String,
    },
    /// Sent, answer lost (chapter 7.1.2): maybe done. Reconciled, never resent.
    Unknown {
        request_id: Option<String>,
        error: String,
    },
}

fn past(recovery: &Recovery) -> Past {
    Past {
        action: recovery.action,
        outcome: recovery.outcome,
        started_at: recovery.started_at,
        ended_at: recovery.ended_at,
        job_started: recovery.job_id.is_some(),
        account_blocked: recovery.outcome == Outcome::Error
            && recovery
                .error
                .as_deref()
                .is_some_and(|error| ACCOUNT_CODES.iter().any(|code| error.starts_with(code))),
    }
}

/// The recorded error of a recovery the control plane refused for the account (7.2): it
/// starts with the code, which is how the policy tells it from a failure of the phone.
pub fn account_refusal(code: &str, message: &str) -> String {
    format!("{code}: account-level, recoveries paused: {message}")
}
