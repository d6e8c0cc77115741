//! The webhook deliveries (docs/webhooks.md "Operating"), the same operations as
//! `cphub webhooks` (both go through `webhooks::Deliveries`):
//! `GET /api/v1/webhooks/deliveries`, `GET /api/v1/webhooks/{endpoint}/deliveries/{event_id}`,
//! `POST …/{event_id}/retry` and `POST /api/v1/webhooks/{endpoint}/replay`.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use crate::clock::Clock;
use crate::config::{WebhookEndpoint, WebhookSettings};
use crate::domain::{DeliveryState, ParseError, Problem, UtcTime, WebhookEventId};
use crate::http::error::ErrorBody;
use crate::store::{DeliveryFilter, DeliveryPosition, DeliveryView, Store};
use crate::webhooks::{Deliveries, DeliveryDetail, OperateError};

/// A replay's body is one time: 1 KiB is plenty.
pub(super) const BODY_LIMIT: usize = 1024;

impl From<OperateError> for ApiError {
    fn from(error: OperateError) -> Self {
        match error {
            OperateError::UnknownEndpoint(_) => ApiError::NotFound("webhook endpoint"),
            OperateError::UnknownDelivery { .. } => ApiError::NotFound("webhook delivery"),
            OperateError::Store(e) => ApiError::Store(e),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only this endpoint's deliveries (a configured `webhooks.endpoints` name).
    endpoint: Option<String>,
    #[param(value_type = Option<DeliveryState>)]
    state: Option<String>,
    /// Page size, default 100; brought into 1 to 1000.
    limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct DeliveryPage {
    deliveries: Vec<DeliveryView>,
    /// Pass as `cursor` for the next (older) page; null on the last one.
    next_cursor: Option<String>,
}

/// Deliveries newest first (by the event's place in the outbox, then endpoint). The cursor
/// is a position, so events written while paging never shift or repeat a page.
#[utoipa::path(
    get,
    path = "/webhooks/deliveries",
    tag = "operator",
    params(ListQuery),
    responses(
        (status = 200, description = "Deliveries newest first", body = DeliveryPage),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: a bad state or cursor", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`: no endpoint of that name is configured", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    query: web::Query<ListQuery>,
    store: web::Data<dyn Store>,
    settings: web::Data<WebhookSettings>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = DeliveryFilter {
        endpoint: q.endpoint,
        state: q
            .state
            .map(|s| DeliveryState::parse("state", &s))
            .transpose()?,
        before: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let deliveries = Deliveries::new(store.as_ref(), &settings)
        .list(&filter)
        .await?;
    let next_cursor = super::next_position(&deliveries, limit, |d| {
        encode_cursor(d.event_seq, &d.endpoint)
    });
    Ok(HttpResponse::Ok().json(DeliveryPage {
        deliveries,
        next_cursor,
    }))
}

#[utoipa::path(
    get,
    path = "/webhooks/{endpoint}/deliveries/{event_id}",
    tag = "operator",
    params(
        ("endpoint" = String, Path, description = "A configured endpoint's name"),
        ("event_id" = WebhookEventId, Path, description = "The event's id"),
    ),
    responses(
        (status = 200, description = "The delivery and its attempts, oldest first", body = DeliveryDetail),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: not a valid event id", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`: no such endpoint, or no delivery of the event to it", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn show(
    path: web::Path<(String, String)>,
    store: web::Data<dyn Store>,
    settings: web::Data<WebhookSettings>,
) -> Result<HttpResponse, ApiError> {
    let (endpoint, event_id) = path.into_inner();
    let event_id = WebhookEventId::parse("event_id", event_id)?;
    let detail = Deliveries::new(store.as_ref(), &settings)
        .show(&endpoint, &event_id)
        .await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// Pending again, due now, with a fresh retry schedule. A delivery being sent keeps its
/// lease: the attempt in flight settles first.
#[utoipa::path(
    post,
    path = "/webhooks/{endpoint}/deliveries/{event_id}/retry",
    tag = "operator",
    params(
        ("endpoint" = String, Path, description = "A configured endpoint's name"),
        ("event_id" = WebhookEventId, Path, description = "The event's id"),
    ),
    responses(
        (status = 200, description = "The delivery as it now is", body = DeliveryDetail),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: not a valid event id", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`: no such endpoint, or no delivery of the event to it", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn retry(
    path: web::Path<(String, String)>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    settings: web::Data<WebhookSettings>,
) -> Result<HttpResponse, ApiError> {
    let (endpoint, event_id) = path.into_inner();
    let event_id = WebhookEventId::parse("event_id", event_id)?;
    let detail = Deliveries::new(store.as_ref(), &settings)
        .retry(&endpoint, &event_id, clock.now())
        .await?;
    Ok(HttpResponse::Ok().json(detail))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayBody {
    /// Every event of the endpoint's types that happened at or after this time (RFC 3339).
    #[schema(format = DateTime, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    since: String,
}

#[derive(Serialize, ToSchema)]
pub(super) struct Replayed {
    /// How many deliveries to the endpoint are pending again (new or put back).
    replayed: u64,
}

/// Sends the endpoint every event of its types since a time again, under the same ids.
#[utoipa::path(
    post,
    path = "/webhooks/{endpoint}/replay",
    tag = "operator",
    params(("endpoint" = String, Path, description = "A configured endpoint's name")),
    request_body = ReplayBody,
    responses(
        (status = 200, description = "The deliveries are pending again", body = Replayed),
        (status = 400, description = "`CPHUB.MALFORMED_JSON`, `CPHUB.INVALID_FIELD`, `CPHUB.INVALID_TIME`: `since` is not an RFC 3339 time in 1970–9999", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`: no endpoint of that name is configured", body = ErrorBody),
        (status = 413, description = "`CPHUB.PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn replay(
    path: web::Path<String>,
    body: web::Json<ReplayBody>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    settings: web::Data<WebhookSettings>,
) -> Result<HttpResponse, ApiError> {
    let since = UtcTime::parse("since", &body.since).map_err(ApiError::InvalidTime)?;
    let replayed = Deliveries::new(store.as_ref(), &settings)
        .replay(&path.into_inner(), since, clock.now())
        .await?;
    Ok(HttpResponse::Ok().json(Replayed { replayed }))
}

fn encode_cursor(event_seq: i64, endpoint: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{event_seq}.{endpoint}"))
}

fn decode_cursor(cursor: &str) -> Result<DeliveryPosition, ParseError> {
    use base64::Engine;
    let invalid = || ParseError::new("cursor", Problem::Invalid("not a cursor this API returned"));
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (seq, endpoint) = text.split_once('.').ok_or_else(invalid)?;
    let event_seq = seq.parse().map_err(|_| invalid())?;
    // Anything but a plain name was not made here, and must not reach the database
    // (PostgreSQL refuses NUL in text).
    if !WebhookEndpoint::plain_name(endpoint) {
        return Err(invalid());
    }
    let endpoint = endpoint.to_owned();
    Ok(DeliveryPosition {
        event_seq,
        endpoint,
    })
}
