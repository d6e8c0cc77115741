//! The fake CPH management API: the routes, bodies and authentication of the real one
//! (chapters 2, 4.3, 4.4, 4.6.1, 4.6.2, 4.7.5, 5.1.2, 5.1.3, 5.3.1, 5.3.4, 5.3.6, 5.3.7 and 7.1.1; `tools/huawei-sdk/CPH_WIRE.md` for what the
//! official SDK sends), acting on the simulated [`Fleet`](super::fleet::Fleet). Both cphub's own client
//! and Huawei's Python SDK must work against it unchanged, so requests are checked the way
//! the real service checks them: AK/SK signatures recomputed from what arrived, or IAM
//! tokens issued here.
//!
//! Batch operations answer at once with one job per phone; a task per job finishes it after
//! `job_delay`, which is when the phone changes (restart, reset, stop, properties).
//!
//! One file per concern: `error.rs` (the refusals and chapter 7.1.1's body), `auth.rs` (the
//! state, AK/SK signatures and IAM tokens), `iam.rs` (chapter 2.1), `phones.rs` (4.3.1 and
//! 4.3.2), `apps.rs` (5.1.3 and 5.1.2), `deploy.rs` (5.3.1, 5.3.4, 5.3.6, 5.3.7), `batch.rs` (4.3.5–4.3.7 and 4.3.9), `encode.rs` (4.6.1, 4.6.2), `commands.rs` (4.7.5), `jobs.rs` (4.4.1
//! and 4.4.2), `faults.rs` (documented failures on demand) and `wire.rs` (the query, body and
//! paging helpers they share). This file holds the settings and the route table.

mod apps;
mod auth;
mod batch;
mod commands;
mod deploy;
mod encode;
mod error;
mod faults;
mod iam;
mod jobs;
mod phones;
mod wire;

use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, Resource, ResponseError, web};
use secrecy::SecretString;
use tracing_actix_web::TracingLogger;

use super::fleet::SharedFleet;
use crate::http::request_id;
use apps::{app_phones, list_apps};
use auth::ControlPlane;
use batch::{reset, restart, stop, update_property};
use commands::run_sync_command;
use deploy::{phone_apps, push_app_version, server_apps, update_app_version};
use encode::{list_encode_servers, restart_encode_servers};
pub use error::{AuthFailure, ControlPlaneError};
pub use faults::{ControlPlaneFaults, LostAnswer, Operation};
use iam::create_token;
use jobs::{list_jobs, show_job};
use phones::{list_phones, show_phone};

/// How far `X-Sdk-Date` may be from the server's clock unless configured otherwise
/// (the API gateway's 15 minutes).
pub const DEFAULT_MAX_DATE_SKEW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    pub project_id: String,
    pub ak: String,
    pub sk: SecretString,
    /// IAM password auth accepted at POST /v3/auth/tokens: (username, password, domain).
    pub iam_user: Option<(String, SecretString, String)>,
    /// Jobs stay status 1 (running) this long.
    pub job_delay: Duration,
    /// 0.0..=1.0: the chance that a restart or reset job fails.
    pub job_failure_rate: f64,
    /// An `X-Sdk-Date` older or newer than this is refused ([`DEFAULT_MAX_DATE_SKEW`]).
    pub max_date_skew: Duration,
    /// Failures on demand; none by default. Keep a clone to change them while it runs.
    pub faults: ControlPlaneFaults,
}

/// Serves the fake management API on `listener` (already bound); returns the running server.
/// It does not react to signals: whoever runs it stops it through its handle.
pub fn start(
    listener: TcpListener,
    settings: ControlPlaneSettings,
    fleet: SharedFleet,
) -> std::io::Result<Server> {
    let state = web::Data::new(ControlPlane::new(settings, fleet));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(request_id::scope))
            .wrap(TracingLogger::<request_id::RootSpan>::new())
            .configure(routes)
            .default_service(web::to(no_route))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}

fn routes(cfg: &mut web::ServiceConfig) {
    const PHONES: &str = "/v1/{project_id}/cloud-phone/phones";
    const JOBS: &str = "/v1/{project_id}/cloud-phone/jobs";
    const APPS: &str = "/v1/{project_id}/cloud-phone/apps";
    const SERVERS: &str = "/v1/{project_id}/cloud-phone/servers";
    const ENCODE: &str = "/v1/{project_id}/cloud-phone/encode-servers";
    cfg.service(resource("/v3/auth/tokens").route(web::post().to(create_token)))
        .service(resource(PHONES).route(web::get().to(list_phones)))
        // The batch paths come before `{phone_id}`, which would match them too.
        .service(
            resource(&format!("{PHONES}/batch-update-property"))
                .route(web::post().to(update_property)),
        )
        .service(resource(&format!("{PHONES}/batch-restart")).route(web::post().to(restart)))
        .service(resource(&format!("{PHONES}/batch-reset")).route(web::post().to(reset)))
        .service(resource(&format!("{PHONES}/batch-stop")).route(web::post().to(stop)))
        .service(
            resource(&format!("{PHONES}/sync-commands")).route(web::post().to(run_sync_command)),
        )
        .service(resource(&format!("{PHONES}/{{phone_id}}")).route(web::get().to(show_phone)))
        .service(resource(&format!("{PHONES}/{{phone_id}}/apps")).route(web::get().to(phone_apps)))
        .service(
            resource(&format!("{PHONES}/{{phone_id}}/action"))
                .route(web::post().to(update_app_version)),
        )
        .service(resource(&format!("{SERVERS}/action")).route(web::post().to(push_app_version)))
        .service(
            resource(&format!("{SERVERS}/{{server_id}}/apps")).route(web::get().to(server_apps)),
        )
        .service(resource(ENCODE).route(web::get().to(list_encode_servers)))
        .service(
            resource(&format!("{ENCODE}/batch-restart"))
                .route(web::post().to(restart_encode_servers)),
        )
        .service(resource(JOBS).route(web::get().to(list_jobs)))
        .service(resource(&format!("{JOBS}/{{job_id}}")).route(web::get().to(show_job)))
        .service(resource(APPS).route(web::get().to(list_apps)))
        .service(resource(&format!("{APPS}/{{app_id}}/phones")).route(web::get().to(app_phones)));
}

/// A route whose other methods get the gateway's "no such API" answer, not an empty 405.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(no_route))
}

async fn no_route(req: HttpRequest) -> HttpResponse {
    ControlPlaneError::NoRoute(format!("{} {}", req.method(), req.uri().path())).error_response()
}
