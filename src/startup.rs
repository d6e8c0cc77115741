//! Builds the application from its settings and runs it until a signal stops it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::api::{self, BearerTokens};
use crate::config::Settings;
use crate::http::{error::not_found, health, request_id};
use crate::receiver;
use crate::store::{self, EventWriter, HeartbeatBuffer, HeartbeatFlusher, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

pub struct Application {
    port: u16,
    server: Server,
    flusher: HeartbeatFlusher,
    writer_task: JoinHandle<()>,
}

impl Application {
    /// Opens the store, applies migrations (unless `database.migrate_on_start` is off),
    /// binds the listener and starts the background tasks. The server runs once
    /// [`Application::run_until_stopped`] is awaited.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
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

        let (writer, writer_task) = EventWriter::spawn(
            Arc::clone(&store),
            settings.callbacks.event_batch_max,
            settings.callbacks.run_time_tolerance_secs,
        );
        let buffer = Arc::new(HeartbeatBuffer::default());
        let flusher = HeartbeatFlusher::spawn(
            Arc::clone(&buffer),
            Arc::clone(&store),
            settings.heartbeats.flush_interval(),
        );
        if settings.api.tokens.is_empty() {
            tracing::warn!("api.tokens is empty: the operator API will refuse every request");
        }
        let server = http_server(&settings, listener, store, writer, buffer).map_err(bind_error)?;
        tracing::info!(%addr, port, "cphub listening");
        Ok(Application {
            port,
            server,
            flusher,
            writer_task,
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
        let served = self.server.await;
        self.flusher.stop().await;
        // The writer ends when the server's workers drop their handles to it.
        if tokio::time::timeout(Duration::from_secs(10), self.writer_task)
            .await
            .is_err()
        {
            tracing::error!("event writer did not finish in time");
        }
        tracing::info!("cphub stopped");
        served
    }
}

fn http_server(
    settings: &Settings,
    listener: TcpListener,
    store: Arc<dyn Store>,
    writer: EventWriter,
    buffer: Arc<HeartbeatBuffer>,
) -> std::io::Result<Server> {
    let store = web::Data::from(store);
    let buffer = web::Data::from(buffer);
    let writer = web::Data::new(writer);
    let tokens = web::Data::new(BearerTokens::new(settings.api.tokens.clone()));
    let callbacks = settings.callbacks.clone();
    let api_settings = settings.api.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .wrap(from_fn(request_id::scope))
            .wrap(TracingLogger::default())
            .app_data(store.clone())
            .app_data(writer.clone())
            .app_data(buffer.clone())
            .app_data(tokens.clone())
            .route("/healthz", web::get().to(health::healthz))
            .route("/readyz", web::get().to(health::readyz))
            .configure(|cfg| receiver::routes(cfg, &callbacks))
            .configure(|cfg| api::routes(cfg, &api_settings))
            .default_service(web::to(not_found))
    })
    .shutdown_timeout(settings.server.shutdown_timeout_secs);
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok(server.listen(listener)?.run())
}
