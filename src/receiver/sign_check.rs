//! `POST {base_path}/sign-check` (chapter 6.1): the phone asks whether a player may use the
//! session, and gets the session's AES key if every rule of docs/api.md "Access verification"
//! holds. The first success consumes the ticket, committed (in a group with concurrent sign
//! checks) before the answer.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ReceiverError, SignCheckBody};
use crate::access::{self, Refusal, Rules, Verdict, verify};
use crate::clock::Clock;
use crate::config::AccessSettings;
use crate::http::{error::ErrorBody, request_id};
use crate::metrics::Metrics;
use crate::store::{Store, TicketWriter, Verification};

/// A passed sign check.
#[derive(Serialize, ToSchema)]
pub(super) struct SignCheckAnswer {
    /// 32 lowercase hex characters.
    request_id: String,
    /// The session's AES-256-GCM key, in `access.key_encoding` (hex by default).
    aes_key: String,
}

/// Counts every sign check by result: `ok`, `retry`, or the refusal's code.
#[utoipa::path(
    post,
    path = "/sign-check",
    tag = "callbacks",
    description = "Chapter 6.1. The first success consumes the ticket; the identical request again \
                   within `access.replay_grace_secs` gets the same answer.",
    request_body = SignCheckBody,
    responses(
        (status = 200, description = "The player may use the session", body = SignCheckAnswer),
        (status = 400, description = "`CPHUB.MALFORMED_JSON`, `CPHUB.INVALID_FIELD`", body = ErrorBody),
        (status = 403, description = "Refused: `CPHUB.UNKNOWN_SESSION`, `CPHUB.BAD_TICKET`, `CPHUB.BAD_AUTH_TS`, `CPHUB.TICKET_EXPIRED`, `CPHUB.ENCRYPTED_DATA_REQUIRED`, `CPHUB.DECRYPT_FAILED`, `CPHUB.TICKET_REPLAYED`", body = ErrorBody),
        (status = 413, description = "`CPHUB.PAYLOAD_TOO_LARGE`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn receive(
    body: web::Json<SignCheckBody>,
    store: web::Data<dyn Store>,
    tickets: web::Data<TicketWriter>,
    clock: web::Data<dyn Clock>,
    settings: web::Data<AccessSettings>,
    metrics: web::Data<Metrics>,
) -> Result<HttpResponse, ReceiverError> {
    let result = check(body, store, tickets, clock, settings).await;
    let label = match &result {
        Ok((Verdict::FirstUse, _)) => "ok".to_owned(),
        Ok((Verdict::Retry, _)) => "retry".to_owned(),
        Err(error) => error
            .code()
            .as_str()
            .trim_start_matches("CPHUB.")
            .to_ascii_lowercase(),
    };
    metrics.sign_checks.with_label_values(&[&label]).inc();
    result.map(|(_, response)| response)
}

#[tracing::instrument(name = "sign check", skip_all, fields(session_id, verdict))]
async fn check(
    body: web::Json<SignCheckBody>,
    store: web::Data<dyn Store>,
    tickets: web::Data<TicketWriter>,
    clock: web::Data<dyn Clock>,
    settings: web::Data<AccessSettings>,
) -> Result<(Verdict, HttpResponse), ReceiverError> {
    let now = clock.now();
    let (session_id, presented) = body.into_inner().parse(&settings)?;
    tracing::Span::current().record("session_id", session_id.as_str());
    let rules = Rules::from(settings.as_ref());
    let store_error = |e| ReceiverError::Store(std::sync::Arc::new(e));

    let issued = store
        .issued_access(&session_id)
        .await
        .map_err(store_error)?;
    let mut issued = issued.ok_or(Refusal::UnknownSession)?;
    let mut verdict = verify(&issued, &presented, now, &rules)?;
    if verdict == Verdict::FirstUse {
        let consumed = tickets
            .submit(Verification {
                session_id: session_id.clone(),
                digest: presented.digest(),
                now,
                hold_until: now.plus(settings.enter_timeout()),
            })
            .await
            .map_err(ReceiverError::Store)?;
        if !consumed {
            // A concurrent sign check won: this one is its retry or a replay.
            let reread = store
                .issued_access(&session_id)
                .await
                .map_err(store_error)?;
            issued = reread.ok_or(Refusal::UnknownSession)?;
            verdict = verify(&issued, &presented, now, &rules)?;
        }
    }
    tracing::Span::current().record("verdict", tracing::field::debug(verdict));
    let aes_key = access::encode(settings.key_encoding, issued.aes_key.bytes());
    let answer = SignCheckAnswer {
        request_id: request_id::current(),
        aes_key,
    };
    Ok((verdict, HttpResponse::Ok().json(answer)))
}
