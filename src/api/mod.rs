//! The operator API under `/api/v1`: a bearer token from `api.tokens` on every route, and
//! on each the scope the route table below declares.

pub(crate) mod audit;
mod auth;
mod encode;
mod phones;
mod queue;
mod auth_failures;
pub(crate) mod rate_limit;
mod rollouts;
mod sessions;
pub(crate) mod usage;
mod webhooks;

use actix_web::http::{Method, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{HttpResponse, ResponseError, web};
use utoipa::OpenApi;

pub use auth::BearerTokens;
pub(crate) use auth::{Presented, client_ip, too_many_failures};
pub use rate_limit::RateLimit;

use crate::config::{ApiSettings, Scope};
use crate::domain::ParseError;
use crate::http::api_document;
use crate::http::route::{self, Endpoint};
use crate::http::{ErrorCode, error::server_error_response, error_response, json};
use crate::store::StoreError;

/// Where the operator API lives.
pub const PREFIX: &str = "/api/v1";

pub fn routes(cfg: &mut web::ServiceConfig, settings: &ApiSettings) {
    cfg.service(
        web::scope(PREFIX)
            .app_data(json::config(settings.body_limit))
            .app_data(json::query_config())
            .wrap(from_fn(auth::require_bearer_token))
            .configure(|cfg| {
                let guarded = endpoints().into_iter().map(auth::guarded).collect();
                route::register(cfg, guarded)
            }),
    );
}

/// Every operator route, relative to [`PREFIX`], with the scope a token needs for it: the
/// scope above is built from this list, and so is the OpenAPI document's `security` of each
/// route. Each one must also be in [`OperatorDoc`]'s `paths` (tests/api/openapi.rs checks).
/// Reading rollouts needs `phones:read` (they are the phones' versions); the document
/// describes the callback base path, so it is `admin`'s.
pub fn endpoints() -> Vec<Endpoint> {
    use Scope::*;
    vec![
        Endpoint::new(Method::POST, "/sessions", sessions::mint)
            .scope(SessionsMint)
            .traffic(),
        Endpoint::new(Method::GET, "/sessions", sessions::list).scope(SessionsRead),
        Endpoint::new(Method::GET, "/sessions/{session_id}", sessions::show).scope(SessionsRead),
        Endpoint::new(Method::POST, "/queue", queue::join)
            .with_body_limit(queue::BODY_LIMIT)
            .scope(SessionsMint),
        Endpoint::new(Method::GET, "/queue/{queue_id}", queue::poll).scope(SessionsMint),
        Endpoint::new(Method::DELETE, "/queue/{queue_id}", queue::leave).scope(SessionsMint),
        Endpoint::new(Method::GET, "/phones", phones::list).scope(PhonesRead),
        Endpoint::new(Method::GET, "/phones/{phone_id}", phones::show).scope(PhonesRead),
        Endpoint::new(Method::POST, "/phones/{phone_id}/restart", phones::restart)
            .scope(PhonesOperate),
        Endpoint::new(Method::POST, "/phones/{phone_id}/reset", phones::reset).scope(PhonesOperate),
        Endpoint::new(Method::POST, "/phones/{phone_id}/exec", encode::exec).scope(PhonesOperate),
        Endpoint::new(Method::GET, "/recoveries", phones::recoveries).scope(PhonesRead),
        Endpoint::new(Method::POST, "/rollouts", rollouts::create)
            .with_body_limit(rollouts::BODY_LIMIT)
            .scope(RolloutsWrite),
        Endpoint::new(Method::GET, "/rollouts", rollouts::list).scope(PhonesRead),
        Endpoint::new(Method::GET, "/rollouts/{rollout_id}", rollouts::show).scope(PhonesRead),
        Endpoint::new(
            Method::POST,
            "/rollouts/{rollout_id}/pause",
            rollouts::pause,
        )
        .scope(RolloutsWrite),
        Endpoint::new(
            Method::POST,
            "/rollouts/{rollout_id}/resume",
            rollouts::resume,
        )
        .scope(RolloutsWrite),
        Endpoint::new(
            Method::POST,
            "/rollouts/{rollout_id}/abort",
            rollouts::abort,
        )
        .scope(RolloutsWrite),
        Endpoint::new(Method::GET, "/recoveries/{id}", encode::recovery).scope(PhonesRead),
        Endpoint::new(Method::GET, "/encode-servers", encode::list).scope(PhonesRead),
        Endpoint::new(Method::GET, "/usage", usage::usage).scope(UsageRead),
        Endpoint::new(Method::GET, "/webhooks/deliveries", webhooks::list).scope(WebhooksRead),
        Endpoint::new(
            Method::GET,
            "/webhooks/{endpoint}/deliveries/{event_id}",
            webhooks::show,
        )
        .scope(WebhooksRead),
        Endpoint::new(
            Method::POST,
            "/webhooks/{endpoint}/deliveries/{event_id}/retry",
            webhooks::retry,
        )
        .scope(WebhooksWrite),
        Endpoint::new(
            Method::POST,
            "/webhooks/{endpoint}/replay",
            webhooks::replay,
        )
        .with_body_limit(webhooks::BODY_LIMIT)
        .scope(WebhooksWrite),
        Endpoint::new(Method::GET, "/audit", audit::list).scope(AuditRead),
        Endpoint::new(Method::GET, "/openapi.json", api_document::serve).scope(Admin),
    ]
}

/// The operator routes' part of the OpenAPI document, paths relative to [`PREFIX`]. Every
/// operation gets the bearer requirement and the 401 answer from [`crate::openapi`].
#[derive(OpenApi)]
#[openapi(paths(
    sessions::mint,
    sessions::list,
    sessions::show,
    queue::join,
    queue::poll,
    queue::leave,
    phones::list,
    phones::show,
    phones::restart,
    phones::reset,
    phones::recoveries,
    rollouts::create,
    rollouts::list,
    rollouts::show,
    rollouts::pause,
    rollouts::resume,
    rollouts::abort,
    encode::exec,
    encode::recovery,
    encode::list,
    usage::usage,
    webhooks::list,
    webhooks::show,
    webhooks::retry,
    webhooks::replay,
    audit::list,
    crate::http::api_document::serve,
))]
pub struct OperatorDoc;

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
    /// A time that is not RFC 3339 in 1970–9999: the callbacks' code for it.
    #[error(transparent)]
    InvalidTime(ParseError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error(
        "no idle phone is free (players waiting in the queue come first); retry later or join \
         the queue: POST /api/v1/queue"
    )]
    NoFreePhone,
    #[error(
        "no phone has this app deployed (chapter 5.1.2, as phone sync last read it): no phone \
         will free up for it; check app_id, or deploy the app"
    )]
    AppNotDeployed,
    #[error("the queue entry was served and its session has moved on; join again to play")]
    QueueEntryClosed,
    #[error("the phone is not free (in a session, held for one, or stale)")]
    PhoneBusy,
    #[error("this Idempotency-Key was used with another request body")]
    IdempotencyKeyReused,
    #[error("query failed")]
    Store(#[from] StoreError),
    /// A write committed in a group (`store::GroupCommit`) that was not committed.
    #[error("not committed")]
    Write(#[source] std::sync::Arc<StoreError>),
    #[error("the CPH management API is not configured (cph.endpoint)")]
    CphNotConfigured,
    #[error(transparent)]
    RecoveryRefused(crate::watchdog::WatchdogError),
    #[error("command: {0}")]
    InvalidCommand(#[from] crate::domain::ShellCommandError),
    #[error("could not render the report: {0}")]
    Render(String),
    #[error(transparent)]
    Rollout(crate::rollout::RolloutError),
}

impl From<crate::rollout::RolloutError> for ApiError {
    fn from(error: crate::rollout::RolloutError) -> Self {
        match error {
            crate::rollout::RolloutError::Store(e) => ApiError::Store(e),
            refused => ApiError::Rollout(refused),
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

impl From<crate::queue::QueueError> for ApiError {
    fn from(error: crate::queue::QueueError) -> Self {
        use crate::queue::QueueError;
        match error {
            QueueError::Unknown => ApiError::NotFound("queue entry"),
            QueueError::Closed => ApiError::QueueEntryClosed,
            QueueError::Store(e) => ApiError::Store(e),
        }
    }
}

impl ApiError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            ApiError::Invalid(_) => ErrorCode::InvalidField,
            ApiError::InvalidTime(_) => ErrorCode::InvalidTime,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::NoFreePhone => ErrorCode::NoFreePhone,
            ApiError::AppNotDeployed => ErrorCode::AppNotDeployed,
            ApiError::PhoneBusy => ErrorCode::PhoneBusy,
            ApiError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            ApiError::QueueEntryClosed => ErrorCode::QueueEntryClosed,
            ApiError::CphNotConfigured => ErrorCode::CphNotConfigured,
            ApiError::RecoveryRefused(_) => ErrorCode::RecoveryRefused,
            ApiError::Rollout(e) => rollout_code(e),
            ApiError::InvalidCommand(_) => ErrorCode::InvalidCommand,
            ApiError::Store(e) if e.is_retryable() => ErrorCode::Unavailable,
            ApiError::Write(e) if e.is_retryable() => ErrorCode::Unavailable,
            ApiError::Store(_) | ApiError::Write(_) | ApiError::Render(_) => ErrorCode::Internal,
        }
    }
}

fn rollout_code(error: &crate::rollout::RolloutError) -> ErrorCode {
    use crate::rollout::RolloutError;
    match error {
        RolloutError::NotFound(_) => ErrorCode::NotFound,
        RolloutError::AppBusy(_) | RolloutError::WrongState(..) => ErrorCode::RolloutConflict,
        RolloutError::NoPhones(_) | RolloutError::PhonesWithoutApp(_) => ErrorCode::NoTargetPhones,
        RolloutError::NotPushed(_) => ErrorCode::VersionNotPushed,
        RolloutError::VersionRefused(_) => ErrorCode::InvalidField,
        RolloutError::PushFailed(_) | RolloutError::Cph(_) => ErrorCode::CphFailed,
        RolloutError::Store(e) if e.is_retryable() => ErrorCode::Unavailable,
        RolloutError::Store(_) => ErrorCode::Internal,
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Store(_) | ApiError::Write(_) | ApiError::Render(_) => {
                server_error_response(self.code(), "query failed", self)
            }
            _ => error_response(self.code(), &self.to_string()),
        }
    }
}
