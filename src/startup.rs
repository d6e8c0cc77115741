//! Builds the application from its settings and runs it until a signal stops it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::access::Rules;
use crate::api::{self, BearerTokens, RateLimit};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::cph::properties::{PropertyError, callback_property};
use crate::cph::sync::{PhoneSync, SyncLimits};
use crate::cph::{CphClient, CphError};
use crate::http::api_document::ApiDocument;
use crate::http::source::TrustedProxies;
use crate::http::{error::not_found, request_id, route, stop};
use crate::metrics::{self, Metrics};
use crate::queue::{Queue, QueueTask};
use crate::receiver;
use crate::rollout::Rollouts;
use crate::routes;
use crate::store::{
    self, ApplyRules, CommitRounds, HeartbeatBuffer, HeartbeatFlusher, Minter, Store, Unchanged,
    StoreError, WriteMeters, WriterLimits, Writers,
};
use crate::watchdog::{
    Abandonment, AbandonmentTask, BookRetention, HoldSweeper, RetentionTask, Watchdog, WatchdogTask,
};
use crate::webhooks::{WebhookDispatcher, WebhookTasks};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot set up the CPH management client")]
    Cph(#[from] CphError),
    #[error("cannot build the callback properties a reset re-applies")]
    Property(#[from] PropertyError),
    #[error("cannot set up the webhook client")]
    Webhooks(#[from] reqwest::Error),
    #[error("cannot listen for SIGTERM and SIGINT")]
    Signals(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The callback properties the watchdog re-applies with a reset; None while
/// `callbacks.public_url` is unset (the configuration checked it when it loaded).
fn reset_property(settings: &Settings) -> Result<Option<String>, PropertyError> {
    match settings.callbacks.public_url {
        Some(_) => callback_property(settings, None, None).map(Some),
        None => Ok(None),
    }
}

pub struct Application {
    port: u16,
    server: Server,
    metrics_server: Option<Server>,
    console_server: Option<Server>,
    flusher: HeartbeatFlusher,
    sweeper: HoldSweeper,
    abandonment: AbandonmentTask,
    retention_task: RetentionTask,
    phone_sync: Option<PhoneSync>,
    watchdog_task: Option<WatchdogTask>,
    queue_task: QueueTask,
    webhook_tasks: WebhookTasks,
    writer_tasks: Vec<JoinHandle<()>>,
}

impl Application {
    /// Opens the store, applies migrations (unless `database.migrate_on_start` is off),
    /// binds the listener and starts the background tasks. The server runs once
    /// [`Application::run_until_stopped`] is awaited.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// As [`Application::build`], reading time from `clock` (tests, the simulator).
    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Result<Application, StartupError> {
        let store = store::connect(&settings.database).await?;
        if settings.database.migrate_on_start {
            store.migrate().await?;
        }
        let addr = settings.server.listen;
        let bind_error = |source| StartupError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).map_err(bind_error)?;
        let port = listener.local_addr().map_err(bind_error)?.port();

        let rules = ApplyRules {
            run_time_tolerance_secs: settings.callbacks.run_time_tolerance_secs,
            record_unknown_sessions: settings.callbacks.record_unknown_sessions,
        };
        let metrics = Arc::new(Metrics::new(settings.metrics.per_app_labels));
        // Sign checks and mints come in at most as fast as sessions start: the event batch
        // limit bounds their transactions just as well.
        let limits = WriterLimits {
            max_batch: settings.callbacks.event_batch_max,
            commit: settings.database.write_timeout(),
            queued: settings.database.write_queue_timeout(),
        };
        let (writers, mints, writer_tasks) =
            spawn_writers(&settings, &store, rules, limits, &metrics);
        let buffer = Arc::new(
            heartbeat_buffer(&settings, &clock).metered(metrics.heartbeat_flush.clone()),
        );
        let flusher = HeartbeatFlusher::spawn(
            Arc::clone(&buffer),
            Arc::clone(&store),
            settings.heartbeats.flush_interval(),
            settings.database.write_timeout(),
        );
        let sweeper = HoldSweeper::spawn(
            Arc::clone(&store),
            Arc::clone(&clock),
            std::time::Duration::from_millis(settings.access.sweep_interval_ms),
        );
        // Without a control plane, and with the watchdog off, too: a session whose quit was
        // lost would otherwise hold its phone for good.
        let abandonment = Abandonment::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            Arc::clone(&buffer),
            &settings.watchdog,
            &settings.fleet,
        )
        .spawn();
        let (phone_sync, watchdog, rollouts) = match settings.cph.is_configured() {
            true => {
                let client =
                    Arc::new(CphClient::new(&settings.cph)?.with_metrics(Arc::clone(&metrics)));
                let sync = PhoneSync::spawn(
                    Arc::clone(&client),
                    Arc::clone(&store),
                    Arc::clone(&clock),
                    std::time::Duration::from_secs(settings.cph.sync_interval_secs),
                    SyncLimits {
                        detail_reads_per_sync: settings.cph.detail_reads_per_sync,
                    },
                );
                let reset_property = reset_property(&settings)?;
                // Rollouts are driven by the watchdog's leader; without a watchdog they can be
                // started, paused and shown, and wait for a replica that runs one.
                let rollouts = Rollouts::new(
                    Arc::clone(&store),
                    Arc::clone(&client),
                    Arc::clone(&clock),
                    settings.watchdog.max_in_flight,
                    settings.fleet.stale_after(),
                    std::time::Duration::from_millis(settings.watchdog.interval_ms),
                );
                // Built with the control plane even when `watchdog.enabled` is off: the
                // operator's commands go through it (exec, and a manual restart or reset
                // refused as such, not as a control plane that is not configured); only
                // its loop is left unstarted.
                let watchdog = Watchdog::new(
                    Arc::clone(&store),
                    client,
                    Arc::clone(&clock),
                    Arc::clone(&metrics),
                    settings.watchdog.clone(),
                    &settings.fleet,
                    reset_property,
                );
                watchdog.drive_rollouts(Arc::clone(&rollouts));
                watchdog.judge_silence_by(Arc::clone(&buffer));
                (Some(sync), Some(watchdog), Some(rollouts))
            }
            false => (None, None, None),
        };
        let watchdog_task = (watchdog.as_ref())
            .filter(|_| settings.watchdog.enabled)
            .map(Watchdog::spawn);
        let queue = Arc::new(Queue::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            settings.effective_access(),
            settings.fleet.clone(),
        ));
        let queue_task = Arc::clone(&queue).spawn();
        let retention_task = BookRetention::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            settings.book.clone(),
            !settings.webhooks.endpoints.is_empty(),
        )
        .spawn();
        let webhook_tasks = WebhookDispatcher::new(
            Arc::clone(&store),
            Arc::clone(&clock),
            Arc::clone(&metrics),
            &settings.webhooks,
            settings.usage.billing_rounding,
        )?
        .spawn();
        warn_about_tokens(&settings.api.tokens);
        let shared = Shared {
            store,
            writers,
            mints,
            buffer,
            clock,
            metrics,
            watchdog,
            rollouts,
            queue,
        };
        let metrics_server = match settings.metrics.listen {
            Some(addr) => Some(metrics_server(&settings, addr, &shared)?),
            None => None,
        };
        let data = AppData::new(&settings, shared);
        let console_server = match settings.console.listen {
            Some(addr) if settings.console.enabled => {
                Some(console_server(&settings, addr, data.clone())?)
            }
            _ => None,
        };
        let stop = stop::stop_signal().map_err(StartupError::Signals)?;
        let server = http_server(&settings, listener, data, stop).map_err(bind_error)?;
        tracing::info!(%addr, port, "cphub listening");
        Ok(Application {
            port,
            server,
            metrics_server,
            console_server,
            flusher,
            sweeper,
            abandonment,
            retention_task,
            phone_sync,
            watchdog_task,
            queue_task,
            webhook_tasks,
            writer_tasks,
        })
    }

    /// The bound port: the real one when `server.listen` asked for port 0.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server from elsewhere (tests; SIGTERM/SIGINT do the same by themselves).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT or [`ServerHandle::stop`]: then stops accepting, lets
    /// in-flight requests finish (up to `server.shutdown_timeout_secs`), writes the
    /// buffered heartbeats and waits for the last event batch to commit.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let side_servers: Vec<_> = (self.metrics_server.into_iter())
            .chain(self.console_server)
            .map(|server| (server.handle(), tokio::spawn(server)))
            .collect();
        let served = self.server.await;
        for (handle, task) in side_servers {
            handle.stop(true).await;
            let _ = task.await;
        }
        self.sweeper.stop();
        self.abandonment.stop();
        self.retention_task.stop();
        self.queue_task.stop();
        self.webhook_tasks.stop();
        if let Some(sync) = self.phone_sync {
            sync.stop();
        }
        if let Some(watchdog) = self.watchdog_task {
            watchdog.stop();
        }
        self.flusher.stop().await;
        // The writers end when the server's workers drop their handles to them.
        let writers = futures_util::future::join_all(self.writer_tasks);
        if tokio::time::timeout(Duration::from_secs(10), writers)
            .await
            .is_err()
        {
            tracing::error!("a group-commit writer did not finish in time");
        }
        tracing::info!("cphub stopped");
        served
    }
}

