//! `POST {base_path}/heartbeat`: answered from memory. The heartbeat joins the buffer and
//! reaches the database with the next flush (`heartbeats.flush_interval_ms`).

use actix_web::{HttpResponse, web};

use super::{Acknowledged, HeartbeatEnvelope, ReceiverError, acknowledged};
use crate::clock::Clock;
use crate::http::error::ErrorBody;
use crate::metrics::Metrics;
use crate::store::HeartbeatBuffer;

#[utoipa::path(
    post,
    path = "/heartbeat",
    tag = "callbacks",
    description = "Chapter 6.4. Blank `app_id`/`session_id` mean the phone is alive and idle.",
    request_body = HeartbeatEnvelope,
    responses(
        (status = 200, description = "Received (written with the next flush)", body = Acknowledged),
        (status = 400, description = "`CPHUB.MALFORMED_JSON`, `CPHUB.INVALID_FIELD`, `CPHUB.INVALID_TIME`, `CPHUB.UNKNOWN_EVENT_TYPE`", body = ErrorBody),
        (status = 403, description = "`CPHUB.SOURCE_REFUSED`: the client address is outside `callbacks.allowed_networks`", body = ErrorBody),
        (status = 413, description = "`CPHUB.PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn receive(
    body: web::Json<HeartbeatEnvelope>,
    buffer: web::Data<HeartbeatBuffer>,
    clock: web::Data<dyn Clock>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ReceiverError> {
    let heartbeat = body.into_inner().parse(clock.now())?;
    buffer.record(heartbeat);
    metrics.heartbeats.inc();
    Ok(acknowledged())
}
