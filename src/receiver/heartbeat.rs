//! `POST {base_path}/heartbeat`: answered from memory. The heartbeat joins the buffer and
//! reaches the database with the next flush (`heartbeats.flush_interval_ms`).

use actix_web::{HttpResponse, web};

use super::{HeartbeatEnvelope, ReceiverError, acknowledged};
use crate::domain::UtcTime;
use crate::store::HeartbeatBuffer;

pub(super) async fn receive(
    body: web::Json<HeartbeatEnvelope>,
    buffer: web::Data<HeartbeatBuffer>,
) -> Result<HttpResponse, ReceiverError> {
    let heartbeat = body.into_inner().parse(UtcTime::now())?;
    buffer.record(heartbeat);
    Ok(acknowledged())
}
