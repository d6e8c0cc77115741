//! The benchmark ceiling (docs/benchmarks.md): a bare actix-web handler that
//! parses the same heartbeat body as `POST /cph/heartbeat`, into cphub's own wire type, and
//! answers the same JSON (`{"request_id": <32 hex>}`). No middleware, no domain checks, no
//! buffer: what this machine can do for one JSON request at most, so cphub's figures can be
//! given as ratios to it measured in the same run.
//!
//! It also takes webhook deliveries: `POST /webhook` answers 204 to any body, the endpoint
//! a benchmark with billing webhooks on points cphub at.
//!
//! Usage: `bench_ceiling 127.0.0.1:PORT` (workers: one per core, like `cphub serve`).

use actix_web::{App, HttpResponse, HttpServer, web};
use cphub::receiver::HeartbeatEnvelope;
use serde_json::json;

async fn heartbeat(_body: web::Json<HeartbeatEnvelope>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "request_id": uuid::Uuid::new_v4().simple().to_string() }))
}

async fn webhook(_body: web::Bytes) -> HttpResponse {
    HttpResponse::NoContent().finish()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8089".to_owned());
    HttpServer::new(|| {
        App::new()
            .route("/cph/heartbeat", web::post().to(heartbeat))
            .route("/webhook", web::post().to(webhook))
    })
    .bind(addr)?
    .run()
    .await
}
