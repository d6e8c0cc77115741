//! `POST {base_path}/sign-check` (chapter 6.1): the phone asks whether a player may use the
//! session, and gets the session's AES key if every rule of docs/api.md "Access verification"
//! holds. The ticket writer reads the session, decides and commits in one transaction with
//! concurrent sign checks (`store/sign_check_batch.rs`): the first success consumes the
//! ticket, a reconnect is logged, both committed before the answer.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ReceiverError, SignCheckBody};
use crate::access::{self, AesKey, DataCheck, Verdict};
use crate::clock::Clock;
use crate::config::AccessSettings;
use crate::domain::UtcTime;
use crate::http::error::{ErrorBody, no_store};
use crate::http::request_id;
use crate::metrics::Metrics;
use crate::store::{PresentedSignCheck, TicketWriter};

/// A passed sign check.
#[derive(Serialize, ToSchema)]
pub(super) struct SignCheckAnswer {
    /// 32 lowercase hex characters.
    // Serialised from the request's own id, not formatted into a `String` first.
    #[schema(value_type = String)]
    request_id: request_id::RequestId,
    /// The session's AES key (`access.cipher`; AES-256 by default), in
    /// `access.key_encoding` (hex by default). The same on every success of the session.
    aes_key: String,
}

/// Counts every sign check by result: `ok`, `retry`, `reconnect`, or the refusal's code.
#[utoipa::path(
    post,
    path = "/sign-check",
    tag = "callbacks",
    description = "Chapter 6.1. The first success consumes the ticket; the identical request again \
                   within `access.replay_grace_secs` gets the same answer; with \
                   `access.reconnect = \"while_live\"` the ticket admits its player again until \
                   the session ends.",
    request_body = SignCheckBody,
    responses(
        (status = 200, description = "The player may use the session", body = SignCheckAnswer),
        (status = 400, description = "`CPHUB.MALFORMED_JSON`, `CPHUB.INVALID_FIELD`", body = ErrorBody),
        (status = 403, description = "Refused: `CPHUB.UNKNOWN_SESSION`, `CPHUB.BAD_TICKET`, `CPHUB.BAD_AUTH_TS`, `CPHUB.TICKET_EXPIRED`, `CPHUB.ENCRYPTED_DATA_REQUIRED`, `CPHUB.DECRYPT_FAILED`, `CPHUB.TICKET_REPLAYED`, `CPHUB.TICKET_SESSION_ENDED`; `CPHUB.SOURCE_REFUSED` when the client address is outside `callbacks.allowed_networks`", body = ErrorBody),
        (status = 413, description = "`CPHUB.PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn receive(
    body: web::Json<SignCheckBody>,
    tickets: web::Data<TicketWriter>,
    clock: web::Data<dyn Clock>,
    settings: web::Data<AccessSettings>,
    metrics: web::Data<Metrics>,
    root: tracing_actix_web::RootSpan,
) -> Result<HttpResponse, ReceiverError> {
    let context = Context {
        tickets: &tickets,
        settings: &settings,
        metrics: &metrics,
        now: clock.now(),
        root: &root,
    };
    let result = check(body.into_inner(), &context).await;
    let label = match &result {
        Ok((Verdict::FirstUse, _)) => "ok",
        Ok((Verdict::Retry, _)) => "retry",
        Ok((Verdict::Reconnect, _)) => "reconnect",
        Err(error) => error.code().label(),
    };
    metrics.sign_checks.with_label_values(&[label]).inc();
    result.map(|(_, response)| response)
}

/// What deciding one sign check needs.
struct Context<'a> {
    tickets: &'a TicketWriter,
    settings: &'a AccessSettings,
    metrics: &'a Metrics,
    now: UtcTime,
    /// The request's span, which names the session too.
    root: &'a tracing::Span,
}

/// Hands the sign check to the ticket writer, which reads its session, decides it by every
/// rule of `access::decide` and commits what it admits, in one transaction with concurrent
/// sign checks; answers once that is committed.
#[tracing::instrument(name = "sign check", skip_all, fields(session_id, verdict, data))]
async fn check(
    body: SignCheckBody,
    cx: &Context<'_>,
) -> Result<(Verdict, HttpResponse), ReceiverError> {
    let (session_id, presented) = body.parse(cx.settings)?;
    for span in [&tracing::Span::current(), cx.root] {
        span.record("session_id", session_id.as_str());
    }
    let check = PresentedSignCheck {
        session_id,
        presented,
        now: cx.now,
        hold_until: cx.now.plus(cx.settings.enter_timeout()),
    };
    let outcome = cx.tickets.submit(check).await;
    let outcome = outcome.map_err(ReceiverError::Store)?;
    count_data(outcome.data, outcome.verdict.is_ok(), cx.metrics);
    let (verdict, aes_key) = outcome.verdict?;
    tracing::Span::current().record("verdict", tracing::field::debug(verdict));
    Ok((verdict, answer(cx.settings, &aes_key)))
}

/// Counts what `encrypted_data` showed (nothing when it was not decrypted).
fn count_data(data: Option<DataCheck>, admitted: bool, metrics: &Metrics) {
    let Some(data) = data else { return };
    tracing::Span::current().record("data", data.as_str());
    metrics
        .sign_check_decrypts
        .with_label_values(&[data.as_str()])
        .inc();
    if admitted && data == DataCheck::Failed {
        // What `enforce` would refuse: the operator's evidence before switching to it.
        tracing::info!("encrypted_data does not decrypt; admitted (access.encrypted_data)");
    }
}

/// The session key goes to the phone alone: no cache on the way keeps it.
fn answer(settings: &AccessSettings, aes_key: &AesKey) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(no_store())
        .json(SignCheckAnswer {
            request_id: request_id::current_id(),
            aes_key: access::encode(settings.key_encoding, aes_key.bytes()),
        })
}
