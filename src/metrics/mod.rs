//! Prometheus metrics (docs/metrics.md). One registry per application, so tests and
//! replicas never share counters. Counters move where things happen; gauges that describe
//! the fleet are recomputed from the store at scrape time, so every replica reports the same.

pub(crate) mod http;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub use http::{record_http, serve_metrics};

use crate::access::DataCheck;
use crate::domain::{Action, EncodeServerState, EventKind, Outcome, Session, UtcTime};
use crate::http::ErrorCode;
use crate::store::{EventOutcome, FlushMeter, QueueMeter, Store, StoreError};

/// Session lengths from one minute to six hours.
const SESSION_BUCKETS: [f64; 10] = [
    60.0, 300.0, 600.0, 1200.0, 1800.0, 2700.0, 3600.0, 7200.0, 14400.0, 21600.0,
];
/// Waits in the queue, from a second to an hour.
const QUEUE_WAIT_BUCKETS: [f64; 11] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// Request latencies, 0.5 ms to 10 s.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0,
];

/// Heartbeat flushes, 1 ms to 10 s: past `0.8 × heartbeat_interval − flush interval` (3 s
/// at the defaults) a late flush makes live phones look stale (docs/scaling.md).
const FLUSH_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 10.0,
];

/// The sign-check refusals (chapter 6.1's answer codes other than success), each counted
/// under its code's label.
const SIGN_CHECK_REFUSALS: [ErrorCode; 11] = [
    ErrorCode::UnknownSession,
    ErrorCode::BadTicket,
    ErrorCode::BadAuthTs,
    ErrorCode::TicketExpired,
    ErrorCode::EncryptedDataRequired,
    ErrorCode::DecryptFailed,
    ErrorCode::TicketReplayed,
    ErrorCode::TicketSessionEnded,
    ErrorCode::InvalidField,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

/// The kinds of write the group-commit writers take, as `cphub_write_queue_*` label them
/// (`writer`: the name from when each kind had a writer of its own). Mints go through the
/// writers on SQLite only; their series read 0 on PostgreSQL.
const WRITERS: [&str; 3] = ["events", "sign_checks", "mints"];

/// How many kinds of write a writer's round can carry, as `cphub_write_rounds_total`'s
/// `kinds` label counts them.
const ROUND_KINDS: [&str; 3] = ["1", "2", "3"];

/// Every `type`/`outcome` pair `cphub_events_total` counts.
const EVENT_LABELS: [(&str, &str); 9] = [
    ("enter", "accepted"),
    ("enter", "duplicate"),
    ("enter", "conflict"),
    ("enter", "ignored"),
    ("quit", "accepted"),
    ("quit", "duplicate"),
    ("quit", "conflict"),
    ("quit", "ignored"),
    ("unknown", "rejected"),
];

/// The results a recovery is counted under when it ends (pending, open and closed are not
/// ends of a restart, reset or mark).
const RECOVERY_RESULTS: [Outcome; 5] = [
    Outcome::Succeeded,
    Outcome::Failed,
    Outcome::Error,
    Outcome::DryRun,
    Outcome::Skipped,
];

pub struct Metrics {
    registry: Registry,
    per_app_labels: bool,
    /// The `app_id` labels seen since start: their series stay, at 0 when nothing counts
    /// them, instead of vanishing from dashboards and `absent()` alerts.
    apps: Mutex<HashSet<String>>,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub sessions_started: IntCounterVec,
    pub sessions_ended: IntCounterVec,
    pub session_duration: HistogramVec,
    pub run_time_mismatches: IntCounter,
    /// Accepted enters naming another app than the session was minted for.
    pub app_mismatches: IntCounter,
    pub phone_mismatches: IntCounter,
    pub sign_checks: IntCounterVec,
    /// What decrypting `encrypted_data` showed (`access.encrypted_data` not `off`).
    pub sign_check_decrypts: IntCounterVec,
    pub events: IntCounterVec,
    /// Descriptive event fields cut to their bound instead of refused.
    pub event_fields_truncated: IntCounterVec,
    pub heartbeats: IntCounter,
    /// What the heartbeat flushes take and write.
    pub heartbeat_flush: FlushMeter,
    /// Callbacks refused for their source address (`callbacks.allowed_networks`).
    pub callbacks_refused: IntCounter,
    /// Jobs waiting in each group-commit writer's queue.
    write_queue: IntGaugeVec,
    /// Jobs a writer dropped unwritten, by why (`store::QueueMeter`).
    write_queue_dropped: IntCounterVec,
    /// Writers' rounds committed, by how many kinds of write shared the transaction.
    write_rounds: IntCounterVec,
    /// Rounds that raced another writer, committed nothing and were decided afresh.
    pub write_rounds_raced: IntCounter,
    pub recoveries: IntCounterVec,
    pub cph_requests: IntCounterVec,
    pub cph_duration: HistogramVec,
    /// 1 on the replica whose watchdog acts.
    pub watchdog_leader: prometheus::IntGauge,
    /// Closed sessions removed by retention of the book.
    pub book_sessions_removed: IntCounter,
    /// 1 on the replica that leads retention of the book.
    pub book_retention_leader: prometheus::IntGauge,
    /// 1 while the watchdog's recoveries are paused for an account-level error (7.2
    /// CPS.0006/0007/0008: arrears, frozen, unverified). No labels: the code is in the log.
    pub cph_account_blocked: prometheus::IntGauge,
    /// Time from joining the wait queue to being assigned a phone, observed by the replica
    /// that hands out the ticket, once per entry.
    pub queue_wait: prometheus::Histogram,
    /// Queue entries that expired unserved (nobody polled them).
    pub queue_expired: IntCounter,
    /// Server incidents opened: most phones of one server silent together (issue #15).
    pub server_incidents: IntCounter,
    /// Server incidents open now, as the leader's watchdog last counted them.
    pub server_incidents_open: prometheus::IntGauge,
    /// Webhook deliveries settled or put back by an attempt, by endpoint and result
    /// (`delivered`, `retried`, `failed`).
    pub webhook_deliveries: IntCounterVec,
    pub webhook_attempts: IntCounterVec,
    /// Age of the oldest event an endpoint has not yet taken, as the dispatcher last saw.
    pub webhook_oldest_undelivered: IntGaugeVec,
    /// Attempts failed one after another at an endpoint; 0 after any success.
    pub webhook_failures_in_a_row: IntGaugeVec,
    sessions_active: IntGaugeVec,
    phones: IntGaugeVec,
    encode_servers: IntGaugeVec,
    queue_length: IntGaugeVec,
    /// Phones of the rollouts under way, by step (from the store, at each scrape).
    rollout_phones: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let metric = HistogramVec::new(opts, labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let metric = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric");
    metric
}

/// A counter without labels.
fn single(registry: &Registry, name: &str, help: &str) -> IntCounter {
    counter(registry, name, help, &[]).with_label_values(&[] as &[&str])
}

fn flush_meter(registry: &Registry) -> FlushMeter {
    FlushMeter {
        duration: histogram(
            registry,
            "cphub_heartbeat_flush_seconds",
            "Heartbeat flushes with something to write, by how long they took",
            &[],
            &FLUSH_BUCKETS,
        )
        .with_label_values(&[] as &[&str]),
        written: single(
            registry,
            "cphub_heartbeats_written_total",
            "Heartbeats written to their phones' rows",
        ),
        failed: single(
            registry,
            "cphub_heartbeat_flush_failures_total",
            "Heartbeat flushes that failed; what they had not written waits for the next",
        ),
        held_back: gauge(
            registry,
            "cphub_heartbeats_held_back",
            "Heartbeats held back after the last flush because they changed nothing yet",
            &[],
        )
        .with_label_values(&[] as &[&str]),
    }
}

impl Metrics {
    /// `per_app_labels`: false folds every `app_id` label into "all" (fleets with very many
    /// games would otherwise create a series per game).
    pub fn new(per_app_labels: bool) -> Metrics {
        let r = Registry::new();
        let single = |name: &str, help: &str| single(&r, name, help);
        let metrics = Metrics {
            per_app_labels,
            apps: Mutex::new(HashSet::new()),
            http_requests: counter(
                &r,
                "cphub_http_requests_total",
                "HTTP requests by route pattern",
                &["method", "route", "status"],
            ),
            http_duration: histogram(
                &r,
                "cphub_http_request_duration_seconds",
                "HTTP request latency",
                &["method", "route"],
                &LATENCY_BUCKETS,
            ),
            sessions_started: counter(
                &r,
                "cphub_sessions_started_total",
                "Sessions entered",
                &["app_id"],
            ),
            sessions_ended: counter(
                &r,
                "cphub_sessions_ended_total",
                "Sessions ended",
                &["app_id", "reason"],
            ),
            session_duration: histogram(
                &r,
                "cphub_session_duration_seconds",
                "Measured session durations",
                &["app_id"],
                &SESSION_BUCKETS,
            ),
            run_time_mismatches: single(
                "cphub_run_time_mismatches_total",
                "Quits whose run_time disagrees with the measured duration",
            ),
            sign_checks: counter(
                &r,
                "cphub_sign_checks_total",
                "Sign checks by result",
                &["result"],
            ),
            sign_check_decrypts: counter(
                &r,
                "cphub_sign_check_decrypt_total",
                "Sign checks by what decrypting encrypted_data showed",
                &["result"],
            ),
            event_fields_truncated: counter(
                &r,
                "cphub_event_fields_truncated_total",
                "Enter/quit deliveries with a descriptive field cut to its bound",
                &["field"],
            ),
            events: counter(
                &r,
                "cphub_events_total",
                "Enter/quit deliveries by outcome",
                &["type", "outcome"],
            ),
            app_mismatches: single(
                "cphub_enter_app_mismatches_total",
                "Accepted enters whose app_id is not the one the session was minted for",
            ),
            phone_mismatches: single(
                "cphub_enter_phone_mismatches_total",
                "Accepted enters whose phone_id is not the phone the session was minted on",
            ),
            heartbeats: single("cphub_heartbeats_total", "Heartbeats accepted"),
            heartbeat_flush: flush_meter(&r),
            callbacks_refused: single(
                "cphub_callbacks_refused_total",
                "Callbacks refused because their client address is outside callbacks.allowed_networks",
            ),
            write_queue: gauge(
                &r,
                "cphub_write_queue_jobs",
                "Writes waiting in a group-commit writer's queue",
                &["writer"],
            ),
            write_queue_dropped: counter(
                &r,
                "cphub_write_queue_dropped_total",
                "Writes a group-commit writer dropped unwritten, by reason",
                &["writer", "reason"],
            ),
            write_rounds: counter(
                &r,
                "cphub_write_rounds_total",
                "Group-commit rounds committed, by how many kinds of write (mints, sign checks, events) shared the round's transaction",
                &["kinds"],
            ),
            write_rounds_raced: single(
                "cphub_write_rounds_raced_total",
                "Group-commit rounds that raced another writer for a row, committed nothing and were decided afresh",
            ),
            recoveries: counter(
                &r,
                "cphub_recoveries_total",
                "Recovery actions by result",
                &["action", "result"],
            ),
            cph_requests: counter(
                &r,
                "cphub_cph_requests_total",
                "CPH management API requests",
                &["operation", "status"],
            ),
            cph_duration: histogram(
                &r,
                "cphub_cph_request_duration_seconds",
                "CPH management API latency",
                &["operation"],
                &LATENCY_BUCKETS,
            ),
            watchdog_leader: gauge(
                &r,
                "cphub_watchdog_leader",
                "1 on the replica whose watchdog acts",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            book_sessions_removed: single(
                "cphub_book_sessions_removed_total",
                "Closed sessions removed from the book by retention",
            ),
            book_retention_leader: gauge(
                &r,
                "cphub_book_retention_leader",
                "1 on the replica that leads retention of the book",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            cph_account_blocked: gauge(
                &r,
                "cphub_cph_account_blocked",
                "1 while watchdog recoveries are paused for a CPH account-level error",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            queue_wait: histogram(
                &r,
                "cphub_queue_wait_seconds",
                "Time from joining the wait queue to assignment",
                &[],
                &QUEUE_WAIT_BUCKETS,
            )
            .with_label_values(&[] as &[&str]),
            queue_expired: single(
                "cphub_queue_expired_total",
                "Wait-queue entries that expired unserved",
            ),
            queue_length: gauge(
                &r,
                "cphub_queue_length",
                "Players waiting in the queue, per app (from the store)",
                &["app_id"],
            ),
            server_incidents: single(
                "cphub_server_incidents_total",
                "Server incidents opened: most phones of one server silent together",
            ),
            server_incidents_open: gauge(
                &r,
                "cphub_server_incidents_open",
                "Server incidents open now (on the replica whose watchdog acts)",
                &[],
            )
            .with_label_values(&[] as &[&str]),
            webhook_deliveries: counter(
                &r,
                "cphub_webhook_deliveries_total",
                "Webhook deliveries by endpoint and what their attempt came to",
                &["endpoint", "result"],
            ),
            webhook_attempts: counter(
                &r,
                "cphub_webhook_attempts_total",
                "Webhook attempts sent, by endpoint",
                &["endpoint"],
            ),
            webhook_oldest_undelivered: gauge(
                &r,
                "cphub_webhook_oldest_undelivered_seconds",
                "Age of the oldest event not yet delivered to the endpoint (0: none waiting)",
                &["endpoint"],
            ),
            webhook_failures_in_a_row: gauge(
                &r,
                "cphub_webhook_failures_in_a_row",
                "Webhook attempts failed one after another at the endpoint",
                &["endpoint"],
            ),
            sessions_active: gauge(
                &r,
                "cphub_sessions_active",
                "Sessions playing now (from the store)",
                &["app_id"],
            ),
            phones: gauge(
                &r,
                "cphub_phones",
                "Phones by state (from the store)",
                &["state"],
            ),
            rollout_phones: gauge(
                &r,
                "cphub_rollout_phones",
                "Phones of the rollouts under way, by step (from the store)",
                &["state"],
            ),
            encode_servers: gauge(
                &r,
                "cphub_encode_servers",
                "Encoding servers by state, as the watchdog last listed them (chapter 4.6.1)",
                &["state"],
            ),
            registry: r,
        };
        metrics.export_known_at_zero();
        metrics.register_build_and_process();
        metrics
    }

    /// Series whose labels are known from the start are exported at 0, so a rate over them
    /// exists before the first occurrence (docs/metrics.md, and the fresh-scrape test that
    /// reads its table).
    fn export_known_at_zero(&self) {
        for result in ["ok", "retry", "reconnect"] {
            self.sign_checks.with_label_values(&[result]);
        }
        for refusal in SIGN_CHECK_REFUSALS {
            self.sign_checks.with_label_values(&[refusal.label()]);
        }
        for (kind, outcome) in EVENT_LABELS {
            self.events.with_label_values(&[kind, outcome]);
        }
        for action in [Action::Restart, Action::Reset, Action::MarkBroken] {
            for outcome in RECOVERY_RESULTS {
                self.recoveries
                    .with_label_values(&[action.as_str(), outcome.as_str()]);
            }
        }
        if !self.per_app_labels {
            self.see_app("all");
        }
        for result in DataCheck::ALL {
            self.sign_check_decrypts
                .with_label_values(&[result.as_str()]);
        }
        self.event_fields_truncated
            .with_label_values(&["error_msg"]);
        for step in crate::domain::PhoneStep::ALL {
            self.rollout_phones.with_label_values(&[step.as_str()]);
        }
        self.count_encode_servers(&[]);
        for writer in WRITERS {
            self.queue_meter(writer);
        }
        self.round_meter();
    }

    /// `cphub_write_rounds_total`'s series, the one for rounds of `n` kinds at `n - 1`.
    pub fn round_meter(&self) -> [IntCounter; 3] {
        ROUND_KINDS.map(|kinds| self.write_rounds.with_label_values(&[kinds]))
    }

    /// The series the writers report one kind of write's queue under (`events`,
    /// `sign_checks`, `mints`).
    pub fn queue_meter(&self, writer: &str) -> QueueMeter {
        let dropped = |reason| self.write_queue_dropped.with_label_values(&[writer, reason]);
        QueueMeter {
            waiting: self.write_queue.with_label_values(&[writer]),
            requester_gone: dropped("requester_gone"),
            queued_too_long: dropped("queued_too_long"),
        }
    }

    /// `cphub_build_info` (always 1: its labels are the news) and, on Linux, the standard
    /// `process_*` series of the Prometheus client libraries.
    fn register_build_and_process(&self) {
        let sha = option_env!("CPHUB_GIT_SHA").unwrap_or("unknown");
        gauge(
            &self.registry,
            "cphub_build_info",
            "1, labelled with the version and git commit of the running binary",
            &["version", "git_sha"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION"), sha])
        .set(1);
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
    }

    /// Every state at 0, then each server's.
    fn count_encode_servers(&self, servers: &[crate::store::EncodeServer]) {
        for state in EncodeServerState::ALL {
            self.encode_servers
                .with_label_values(&[state.as_str()])
                .set(0);
        }
        for server in servers {
            self.encode_servers
                .with_label_values(&[server.state.as_str()])
                .inc();
        }
    }

    fn app<'a>(&self, app_id: &'a str) -> &'a str {
        if self.per_app_labels { app_id } else { "all" }
    }

    /// Creates every per-app series of `app` (the label already folded by [`Self::app`])
    /// the first time it is seen; after that a set lookup.
    fn see_app(&self, app: &str) {
        let mut apps = self.apps.lock().expect("metrics lock");
        if apps.contains(app) {
            return;
        }
        self.sessions_started.with_label_values(&[app]);
        for reason in ["quit", "abandoned"] {
            self.sessions_ended.with_label_values(&[app, reason]);
        }
        self.session_duration.with_label_values(&[app]);
        self.sessions_active.with_label_values(&[app]);
        self.queue_length.with_label_values(&[app]);
        apps.insert(app.to_owned());
    }

    /// The CPH operations the client performs, each at 0 under the status every success is
    /// counted as (`200`), with its latency histogram.
    pub fn export_cph_operations(&self, operations: &[&str]) {
        for operation in operations {
            self.cph_requests.with_label_values(&[operation, "200"]);
            self.cph_duration.with_label_values(&[operation]);
        }
    }

    /// Sets a per-app gauge from `counts`, every app seen before (and not in them) at 0.
    fn set_per_app(&self, gauge: &IntGaugeVec, counts: Vec<(String, i64)>) {
        let counts: Vec<_> = counts
            .into_iter()
            .map(|(app, count)| (self.app(&app).to_owned(), count))
            .collect();
        for (app, _) in &counts {
            self.see_app(app);
        }
        let seen: Vec<String> = self
            .apps
            .lock()
            .expect("metrics lock")
            .iter()
            .cloned()
            .collect();
        for app in seen {
            gauge.with_label_values(&[&app]).set(0);
        }
        for (app, count) in counts {
            gauge.with_label_values(&[&app]).add(count);
        }
    }

    /// Counts one enter/quit delivery; `session` is the session after an accepted event.
    pub fn record_event(&self, kind: EventKind, outcome: EventOutcome, session: Option<&Session>) {
        let kind_label = match kind {
            EventKind::Enter => "enter",
            EventKind::Quit => "quit",
        };
        let outcome_label = match outcome {
            EventOutcome::Accepted => "accepted",
            EventOutcome::Duplicate => "duplicate",
            EventOutcome::Conflict => "conflict",
            EventOutcome::Ignored => "ignored",
        };
        self.events
            .with_label_values(&[kind_label, outcome_label])
            .inc();
        let Some(session) = session.filter(|_| outcome == EventOutcome::Accepted) else {
            return;
        };
        let app = self.app(session.app_id.as_str());
        self.see_app(app);
        match kind {
            EventKind::Enter => self.sessions_started.with_label_values(&[app]).inc(),
            EventKind::Quit => self.sessions_ended.with_label_values(&[app, "quit"]).inc(),
        }
        // The duration becomes known with the second of the two events, whichever it is.
        if let Some(seconds) = session.duration_seconds {
            self.session_duration
                .with_label_values(&[app])
                .observe(seconds as f64);
            if session.run_time_mismatch {
                self.run_time_mismatches.inc();
            }
        }
    }

    /// A session the watchdog closed because its phone went silent.
    /// Every series of the configured endpoints at 0, so an alert sees them from start.
    pub fn export_webhook_endpoints<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            for result in ["delivered", "retried", "failed"] {
                self.webhook_deliveries.with_label_values(&[name, result]);
            }
            self.webhook_attempts.with_label_values(&[name]);
            self.webhook_oldest_undelivered.with_label_values(&[name]);
            self.webhook_failures_in_a_row.with_label_values(&[name]);
        }
    }

    pub fn record_abandoned(&self, session: &Session) {
        let app = self.app(session.app_id.as_str());
        self.see_app(app);
        self.sessions_ended
            .with_label_values(&[app, "abandoned"])
            .inc();
        if let Some(seconds) = session.duration_seconds {
            self.session_duration
                .with_label_values(&[app])
                .observe(seconds as f64);
        }
    }

    pub fn record_rejected_event(&self) {
        self.events
            .with_label_values(&["unknown", "rejected"])
            .inc();
    }

    /// Every step at 0 first, so a step no phone is at reads 0 rather than vanishing.
    fn render_rollout_phones(&self, steps: Vec<(String, i64)>) {
        for step in crate::domain::PhoneStep::ALL {
            self.rollout_phones
                .with_label_values(&[step.as_str()])
                .set(0);
        }
        for (step, count) in steps {
            self.rollout_phones.with_label_values(&[&step]).set(count);
        }
    }

    /// Refreshes the store-backed gauges and renders the text exposition format.
    pub async fn render(
        &self,
        store: &dyn Store,
        now: UtcTime,
        stale_after: Duration,
    ) -> Result<String, StoreError> {
        let active = store.active_sessions_by_app().await?;
        let phones = store.phones_by_state(now.minus(stale_after)).await?;
        let queued = store.queue_lengths(now).await?;
        self.count_encode_servers(&store.encode_servers().await?);
        self.set_per_app(&self.queue_length, queued);
        self.set_per_app(&self.sessions_active, active);
        self.phones.reset();
        for state in crate::store::PHONE_STATES {
            self.phones.with_label_values(&[state]).set(0);
        }
        for (state, count) in phones {
            self.phones.with_label_values(&[&state]).set(count);
        }
        self.render_rollout_phones(store.rollout_phones_by_step().await?);
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("text encoding cannot fail");
        Ok(String::from_utf8_lossy(&text).into_owned())
    }
}
