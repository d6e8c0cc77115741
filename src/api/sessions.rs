//! `POST /api/v1/sessions`: mint a session and hold a phone for it.
//! `GET /api/v1/sessions/{session_id}`: the session as recorded, with its event log.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::ApiError;
use crate::access::{self, MintedAccess};
use crate::clock::Clock;
use crate::config::{AccessSettings, FleetSettings};
use crate::domain::{AppId, PhoneId, Session, SessionId, UserId, UtcTime};
use crate::store::{Allocation, EventRecord, MintRequest, Store};

fn refusal(error: ApiError) -> HttpResponse {
    use actix_web::ResponseError;
    error.error_response()
}

#[derive(Deserialize)]
pub(super) struct MintBody {
    app_id: String,
    user_id: String,
    #[serde(default)]
    phone_id: Option<String>,
}

/// Answers 201 with what the platform hands to the player's client: `session_id`, `ticket`,
/// `aes_key`, `auth_ts`, and the phone.
#[tracing::instrument(name = "mint session", skip_all, fields(session_id, phone_id))]
pub(super) async fn mint(
    body: web::Json<MintBody>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    access: web::Data<AccessSettings>,
    fleet: web::Data<FleetSettings>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let app_id = AppId::parse("app_id", body.app_id)?;
    let user_id = UserId::parse("user_id", body.user_id)?;
    let pinned = body
        .phone_id
        .map(|p| PhoneId::parse("phone_id", p))
        .transpose()?;
    let now = clock.now();
    let auth_ts = now.plus(access.ticket_ttl()).epoch_millis();
    let expires_at = UtcTime::from_epoch_millis(auth_ts).unwrap_or(now);
    let request = MintRequest {
        access: MintedAccess::mint(),
        app_id: app_id.to_string(),
        user_id: user_id.to_string(),
        pinned_phone: pinned.map(|p| p.to_string()),
        auth_ts,
        // The sign check may come as late as auth_ts plus the allowed skew.
        hold_until: expires_at.plus(access.clock_skew()),
        now,
        fresh_since: now.minus(fleet.stale_after()),
    };
    // A full fleet is an everyday answer, not a failure: sent as a plain response so it is
    // not logged as an error.
    let phone_id = match store.mint_session(&request).await? {
        Allocation::Allocated { phone_id } => phone_id,
        Allocation::NoFreePhone => return Ok(refusal(ApiError::NoFreePhone)),
        Allocation::PhoneBusy => return Ok(refusal(ApiError::PhoneBusy)),
        Allocation::UnknownPhone => return Err(ApiError::NotFound("phone")),
    };
    let minted = &request.access;
    let span = tracing::Span::current();
    span.record("session_id", minted.session_id.as_str());
    span.record("phone_id", phone_id.as_str());
    Ok(HttpResponse::Created().json(json!({
        "session_id": minted.session_id,
        "ticket": minted.ticket.expose(),
        "aes_key": access::encode(access.key_encoding, minted.aes_key.bytes()),
        "auth_ts": auth_ts.to_string(),
        "expires_at": expires_at,
        "phone_id": phone_id,
        "state": "minted",
    })))
}

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
