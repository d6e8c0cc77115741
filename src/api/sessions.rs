//! `POST /api/v1/sessions`: mint a session and hold a phone for it.
//! `GET /api/v1/sessions/{session_id}`: the session as recorded, with its event log.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use crate::access::{self, MintedAccess};
use crate::clock::Clock;
use crate::config::{AccessSettings, Encoding, FleetSettings};
use crate::domain::{AppId, Connect, IdempotencyKey, PhoneId, Session, SessionId, UserId, UtcTime};
use crate::domain::{ParseError, Problem, SessionState};
use crate::http::error::{ErrorBody, no_store};
use crate::store::{
    Allocation, EventRecord, MintAnswer, MintKey, MintRequest, MintTimes, Minter, SessionFilter,
    SessionFilterArgs, Store,
};

fn refusal(error: ApiError) -> HttpResponse {
    use actix_web::ResponseError;
    error.error_response()
}

/// A misspelt field is refused, not ignored: `phoneId` for `phone_id` would mint on any
/// free phone instead of the one asked for.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct MintBody {
    #[schema(value_type = AppId)]
    app_id: String,
    /// The platform's id of the player.
    #[schema(value_type = UserId)]
    user_id: String,
    /// Take exactly this phone (if free) instead of any free one.
    #[serde(default)]
    #[schema(value_type = Option<PhoneId>)]
    phone_id: Option<String>,
}

/// What the platform hands to the player's client SDK.
#[derive(Serialize, ToSchema)]
pub(super) struct MintedSession {
    /// 32 lowercase hex characters.
    session_id: String,
    /// Single-use; URL-safe base64 without padding.
    ticket: String,
    /// In `access.key_encoding` (64 lowercase hex characters by default).
    aes_key: String,
    /// The ticket's expiry in epoch milliseconds, as a string.
    auth_ts: String,
    expires_at: UtcTime,
    phone_id: PhoneId,
    /// Where the client connects: the phone's server and its public address and ports
    /// (chapter 4.3.2 `access_infos`, from phone sync; empty without a control plane).
    connect: Connect,
    /// Always `minted`.
    state: SessionState,
}

