//! Request metrics, labelled by route pattern (never the raw path: ids would explode the
//! series count, and the callback base path may hold a secret), and the `/metrics` route.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage, HttpResponse, web};

use super::Metrics;
use crate::clock::Clock;
use crate::config::FleetSettings;
use crate::http::{
    ErrorCode,
    error::server_error_response,
    request_id::{RouteLabel, route_label},
};
use crate::store::Store;

pub async fn record_http(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    // Standard methods clone without allocating; the route label was computed by the log
    // span (which runs first) and is taken over, not computed again.
    let method = req.method().clone();
    let route = req.extensions_mut().remove::<RouteLabel>();
    let route = route.map_or_else(|| route_label(&req), |label| label.0);
    let response = next.call(req).await?;
    if let Some(metrics) = metrics {
        let (method, status) = (method.as_str(), response.status());
        metrics
            .http_requests
            .with_label_values(&[method, &route, status.as_str()])
            .inc();
        let seconds = started.elapsed().as_secs_f64();
        metrics
            .http_duration
            .with_label_values(&[method, &route])
            .observe(seconds);
    }
    Ok(response)
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    description = "On `server.listen`, or only on `metrics.listen` when that is set.",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain; version=0.0.4", body = String),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = crate::http::error::ErrorBody),
    ),
)]
pub async fn serve_metrics(
    metrics: web::Data<Metrics>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    fleet: web::Data<FleetSettings>,
) -> HttpResponse {
    match metrics
        .render(&**store, clock.now(), fleet.stale_after())
        .await
    {
        Ok(text) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4")
            .body(text),
        Err(error) => server_error_response(ErrorCode::Unavailable, "database unavailable", &error),
    }
}
