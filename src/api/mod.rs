//! The operator API under `/api/v1`: bearer token from `api.tokens` on every route.

mod auth;
mod phones;
mod sessions;
mod usage;

use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, ResponseError, web};

pub use auth::BearerTokens;

use crate::config::ApiSettings;
use crate::domain::ParseError;
use crate::http::{ErrorCode, error::server_error_response, error_response, json};
use crate::store::StoreError;

pub fn routes(cfg: &mut web::ServiceConfig, settings: &ApiSettings) {
    cfg.service(
        web::scope("/api/v1")
            .app_data(json::config(settings.body_limit))
            .app_data(json::query_config())
            .wrap(from_fn(auth::require_bearer_token))
            .route("/sessions", web::post().to(sessions::mint))
            .route("/sessions", web::get().to(sessions::list))
            .route("/sessions/{session_id}", web::get().to(sessions::show))
            .route("/phones", web::get().to(phones::list))
            .route("/phones/{phone_id}", web::get().to(phones::show))
            .route(
                "/phones/{phone_id}/restart",
                web::post().to(phones::restart),
            )
            .route("/phones/{phone_id}/reset", web::post().to(phones::reset))
            .route("/recoveries", web::get().to(phones::recoveries))
            .route("/usage", web::get().to(usage::usage)),
    );
}

/// The position to continue after a full page; None after the last page.
fn next_position<T>(page: &[T], limit: i64, position: impl Fn(&T) -> String) -> Option<String> {
    (page.len() as i64 == limit)
        .then(|| page.last().map(position))
        .flatten()
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("no idle phone is free; retry later")]
    NoFreePhone,
    #[error("the phone is not free (in a session, held for one, or stale)")]
    PhoneBusy,
    #[error("query failed")]
    Store(#[from] StoreError),
    #[error("the CPH management API is not configured (cph.endpoint)")]
    CphNotConfigured,
    #[error(transparent)]
    RecoveryRefused(crate::watchdog::WatchdogError),
    #[error("could not render the report: {0}")]
    Render(String),
}

impl From<crate::usage::UsageError> for ApiError {
    fn from(error: crate::usage::UsageError) -> Self {
        match error {
            crate::usage::UsageError::Invalid(e) => ApiError::Invalid(e),
            crate::usage::UsageError::Store(e) => ApiError::Store(e),
        }
    }
}

impl From<crate::watchdog::WatchdogError> for ApiError {
    fn from(error: crate::watchdog::WatchdogError) -> Self {
        match error {
            crate::watchdog::WatchdogError::Store(e) => ApiError::Store(e),
            refused => ApiError::RecoveryRefused(refused),
        }
    }
}

impl ApiError {
    fn code(&self) -> ErrorCode {
        match self {
            ApiError::Invalid(_) => ErrorCode::InvalidField,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::NoFreePhone => ErrorCode::NoFreePhone,
            ApiError::PhoneBusy => ErrorCode::PhoneBusy,
            ApiError::CphNotConfigured => ErrorCode::CphNotConfigured,
            ApiError::RecoveryRefused(_) => ErrorCode::RecoveryRefused,
            ApiError::Store(e) if e.is_unavailable() => ErrorCode::Unavailable,
            ApiError::Store(_) | ApiError::Render(_) => ErrorCode::Internal,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Store(_) | ApiError::Render(_) => {
                server_error_response(self.code(), "query failed", self)
            }
            _ => error_response(self.code(), &self.to_string()),
        }
    }
}