/// The group-commit writers: one on SQLite, `database.writers` on PostgreSQL
/// (`DatabaseSettings::writer_count`), and the mints' (the same on SQLite, one of their own
/// on PostgreSQL: `DatabaseSettings::mints_share_the_writers`).
fn spawn_writers(
    settings: &Settings,
    store: &Arc<dyn Store>,
    apply: ApplyRules,
    limits: WriterLimits,
    metrics: &Metrics,
) -> (Writers, Minter, Vec<JoinHandle<()>>) {
    let committer = || CommitRounds {
        store: Arc::clone(store),
        apply,
        access: Rules::from(&settings.effective_access()),
        rounds: metrics.round_meter(),
        raced: metrics.write_rounds_raced.clone(),
    };
    let meters = WriteMeters {
        mints: metrics.queue_meter("mints"),
        sign_checks: metrics.queue_meter("sign_checks"),
        events: metrics.queue_meter("events"),
    };
    let topology = (settings.database.writer_count(), settings.database.writer_room);
    let (writers, mut tasks) = Writers::spawn(topology, committer, limits, meters.clone());
    if settings.database.mints_share_the_writers() {
        return (writers.clone(), Minter(writers), tasks);
    }
    let (mints, mint_task) = Writers::spawn((1, 1), committer, limits, meters);
    tasks.extend(mint_task);
    (writers, Minter(mints), tasks)
}

