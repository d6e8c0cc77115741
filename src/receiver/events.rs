//! `POST {base_path}/events`: enter (status 0) and quit (status 1). The answer is sent only
//! after the event is committed; a re-delivery is answered 200 and changes nothing. Only
//! the identity fields, `event_type`, `time`, `status` and a quit's `run_time` (mandatory in
//! 6.3) may refuse an event: a description over its bound is cut and flagged, never refused
//! (a refused event is a lost billing event).

use actix_web::{HttpResponse, web};

use super::{Acknowledged, EventEnvelope, ReceiverError, acknowledged};
use crate::clock::Clock;
use crate::domain::{EventKind, GameEvent};
use crate::http::error::ErrorBody;
use crate::metrics::Metrics;
use crate::store::{EventOutcome, EventWriter, ReceivedEvent};

#[utoipa::path(
    post,
    path = "/events",
    tag = "callbacks",
    description = "Chapter 6.2 (enter, `status` 0) and 6.3 (quit, `status` 1). Answered once \
                   committed; a re-delivery is answered 200 and changes nothing.",
    request_body = EventEnvelope,
    responses(
        (status = 200, description = "Recorded", body = Acknowledged),
        (status = 400, description = "`CPHUB.MALFORMED_JSON`, `CPHUB.INVALID_FIELD`, `CPHUB.INVALID_TIME`, `CPHUB.UNKNOWN_EVENT_TYPE`, `CPHUB.UNKNOWN_STATUS`", body = ErrorBody),
        (status = 403, description = "`CPHUB.SOURCE_REFUSED`: the client address is outside `callbacks.allowed_networks`", body = ErrorBody),
        (status = 413, description = "`CPHUB.PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
#[tracing::instrument(
    name = "game event",
    skip_all,
    fields(session_id, phone_id, kind, outcome)
)]
pub(super) async fn receive(
    body: web::Json<EventEnvelope>,
    writer: web::Data<EventWriter>,
    clock: web::Data<dyn Clock>,
    metrics: web::Data<Metrics>,
    root: tracing_actix_web::RootSpan,
) -> Result<HttpResponse, ReceiverError> {
    let received_at = clock.now();
    let event = (GameEvent::try_from(body.into_inner()))
        .and_then(|event| event.received(received_at))
        .inspect_err(|_| metrics.record_rejected_event())?;
    if event.error_msg_truncated() {
        metrics
            .event_fields_truncated
            .with_label_values(&["error_msg"])
            .inc();
    }
    let (kind, span) = (event.kind, tracing::Span::current());
    for span in [&span, &*root] {
        span.record("session_id", event.session_id.as_str());
        span.record("phone_id", event.phone_id.as_str());
    }
    span.record("kind", tracing::field::debug(kind));

    let (app_id, phone_id) = (event.app_id.clone(), event.phone_id.clone());
    let applied = writer
        .submit(ReceivedEvent { event, received_at })
        .await
        .map_err(ReceiverError::Store)?;
    span.record("outcome", tracing::field::debug(applied.outcome));
    metrics.record_event(kind, applied.outcome, applied.session.as_ref());
    // Accepted and billed as played; flagged (here and in the event log), not refused.
    if kind == EventKind::Enter
        && let Some(session) = applied.session.as_ref().filter(|s| s.app_id != app_id)
    {
        metrics.app_mismatches.inc();
        tracing::warn!(minted_for = %session.app_id, entered = %app_id, "enter names another app than the session was minted for");
    }
    // The player reached another phone than the one minted (a gateway routing by stale
    // access information, say): that phone is the session's current one (its heartbeats
    // and quit name it), the minted one's hold is released; flagged for the operator.
    if kind == EventKind::Enter
        && let Some(session) = applied
            .session
            .as_ref()
            .filter(|s| s.issued && s.phone_id != phone_id)
    {
        metrics.phone_mismatches.inc();
        tracing::warn!(minted_on = %session.phone_id, entered = %phone_id, "enter names another phone than the session was minted on");
    }
    if applied.outcome == EventOutcome::Conflict {
        tracing::warn!("event contradicts the one already accepted; recorded, not applied");
    }
    Ok(acknowledged())
}
