//! `GET /api/v1/sessions/{session_id}`: the session as recorded, with its event log.

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::ApiError;
use crate::domain::{Session, SessionId};
use crate::store::{EventRecord, Store};

#[derive(Serialize)]
struct SessionView {
    #[serde(flatten)]
    session: Session,
    /// The quit arrived but the enter has not (yet).
    missing_start: bool,
    events: Vec<EventRecord>,
}

pub(super) async fn show(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let id = SessionId::parse("session_id", path.into_inner())?;
    let session = store
        .session(id.as_str())
        .await?
        .ok_or(ApiError::NotFound("session"))?;
    let events = store.session_events(id.as_str()).await?;
    Ok(HttpResponse::Ok().json(SessionView {
        missing_start: session.missing_start(),
        session,
        events,
    }))
}
