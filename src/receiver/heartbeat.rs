//! `POST {base_path}/heartbeat`: answered from memory. The heartbeat joins the buffer and
//! reaches the database with the next flush (`heartbeats.flush_interval_ms`).

use actix_web::{HttpResponse, web};

use super::{HeartbeatEnvelope, ReceiverError, acknowledged};
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::HeartbeatBuffer;

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