/// The heartbeat buffer, holding back heartbeats that change nothing while the fleet's
/// miss threshold leaves room for it (`store::Unchanged`).
fn heartbeat_buffer(settings: &Settings, clock: &Arc<dyn Clock>) -> HeartbeatBuffer {
    let buffer = HeartbeatBuffer::new(settings.heartbeats.flush_chunk());
    let interval = std::time::Duration::from_secs(settings.fleet.heartbeat_interval_secs);
    match Unchanged::for_fleet(interval, settings.fleet.miss_threshold) {
        Some(rule) => buffer.holding_back_unchanged(rule, Arc::clone(clock)),
        None => buffer,
    }
}

/// What every HTTP worker shares.
struct Shared {
    store: Arc<dyn Store>,
    /// Enter/quit events and sign checks go to them as the `EventWriter` and `TicketWriter`
    /// the handlers ask for: one type, registered once.
    writers: Writers,
    mints: Minter,
    buffer: Arc<HeartbeatBuffer>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    watchdog: Option<Arc<Watchdog>>,
    rollouts: Option<Arc<Rollouts>>,
    queue: Arc<Queue>,
}

/// `/metrics` on its own listener (`metrics.listen`), e.g. reachable only by Prometheus.
fn metrics_server(
    settings: &Settings,
    addr: std::net::SocketAddr,
    shared: &Shared,
) -> Result<Server, StartupError> {
    let bind_error = |source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    };
    let (store, clock) = (
        web::Data::from(Arc::clone(&shared.store)),
        web::Data::from(Arc::clone(&shared.clock)),
    );
    let (metrics, fleet) = (
        web::Data::from(Arc::clone(&shared.metrics)),
        web::Data::new(settings.fleet.clone()),
    );
    let server = HttpServer::new(move || {
        App::new()
            .app_data(store.clone())
            .app_data(clock.clone())
            .app_data(metrics.clone())
            .app_data(fleet.clone())
            .configure(|cfg| route::register(cfg, vec![routes::metrics()]))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)
    .map_err(bind_error)?
    .run();
    Ok(server)
}

fn warn_about_tokens(tokens: &[crate::config::ApiToken]) {
    if tokens.is_empty() {
        tracing::warn!("api.tokens is empty: the operator API will refuse every request");
    }
    let legacy = tokens.iter().filter(|t| t.legacy).count();
    if legacy > 0 {
        tracing::warn!(
            tokens = legacy,
            "deprecated: api.tokens holds plain tokens, each accepted as an admin token named \
             legacy-N; replace them with [[api.tokens]] entries (name, sha256, scopes): \
             docs/operations.md#tokens-and-scopes"
        );
    }
}

/// Everything the handlers read from the app, built once and cloned into each worker (of
/// the main listener and of the console's own, when it has one).
#[derive(Clone)]
struct AppData {
    store: web::Data<dyn Store>,
    buffer: web::Data<HeartbeatBuffer>,
    clock: web::Data<dyn Clock>,
    writers: web::Data<Writers>,
    mints: web::Data<Minter>,
    tokens: web::Data<BearerTokens>,
    rate_limit: web::Data<RateLimit>,
    access: web::Data<crate::config::AccessSettings>,
    fleet: web::Data<crate::config::FleetSettings>,
    usage: web::Data<crate::config::UsageSettings>,
    webhooks: web::Data<crate::config::WebhookSettings>,
    console: web::Data<crate::config::ConsoleSettings>,
    base_path: web::Data<crate::config::BasePath>,
    document: web::Data<ApiDocument>,
    metrics: web::Data<Metrics>,
    watchdog: Option<web::Data<Arc<crate::watchdog::Watchdog>>>,
    rollouts: Option<web::Data<Rollouts>>,
    queue: web::Data<Queue>,
    trusted_proxies: web::Data<TrustedProxies>,
    allowed_networks: web::Data<receiver::AllowedNetworks>,
}