/// The header a platform sends to make its retries of one mint safe.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// Answers 201 with what the platform hands to the player's client: `session_id`, `ticket`,
/// `aes_key`, `auth_ts`, the phone and where to connect to it. With an `Idempotency-Key`,
/// a retry of the same request gets the same answer and holds no second phone.
#[utoipa::path(
    post,
    path = "/sessions",
    tag = "operator",
    request_body = MintBody,
    params(
        ("Idempotency-Key" = Option<IdempotencyKey>, Header, description = "Same key and body within `access.idempotency_ttl_secs`: the first answer again (same session, ticket and phone)"),
    ),
    responses(
        (status = 201, description = "Minted; the phone is held for the session", body = MintedSession),
        (status = 400, description = "`CPHUB.MALFORMED_JSON`, `CPHUB.INVALID_FIELD` (also a bad `Idempotency-Key`)", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`: the pinned `phone_id` is unknown", body = ErrorBody),
        (status = 409, description = "`CPHUB.PHONE_BUSY`: the pinned phone is not free; `CPHUB.APP_NOT_DEPLOYED`: phone sync found the app on no phone (5.1.2)", body = ErrorBody),
        (status = 413, description = "`CPHUB.PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 422, description = "`CPHUB.IDEMPOTENCY_KEY_REUSED`: the key came with another body", body = ErrorBody),
        (status = 503, description = "`CPHUB.NO_FREE_PHONE` (none free, or none free with the app, or players waiting in the queue for the app come first) or `CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
#[tracing::instrument(name = "mint session", skip_all, fields(session_id, phone_id))]
pub(super) async fn mint(
    req: HttpRequest,
    body: web::Json<MintBody>,
    mints: web::Data<Minter>,
    clock: web::Data<dyn Clock>,
    access: web::Data<AccessSettings>,
    fleet: web::Data<FleetSettings>,
    root: tracing_actix_web::RootSpan,
) -> Result<HttpResponse, ApiError> {
    let key = idempotency_key(&req)?.map(|key| (key, super::auth::caller_name(&req)));
    let request = mint_request(body.into_inner(), key, clock.now(), &access, &fleet)?;
    // A full fleet is an everyday answer, not a failure: sent as a plain response so it is
    // not logged as an error.
    let request = std::sync::Arc::new(request);
    let allocation = mints.mint(std::sync::Arc::clone(&request)).await;
    let encoding = access.key_encoding;
    let minted = match allocation.map_err(ApiError::Write)? {
        Allocation::Allocated { phone_id, connect } => {
            let fresh = (&request.access, request.auth_ts);
            MintedSession::of(fresh, phone_id, connect, encoding)
        }
        Allocation::Replayed(earlier) => MintedSession::new(*earlier, encoding),
        Allocation::NoFreePhone => return Ok(refusal(no_free_phone(&request, &req).await)),
        Allocation::PhoneBusy => return Ok(refusal(ApiError::PhoneBusy)),
        Allocation::UnknownPhone => return Err(ApiError::NotFound("phone")),
        Allocation::KeyReused => return Err(ApiError::IdempotencyKeyReused),
    };
    for span in [&tracing::Span::current(), &*root] {
        span.record("session_id", minted.session_id.as_str());
        span.record("phone_id", minted.phone_id.as_str());
    }
    // Ticket and session key: no cache on the way keeps them.
    Ok(HttpResponse::Created().insert_header(no_store()).json(minted))
}

/// Why no phone was free: an app no phone has (a mistyped `app_id`, or a game not deployed
/// yet) is told apart from a full fleet, which is worth a retry or the queue. Asked only
/// when a mint finds no phone, off the minting path; the book is the app's, as the other
/// handlers' `web::Data<dyn Store>`.
async fn no_free_phone(request: &MintRequest, req: &HttpRequest) -> ApiError {
    let store = req.app_data::<web::Data<dyn Store>>();
    let Some(store) = store.filter(|_| request.pinned_phone.is_none() && request.match_app) else {
        return ApiError::NoFreePhone;
    };
    match store.app_deployed(&request.app_id).await {
        Ok(Some(false)) => ApiError::AppNotDeployed,
        Ok(_) => ApiError::NoFreePhone,
        Err(error) => {
            tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "could not tell whether the app is deployed; answered as a full fleet");
            ApiError::NoFreePhone
        }
    }
}

/// The `Idempotency-Key` header, parsed like an id: bounded, printable, no separators.
fn idempotency_key(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ParseError> {
    let Some(value) = req.headers().get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ParseError::new(IDEMPOTENCY_KEY, Problem::BadCharacters))?;
    IdempotencyKey::parse(IDEMPOTENCY_KEY, text.to_owned()).map(Some)
}

/// The store's request for a mint: the one place that turns a body and the settings into
/// it, so every way of minting allocates by the same rules (`access.match_app`).
fn mint_request(
    body: MintBody,
    key: Option<(IdempotencyKey, String)>,
    now: UtcTime,
    access: &AccessSettings,
    fleet: &FleetSettings,
) -> Result<MintRequest, ParseError> {
    let app_id = AppId::parse("app_id", body.app_id)?;
    let user_id = UserId::parse("user_id", body.user_id)?;
    let pinned = body
        .phone_id
        .map(|p| PhoneId::parse("phone_id", p))
        .transpose()?;
    let times = MintTimes::new(now, access, fleet);
    let key = key.map(|(key, caller)| MintKey {
        request_hash: request_hash(&caller, &app_id, &user_id, pinned.as_ref()),
        expires_at: now.plus(access.idempotency_ttl()),
        key,
    });
    Ok(MintRequest {
        access: MintedAccess::mint(access.cipher),
        app_id,
        user_id,
        pinned_phone: pinned,
        auth_ts: times.auth_ts,
        // The sign check may come as late as auth_ts plus the allowed skew.
        hold_until: times.hold_until,
        now,
        fresh_since: times.fresh_since,
        match_app: times.match_app,
        key,
    })
}

/// What makes two mints the same request: the parsed fields, not the bytes, so a retry
/// whose JSON is spaced or ordered differently is still the same; and the token that made
/// it, so another platform's token reusing a key is refused (`IDEMPOTENCY_KEY_REUSED`)
/// rather than handed the first caller's session, ticket and key. Ids and token names hold
/// no newline.
fn request_hash(
    caller: &str,
    app_id: &AppId,
    user_id: &UserId,
    pinned: Option<&PhoneId>,
) -> String {
    use sha2::{Digest, Sha256};
    let pinned = pinned.map_or("", |p| p.as_str());
    let text = format!("{caller}\n{app_id}\n{user_id}\n{pinned}");
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl MintedSession {
    /// The answer for a session minted, replayed, or issued from the wait queue.
    pub(super) fn new(minted: MintAnswer, key_encoding: Encoding) -> MintedSession {
        let access = (&minted.access, minted.auth_ts);
        MintedSession::of(access, minted.phone_id, minted.connect, key_encoding)
    }

    /// From the session's secrets and ticket expiry (epoch ms), and its phone.
    fn of(
        (access, auth_ts): (&MintedAccess, i64),
        phone_id: PhoneId,
        connect: Connect,
        key_encoding: Encoding,
    ) -> MintedSession {
        MintedSession {
            expires_at: UtcTime::from_epoch_millis(auth_ts).unwrap_or_else(UtcTime::now),
            auth_ts: auth_ts.to_string(),
            aes_key: access::encode(key_encoding, access.aes_key.bytes()),
            ticket: access.ticket.expose().to_owned(),
            session_id: access.session_id.clone(),
            phone_id,
            connect,
            state: SessionState::Minted,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub(super) struct SessionView {
    #[serde(flatten)]
    session: Session,
    /// The quit arrived but the enter has not (yet).
    missing_start: bool,
    events: Vec<EventRecord>,
}

#[utoipa::path(
    get,
    path = "/sessions/{session_id}",
    tag = "operator",
    params(("session_id" = SessionId, Path, description = "The session's id")),
    responses(
        (status = 200, description = "The session as recorded, with its event log", body = SessionView),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: not a valid id", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn show(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let id = SessionId::parse("session_id", path.into_inner())?;
    let session = store
        .session(&id)
        .await?
        .ok_or(ApiError::NotFound("session"))?;
    let events = store.session_events(&session).await?;
    Ok(HttpResponse::Ok().json(SessionView {
        missing_start: session.missing_start(),
        session,
        events,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    #[param(value_type = Option<AppId>)]
    app_id: Option<String>,
    #[param(value_type = Option<PhoneId>)]
    phone_id: Option<String>,
    #[param(value_type = Option<UserId>)]
    user_id: Option<String>,
    #[param(value_type = Option<SessionState>)]
    state: Option<String>,
    /// Sessions created at or after (RFC 3339).
    #[param(format = DateTime, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    from: Option<String>,
    /// Sessions created before (RFC 3339).
    #[param(format = DateTime, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    to: Option<String>,
    /// Page size, default 100; brought into 1 to 1000.
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct SessionPage {
    sessions: Vec<Session>,
    /// Pass as `cursor` for the next (older) page; null on the last one.
    next_cursor: Option<String>,
}

/// `GET /api/v1/sessions`: newest first, by creation. The cursor is a position, not an
/// offset, so sessions created while paging never shift or repeat a page.
#[utoipa::path(
    get,
    path = "/sessions",
    tag = "operator",
    params(ListQuery),
    responses(
        (status = 200, description = "Sessions newest first", body = SessionPage),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: a bad filter, time or cursor", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    query: web::Query<ListQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = SessionFilter {
        before: q.cursor.as_deref().map(decode_cursor).transpose()?,
        ..SessionFilterArgs {
            app_id: q.app_id,
            phone_id: q.phone_id,
            user_id: q.user_id,
            state: q.state,
            from: q.from,
            to: q.to,
        }
        .parse()?
    };
    let sessions = store.sessions(&filter, limit).await?;
    let next_cursor = super::next_position(&sessions, limit, |s| {
        encode_cursor(s.created_at, s.session_id.as_str())
    });
    Ok(HttpResponse::Ok().json(SessionPage {
        sessions,
        next_cursor,
    }))
}

/// The last row's `created_at` in microseconds (`…us`), as PostgreSQL keeps it: in
/// milliseconds, a session created earlier in the same millisecond as the page's last one
/// was skipped by the next page. A cursor of the older form (milliseconds, no `us`) is still
/// read, as SQLite's times are whole milliseconds.
fn encode_cursor(created_at: UtcTime, session_id: &str) -> String {
    use base64::Engine;
    let micros = created_at.datetime().timestamp_micros();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}us.{session_id}"))
}

fn decode_cursor(cursor: &str) -> Result<(UtcTime, SessionId), ParseError> {
    use base64::Engine;
    let invalid = || ParseError::new("cursor", Problem::Invalid("not a cursor this API returned"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (time, session_id) = text.split_once('.').ok_or_else(invalid)?;
    let at = match time.strip_suffix("us") {
        Some(micros) => (micros.parse().ok()).and_then(chrono::DateTime::from_timestamp_micros),
        None => (time.parse().ok())
            .and_then(UtcTime::from_epoch_millis)
            .map(UtcTime::datetime),
    };
    // Within the years every time cphub stores lies in: a forged cursor far outside them
    // was a 500 on PostgreSQL, whose timestamps end at 4713 BC.
    let at = at.and_then(|at| UtcTime::in_range("cursor", at).ok());
    let at = at.ok_or_else(invalid)?;
    let session_id = SessionId::parse("cursor", session_id.to_owned()).map_err(|_| invalid())?;
    Ok((at, session_id))
}
