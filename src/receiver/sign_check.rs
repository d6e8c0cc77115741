//! `POST {base_path}/sign-check` (chapter 6.1): the phone asks whether a player may use the
//! session, and gets the session's AES key if every rule of docs/api.md "Access verification"
//! holds. The first success consumes the ticket, and a reconnect is logged, committed (in a
//! group with concurrent sign checks) before the answer.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::{ReceiverError, SignCheckBody};
use crate::access::{self, DataCheck, Issued, Refusal, Rules, SignCheck, Verdict, verify};
use crate::clock::Clock;
use crate::config::AccessSettings;
use crate::domain::{SessionId, UtcTime};
use crate::http::{error::ErrorBody, request_id};
use crate::metrics::Metrics;
use crate::store::{Admission, Store, TicketWriter, Verification};

/// A passed sign check.
#[derive(Serialize, ToSchema)]
pub(super) struct SignCheckAnswer {
    /// 32 lowercase hex characters.
    request_id: String,
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
    store: web::Data<dyn Store>,
    tickets: web::Data<TicketWriter>,
    clock: web::Data<dyn Clock>,
    settings: web::Data<AccessSettings>,
    metrics: web::Data<Metrics>,
    root: tracing_actix_web::RootSpan,
) -> Result<HttpResponse, ReceiverError> {
    let context = Context {
        store: store.as_ref(),
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

/// What deciding one sign check reads and writes.
struct Context<'a> {
    store: &'a dyn Store,
    tickets: &'a TicketWriter,
    settings: &'a AccessSettings,
    metrics: &'a Metrics,
    now: UtcTime,
    /// The request's span, which names the session too.
    root: &'a tracing::Span,
}

#[tracing::instrument(name = "sign check", skip_all, fields(session_id, verdict, data))]
async fn check(
    body: SignCheckBody,
    cx: &Context<'_>,
) -> Result<(Verdict, HttpResponse), ReceiverError> {
    let (session_id, presented) = body.parse(cx.settings)?;
    for span in [&tracing::Span::current(), cx.root] {
        span.record("session_id", session_id.as_str());
    }
    let rules = Rules::from(cx.settings);
    let mut issued = issued_access(cx.store, &session_id).await?;
    let mut verdict = verify(&issued, &presented, cx.now, &rules)?;
    if verdict != Verdict::Retry {
        // A retry repeats a request that passed: its data was checked then.
        check_data(&rules, &issued, &presented, cx.metrics)?;
    }
    // Each lost race means the session moved on (minted → verified → ended), so deciding
    // afresh ends within three passes: recorded, a retry, or refused.
    for _ in 0..3 {
        if verdict == Verdict::Retry || record(cx, &session_id, &presented, verdict).await? {
            tracing::Span::current().record("verdict", tracing::field::debug(verdict));
            return Ok((verdict, answer(cx.settings, &issued)));
        }
        issued = issued_access(cx.store, &session_id).await?;
        verdict = verify(&issued, &presented, cx.now, &rules)?;
    }
    Err(Refusal::Replayed.into())
}

async fn issued_access(store: &dyn Store, session_id: &SessionId) -> Result<Issued, ReceiverError> {
    let issued = store.issued_access(session_id).await;
    let issued = issued.map_err(|e| ReceiverError::Store(std::sync::Arc::new(e)))?;
    Ok(issued.ok_or(Refusal::UnknownSession)?)
}

/// Counts what `encrypted_data` showed and refuses it under `enforce` only.
fn check_data(
    rules: &Rules,
    issued: &Issued,
    presented: &SignCheck,
    metrics: &Metrics,
) -> Result<(), Refusal> {
    let data = rules.check_data(&issued.aes_key, &presented.sealed);
    if let Some(data) = data {
        tracing::Span::current().record("data", data.as_str());
        metrics
            .sign_check_decrypts
            .with_label_values(&[data.as_str()])
            .inc();
    }
    let admitted = rules.admit(data);
    if admitted.is_ok() && data == Some(DataCheck::Failed) {
        // What `enforce` would refuse: the operator's evidence before switching to it.
        tracing::info!("encrypted_data does not decrypt; admitted (access.encrypted_data)");
    }
    admitted
}

/// Commits a first use or a reconnect with concurrent sign checks; false when the session
/// changed since it was read (another sign check consumed the ticket, a quit ended it).
async fn record(
    cx: &Context<'_>,
    session_id: &SessionId,
    presented: &SignCheck,
    verdict: Verdict,
) -> Result<bool, ReceiverError> {
    let admission = match verdict {
        Verdict::Reconnect => Admission::Reconnect,
        _ => Admission::FirstUse {
            hold_until: cx.now.plus(cx.settings.enter_timeout()),
        },
    };
    let verification = Verification {
        session_id: session_id.clone(),
        digest: presented.digest().to_owned(),
        now: cx.now,
        admission,
    };
    cx.tickets
        .submit(verification)
        .await
        .map_err(ReceiverError::Store)
}

fn answer(settings: &AccessSettings, issued: &Issued) -> HttpResponse {
    HttpResponse::Ok().json(SignCheckAnswer {
        request_id: request_id::current(),
        aes_key: access::encode(settings.key_encoding, issued.aes_key.bytes()),
    })
}