impl AppData {
    fn new(settings: &Settings, shared: Shared) -> AppData {
        AppData {
            store: web::Data::from(shared.store),
            buffer: web::Data::from(shared.buffer),
            clock: web::Data::from(shared.clock),
            writers: web::Data::new(shared.writers),
            mints: web::Data::new(shared.mints),
            tokens: web::Data::new(BearerTokens::new(
                settings.api.tokens.clone(),
                settings.api.auth_failures_per_minute,
            )),
            // One set of buckets for every worker: a token's limit is per process, not per
            // worker.
            rate_limit: web::Data::new(RateLimit::new(&settings.api)),
            // The handlers read the effective rule (`Settings::matches_apps`) from here.
            access: web::Data::new(settings.effective_access()),
            fleet: web::Data::new(settings.fleet.clone()),
            usage: web::Data::new(settings.usage.clone()),
            webhooks: web::Data::new(settings.webhooks.clone()),
            console: web::Data::new(settings.console.clone()),
            base_path: web::Data::new(settings.callbacks.base_path.clone()),
            document: web::Data::new(ApiDocument::new(&crate::openapi::document(
                &settings.callbacks.base_path,
            ))),
            metrics: web::Data::from(shared.metrics),
            watchdog: shared.watchdog.map(web::Data::new),
            rollouts: shared.rollouts.map(web::Data::from),
            queue: web::Data::from(shared.queue),
            // Who sent a request (issue #20): trusted proxies for every route's log span,
            // the allowlist for the callbacks.
            trusted_proxies: web::Data::new(TrustedProxies(
                settings.server.trusted_proxies.clone(),
            )),
            allowed_networks: web::Data::new(receiver::AllowedNetworks(
                settings.callbacks.allowed_networks.clone(),
            )),
        }
    }

    fn install(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.store.clone())
            .app_data(self.writers.clone())
            .app_data(self.mints.clone())
            .app_data(self.buffer.clone())
            .app_data(self.tokens.clone())
            .app_data(self.rate_limit.clone())
            .app_data(self.clock.clone())
            .app_data(self.access.clone())
            .app_data(self.fleet.clone())
            .app_data(self.usage.clone())
            .app_data(self.webhooks.clone())
            .app_data(self.console.clone())
            .app_data(self.base_path.clone())
            .app_data(self.document.clone())
            .app_data(self.metrics.clone())
            .app_data(self.queue.clone())
            .app_data(self.trusted_proxies.clone())
            .app_data(self.allowed_networks.clone());
        if let Some(watchdog) = &self.watchdog {
            cfg.app_data(watchdog.clone());
        }
        if let Some(rollouts) = &self.rollouts {
            cfg.app_data(rollouts.clone());
        }
    }
}

fn http_server(
    settings: &Settings,
    listener: TcpListener,
    data: AppData,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Server> {
    let metrics_here = settings.metrics.listen.is_none();
    let console_here = settings.console.enabled && settings.console.listen.is_none();
    let callbacks = settings.callbacks.clone();
    let api_settings = settings.api.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(metrics::record_http))
            .wrap(from_fn(request_id::scope))
            .wrap(TracingLogger::<request_id::RootSpan>::new())
            .configure(|cfg| data.install(cfg))
            .configure(|cfg| route::register(cfg, routes::health()))
            .configure(|cfg| {
                if metrics_here {
                    route::register(cfg, vec![routes::metrics()]);
                }
            })
            .configure(|cfg| receiver::routes(cfg, &callbacks))
            .configure(|cfg| api::routes(cfg, &api_settings))
            .configure(|cfg| {
                if console_here {
                    crate::console::routes(cfg);
                }
            })
            .default_service(web::to(not_found))
    })
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    .shutdown_signal(stop);
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok(server.listen(listener)?.run())
}

/// The console on its own listener (`console.listen`), e.g. reachable only from the
/// operators' network.
fn console_server(
    settings: &Settings,
    addr: std::net::SocketAddr,
    data: AppData,
) -> Result<Server, StartupError> {
    let bind_error = |source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    };
    let server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(metrics::record_http))
            .wrap(from_fn(request_id::scope))
            .wrap(TracingLogger::<request_id::RootSpan>::new())
            .configure(|cfg| data.install(cfg))
            .configure(crate::console::routes)
            .default_service(web::to(not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(settings.server.shutdown_timeout_secs)
    .bind(addr)
    .map_err(bind_error)?
    .run();
    Ok(server)
}
