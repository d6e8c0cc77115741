//! The wait queue (docs/api.md "The wait queue"):
//! `POST /api/v1/queue` joins, `GET /api/v1/queue/{queue_id}` polls (long-polls with
//! `wait_secs`) for the place or, once a phone is assigned, the session;
//! `DELETE /api/v1/queue/{queue_id}` leaves.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use super::sessions::MintedSession;
use crate::config::AccessSettings;
use crate::domain::{AppId, Priority, QueueId, UserId, UtcTime, WaitSecs};
use crate::http::error::{ErrorBody, no_store};
use crate::queue::{Place, Polled, Queue};

/// A join is two ids of at most 128 characters and a number: 1 KiB is plenty, and a
/// client sending more is broken or hostile, so it is refused before parsing.
pub(super) const BODY_LIMIT: usize = 1024;

/// A misspelt field is refused, not ignored (`prority` would join at priority 0).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct JoinBody {
    #[schema(value_type = AppId)]
    app_id: String,
    /// The platform's id of the player.
    #[schema(value_type = UserId)]
    user_id: String,
    /// 0 (default) to 100: higher is served first, equal priorities in arrival order.
    /// `5.0` is 5, as JSON Schema reads it.
    #[serde(default, deserialize_with = "crate::receiver::optional_integer")]
    #[schema(minimum = 0, maximum = 100)]
    priority: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(super) enum QueueStatus {
    /// In line: poll again.
    Waiting,
    /// A phone is held for the entry: the next poll answers the session.
    Assigned,
}

/// An entry's place in its app's queue.
#[derive(Serialize, ToSchema)]
pub(super) struct QueuePlace {
    queue_id: QueueId,
    status: QueueStatus,
    app_id: AppId,
    /// 1 for the next to be served; 0 once assigned.
    position: i64,
    /// A rough estimate from how many sessions of the app started in the last 10 minutes;
    /// null while there were none.
    estimated_wait_secs: Option<u64>,
    /// Unless polled before then, the entry leaves the queue (`access.queue_ttl_secs`).
    expires_at: UtcTime,
}

impl From<Place> for QueuePlace {
    fn from(place: Place) -> Self {
        let entry = place.entry;
        QueuePlace {
            status: match entry.session_id {
                Some(_) => QueueStatus::Assigned,
                None => QueueStatus::Waiting,
            },
            queue_id: entry.queue_id,
            app_id: entry.app_id,
            position: entry.position,
            estimated_wait_secs: place.estimated_wait_secs,
            expires_at: entry.expires_at,
        }
    }
}

/// Joins the app's queue. Always an entry, never a session: a phone free right now is
/// assigned at once (`status` `assigned`), and the first poll answers the session. One
/// entry per player and app: a join while the player's entry is still in play (waiting, or
/// assigned a session not used yet) answers that entry again, `200`.
#[utoipa::path(
    post,
    path = "/queue",
    tag = "operator",
    request_body = JoinBody,
    responses(
        (status = 201, description = "In the queue", body = QueuePlace),
        (status = 200, description = "The player was in the app's queue already (a retried join): that entry, its place and priority kept", body = QueuePlace),
        (status = 400, description = "`CPHUB.MALFORMED_JSON`, `CPHUB.INVALID_FIELD` (an id, or `priority` outside 0–100)", body = ErrorBody),
        (status = 413, description = "`CPHUB.PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
#[tracing::instrument(name = "join queue", skip_all, fields(queue_id))]
pub(super) async fn join(
    req: HttpRequest,
    body: web::Json<JoinBody>,
    queue: web::Data<Queue>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let app_id = AppId::parse("app_id", body.app_id)?;
    let user_id = UserId::parse("user_id", body.user_id)?;
    let priority = Priority::parse("priority", body.priority.unwrap_or(0))?;
    let token_name = super::auth::caller_name(&req);
    let (place, new) = queue.join(app_id, user_id, token_name, priority).await?;
    tracing::Span::current().record("queue_id", place.entry.queue_id.as_str());
    let mut answer = match new {
        true => HttpResponse::Created(),
        false => HttpResponse::Ok(),
    };
    Ok(answer.json(QueuePlace::from(place)))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct PollQuery {
    /// Seconds to wait for an assignment before answering the place: 0 (default) to 30.
    #[param(minimum = 0, maximum = 30)]
    wait_secs: Option<u64>,
}

/// The entry's place, or the session once a phone was assigned. Each poll keeps the entry
/// alive for its `wait_secs` plus `access.queue_ttl_secs`. The session's ticket is issued by
/// this poll; a repeated poll issues a new ticket for the same session, phone and `auth_ts`
/// (the earlier one stops working) until the session is verified.
#[utoipa::path(
    get,
    path = "/queue/{queue_id}",
    tag = "operator",
    params(("queue_id" = QueueId, Path, description = "The entry's id"), PollQuery),
    responses(
        (status = 200, description = "Still waiting", body = QueuePlace),
        (status = 201, description = "A phone is held for the player: the session, as `POST /sessions` answers it", body = MintedSession),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: a bad id, or `wait_secs` over 30", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`: never joined, left, expired, or joined with another token", body = ErrorBody),
        (status = 409, description = "`CPHUB.QUEUE_ENTRY_CLOSED`: served, and the session has moved on", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
#[tracing::instrument(name = "poll queue", skip_all, fields(queue_id, session_id))]
pub(super) async fn poll(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PollQuery>,
    queue: web::Data<Queue>,
    access: web::Data<AccessSettings>,
) -> Result<HttpResponse, ApiError> {
    let queue_id = QueueId::parse("queue_id", path.into_inner())?;
    let wait = WaitSecs::parse("wait_secs", query.wait_secs.unwrap_or(0))?;
    tracing::Span::current().record("queue_id", queue_id.as_str());
    match queue.poll(&queue_id, &super::auth::caller_name(&req), wait).await? {
        Polled::Waiting(place) => Ok(HttpResponse::Ok().json(QueuePlace::from(place))),
        Polled::Seated(minted) => {
            tracing::Span::current().record("session_id", minted.access.session_id.as_str());
            let body = MintedSession::new(minted, access.key_encoding);
            // Ticket and session key: no cache on the way keeps them.
            Ok(HttpResponse::Created().insert_header(no_store()).json(body))
        }
    }
}

/// Leaves the queue. A phone already assigned but not yet handed out goes to the next in
/// line; a session already handed out is the player's and stays.
#[utoipa::path(
    delete,
    path = "/queue/{queue_id}",
    tag = "operator",
    params(("queue_id" = QueueId, Path, description = "The entry's id")),
    responses(
        (status = 204, description = "Left the queue"),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: not a valid id", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`: never joined, left, expired, or joined with another token", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn leave(
    req: HttpRequest,
    path: web::Path<String>,
    queue: web::Data<Queue>,
) -> Result<HttpResponse, ApiError> {
    let queue_id = QueueId::parse("queue_id", path.into_inner())?;
    queue.leave(&queue_id, &super::auth::caller_name(&req)).await?;
    Ok(HttpResponse::NoContent().finish())
}
