//! The callback routes, their OpenAPI part and their answers (errors and acknowledgements).

use std::sync::Arc;

use actix_web::http::{Method, StatusCode};
use actix_web::{HttpResponse, ResponseError, web};
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::{events, heartbeat, sign_check, source};
use crate::access::Refusal;
use crate::config::CallbackSettings;
use crate::domain::{ParseError, Problem};
use crate::http::error::server_error_response;
use crate::http::route::{self, Endpoint};
use crate::http::{ErrorCode, error_response, request_id};
use crate::store::StoreError;

pub fn routes(cfg: &mut web::ServiceConfig, settings: &CallbackSettings) {
    cfg.service(
        web::scope(settings.base_path.as_str())
            .wrap(actix_web::middleware::from_fn(source::admit))
            .configure(|cfg| route::register(cfg, endpoints(settings))),
    );
}

/// Every callback route, relative to `callbacks.base_path`, each with its body limit. Each
/// one must also be in [`CallbackDoc`]'s `paths` (tests/api/openapi.rs checks).
pub fn endpoints(settings: &CallbackSettings) -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::POST, "/sign-check", sign_check::receive)
            .with_body_limit(settings.sign_check_body_limit),
        Endpoint::new(Method::POST, "/events", events::receive)
            .with_body_limit(settings.events_body_limit),
        Endpoint::new(Method::POST, "/heartbeat", heartbeat::receive)
            .with_body_limit(settings.heartbeat_body_limit),
    ]
}

/// The callbacks' part of the OpenAPI document, paths relative to `callbacks.base_path`.
#[derive(OpenApi)]
#[openapi(paths(sign_check::receive, events::receive, heartbeat::receive))]
pub struct CallbackDoc;

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
                Problem::BadTime | Problem::TimeOutOfRange | Problem::TimeAhead => {
                    ErrorCode::InvalidTime
                }
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
                Refusal::SessionEnded => ErrorCode::TicketSessionEnded,
            },
            ReceiverError::Store(e) if e.is_retryable() => ErrorCode::Unavailable,
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

/// The success answer of the events and heartbeat callbacks.
#[derive(Serialize, ToSchema)]
pub struct Acknowledged {
    /// 32 lowercase hex characters.
    #[schema(value_type = String)]
    request_id: request_id::RequestId,
}

pub(super) fn acknowledged() -> HttpResponse {
    HttpResponse::Ok().json(Acknowledged {
        request_id: request_id::current_id(),
    })
}
