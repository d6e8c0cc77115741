//! The callback receiver: what the phones' engine POSTs to the URLs set in their
//! `com.cph.cg.*` properties (chapter 6). Routes live under `callbacks.base_path`.

mod events;
mod heartbeat;
mod sign_check;
mod wire;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError, web};
use serde_json::json;

use crate::access::Refusal;
use crate::config::CallbackSettings;
use crate::domain::{ParseError, Problem};
use crate::http::error::{method_not_allowed, server_error_response};
use crate::http::{ErrorCode, error_response, json, request_id};
use crate::store::StoreError;

pub use wire::{EventEnvelope, HeartbeatEnvelope, SignCheckBody};

pub fn routes(cfg: &mut web::ServiceConfig, settings: &CallbackSettings) {
    cfg.service(
        web::scope(settings.base_path.as_str())
            .service(
                web::resource("/sign-check")
                    .app_data(json::config(settings.sign_check_body_limit))
                    .route(web::post().to(sign_check::receive))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/events")
                    .app_data(json::config(settings.events_body_limit))
                    .route(web::post().to(events::receive))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/heartbeat")
                    .app_data(json::config(settings.heartbeat_body_limit))
                    .route(web::post().to(heartbeat::receive))
                    .default_service(web::to(method_not_allowed)),
            ),
    );
}

#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error("sign check refused: {0}")]
    Refused(#[from] Refusal),
    #[error("not recorded")]
    Store(#[source] Arc<StoreError>),
}

impl ReceiverError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            ReceiverError::Invalid(e) => match e.problem {
                Problem::BadTime | Problem::TimeOutOfRange => ErrorCode::InvalidTime,
                Problem::UnknownEventType(_) => ErrorCode::UnknownEventType,
                Problem::UnknownStatus(_) => ErrorCode::UnknownStatus,
                _ => ErrorCode::InvalidField,
            },
            ReceiverError::Refused(refusal) => match refusal {
                Refusal::UnknownSession => ErrorCode::UnknownSession,
                Refusal::BadTicket => ErrorCode::BadTicket,
                Refusal::BadAuthTs => ErrorCode::BadAuthTs,
                Refusal::Expired => ErrorCode::TicketExpired,
                Refusal::EncryptedDataRequired => ErrorCode::EncryptedDataRequired,
                Refusal::DecryptFailed => ErrorCode::DecryptFailed,
                Refusal::Replayed => ErrorCode::TicketReplayed,
            },
            ReceiverError::Store(e) if e.is_unavailable() => ErrorCode::Unavailable,
            ReceiverError::Store(_) => ErrorCode::Internal,
        }
    }
}

impl ResponseError for ReceiverError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ReceiverError::Invalid(e) => error_response(self.code(), &e.to_string()),
            ReceiverError::Refused(refusal) => {
                // The reason is logged (never the ticket or key) for operators to alert on.
                tracing::warn!(reason = self.code().as_str(), "sign check refused");
                error_response(self.code(), &refusal.to_string())
            }
            ReceiverError::Store(_) if self.code() == ErrorCode::Unavailable => {
                server_error_response(self.code(), "database unavailable, retry later", self)
            }
            ReceiverError::Store(_) => server_error_response(self.code(), "internal error", self),
        }
    }
}

/// The success answer of every callback: `{"request_id": …}`.
fn acknowledged() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "request_id": request_id::current() }))
}
