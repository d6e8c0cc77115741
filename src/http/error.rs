//! Error bodies follow chapter 7.1.1: `{"request_id", "error_code", "error_msg"}`. The codes
//! are cphub's own, stable, and listed in docs/errors.md; clients may switch on them.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective, RETRY_AFTER};
use serde::Serialize;
use utoipa::ToSchema;

use super::request_id;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    MalformedJson,
    InvalidField,
    InvalidTime,
    UnknownEventType,
    UnknownStatus,
    PayloadTooLarge,
    Unauthorized,
    Forbidden,
    RateLimited,
    NotFound,
    MethodNotAllowed,
    UnknownSession,
    BadTicket,
    BadAuthTs,
    TicketExpired,
    EncryptedDataRequired,
    DecryptFailed,
    TicketReplayed,
    TicketSessionEnded,
    PhoneBusy,
    NoFreePhone,
    AppNotDeployed,
    IdempotencyKeyReused,
    QueueEntryClosed,
    RecoveryRefused,
    RolloutConflict,
    VersionNotPushed,
    NoTargetPhones,
    CphFailed,
    InvalidCommand,
    CphNotConfigured,
    SourceRefused,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 34] = [
        ErrorCode::MalformedJson,
        ErrorCode::InvalidField,
        ErrorCode::InvalidTime,
        ErrorCode::UnknownEventType,
        ErrorCode::UnknownStatus,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::RateLimited,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::UnknownSession,
        ErrorCode::BadTicket,
        ErrorCode::BadAuthTs,
        ErrorCode::TicketExpired,
        ErrorCode::EncryptedDataRequired,
        ErrorCode::DecryptFailed,
        ErrorCode::TicketReplayed,
        ErrorCode::TicketSessionEnded,
        ErrorCode::PhoneBusy,
        ErrorCode::NoFreePhone,
        ErrorCode::AppNotDeployed,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::QueueEntryClosed,
        ErrorCode::RecoveryRefused,
        ErrorCode::RolloutConflict,
        ErrorCode::VersionNotPushed,
        ErrorCode::NoTargetPhones,
        ErrorCode::CphFailed,
        ErrorCode::InvalidCommand,
        ErrorCode::CphNotConfigured,
        ErrorCode::SourceRefused,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "CPHUB.MALFORMED_JSON",
            ErrorCode::InvalidField => "CPHUB.INVALID_FIELD",
            ErrorCode::InvalidTime => "CPHUB.INVALID_TIME",
            ErrorCode::UnknownEventType => "CPHUB.UNKNOWN_EVENT_TYPE",
            ErrorCode::UnknownStatus => "CPHUB.UNKNOWN_STATUS",
            ErrorCode::PayloadTooLarge => "CPHUB.PAYLOAD_TOO_LARGE",
            ErrorCode::Unauthorized => "CPHUB.UNAUTHORIZED",
            ErrorCode::Forbidden => "CPHUB.FORBIDDEN",
            ErrorCode::RateLimited => "CPHUB.RATE_LIMITED",
            ErrorCode::NotFound => "CPHUB.NOT_FOUND",
            ErrorCode::MethodNotAllowed => "CPHUB.METHOD_NOT_ALLOWED",
            ErrorCode::UnknownSession => "CPHUB.UNKNOWN_SESSION",
            ErrorCode::BadTicket => "CPHUB.BAD_TICKET",
            ErrorCode::BadAuthTs => "CPHUB.BAD_AUTH_TS",
            ErrorCode::TicketExpired => "CPHUB.TICKET_EXPIRED",
            ErrorCode::EncryptedDataRequired => "CPHUB.ENCRYPTED_DATA_REQUIRED",
            ErrorCode::DecryptFailed => "CPHUB.DECRYPT_FAILED",
            ErrorCode::TicketReplayed => "CPHUB.TICKET_REPLAYED",
            ErrorCode::TicketSessionEnded => "CPHUB.TICKET_SESSION_ENDED",
            ErrorCode::PhoneBusy => "CPHUB.PHONE_BUSY",
            ErrorCode::NoFreePhone => "CPHUB.NO_FREE_PHONE",
            ErrorCode::AppNotDeployed => "CPHUB.APP_NOT_DEPLOYED",
            ErrorCode::IdempotencyKeyReused => "CPHUB.IDEMPOTENCY_KEY_REUSED",
            ErrorCode::QueueEntryClosed => "CPHUB.QUEUE_ENTRY_CLOSED",
            ErrorCode::RecoveryRefused => "CPHUB.RECOVERY_REFUSED",
            ErrorCode::RolloutConflict => "CPHUB.ROLLOUT_CONFLICT",
            ErrorCode::VersionNotPushed => "CPHUB.VERSION_NOT_PUSHED",
            ErrorCode::NoTargetPhones => "CPHUB.NO_TARGET_PHONES",
            ErrorCode::CphFailed => "CPHUB.CPH_FAILED",
            ErrorCode::InvalidCommand => "CPHUB.INVALID_COMMAND",
            ErrorCode::CphNotConfigured => "CPHUB.CPH_NOT_CONFIGURED",
            ErrorCode::SourceRefused => "CPHUB.SOURCE_REFUSED",
            ErrorCode::Unavailable => "CPHUB.UNAVAILABLE",
            ErrorCode::Internal => "CPHUB.INTERNAL",
        }
    }

    /// The code as a metric label, without the `CPHUB.` prefix and in lower case
    /// (`ticket_expired`): built once, so counting a refused request allocates nothing.
    pub fn label(self) -> &'static str {
        static LABELS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
            let label = |code: &ErrorCode| code.as_str()["CPHUB.".len()..].to_ascii_lowercase();
            ErrorCode::ALL.iter().map(label).collect()
        });
        let index = ErrorCode::ALL.iter().position(|code| *code == self);
        index.map_or("unlisted", |i| LABELS[i].as_str())
    }

    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::MalformedJson
            | ErrorCode::InvalidField
            | ErrorCode::InvalidCommand
            | ErrorCode::InvalidTime
            | ErrorCode::UnknownEventType
            | ErrorCode::UnknownStatus => StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::UnknownSession
            | ErrorCode::BadTicket
            | ErrorCode::BadAuthTs
            | ErrorCode::TicketExpired
            | ErrorCode::EncryptedDataRequired
            | ErrorCode::DecryptFailed
            | ErrorCode::TicketReplayed
            | ErrorCode::TicketSessionEnded
            | ErrorCode::SourceRefused => StatusCode::FORBIDDEN,
            ErrorCode::PhoneBusy
            | ErrorCode::AppNotDeployed
            | ErrorCode::RecoveryRefused
            | ErrorCode::QueueEntryClosed
            | ErrorCode::RolloutConflict
            | ErrorCode::VersionNotPushed
            | ErrorCode::NoTargetPhones => StatusCode::CONFLICT,
            ErrorCode::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::CphFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::NoFreePhone | ErrorCode::CphNotConfigured | ErrorCode::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Every error answer (chapter 7.1.1's shape).
#[derive(Serialize, ToSchema)]
pub struct ErrorBody<'a> {
    /// 32 lowercase hex characters; also the `x-request-id` header and on the log lines.
    request_id: String,
    /// cphub's stable code, listed in docs/errors.md.
    #[schema(schema_with = error_code_schema)]
    error_code: &'static str,
    /// For people; may change.
    error_msg: &'a str,
}

/// Every [`ErrorCode`], so clients generated from the document can switch on them.
fn error_code_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(ErrorCode::ALL.map(ErrorCode::as_str)))
        .build()
}

/// `Cache-Control: no-store`, for answers that carry a secret (a ticket, a session key) or
/// an error.
pub fn no_store() -> CacheControl {
    CacheControl(vec![CacheDirective::NoStore])
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: &str = "1";

/// The response for `code`, with `message` for people. 503s carry `Retry-After`.
pub fn error_response(code: ErrorCode, message: &str) -> HttpResponse {
    let mut res = HttpResponse::build(code.status());
    res.insert_header(no_store());
    if code.status() == StatusCode::SERVICE_UNAVAILABLE {
        res.insert_header((RETRY_AFTER, RETRY_AFTER_SECS));
    }
    let mut res = res.json(ErrorBody {
        request_id: request_id::current(),
        error_code: code.as_str(),
        error_msg: message,
    });
    // For the middleware behind the handler (the audit trail records the code).
    res.extensions_mut().insert(code);
    res
}

/// Errors that are ours (5xx) are logged with their whole cause chain; the body says only
/// what the caller can act on.
pub fn server_error_response(
    code: ErrorCode,
    public_message: &str,
    error: &(dyn std::error::Error + 'static),
) -> HttpResponse {
    tracing::error!(
        error_code = code.as_str(),
        error = %crate::telemetry::ErrorChain(error),
        "request failed"
    );
    error_response(code, public_message)
}

/// The answer for routes that do not exist and methods a route does not take.
pub async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    error_response(
        ErrorCode::NotFound,
        &format!("no route for {} {}", req.method(), req.path()),
    )
}

/// A method the path does not take; `allow` lists those it does (`GET, POST`).
pub fn method_not_allowed(req: &actix_web::HttpRequest, allow: &str) -> HttpResponse {
    let mut response = error_response(
        ErrorCode::MethodNotAllowed,
        &format!("{} is not allowed on {}", req.method(), req.path()),
    );
    if let Ok(value) = actix_web::http::header::HeaderValue::from_str(allow) {
        response
            .headers_mut()
            .insert(actix_web::http::header::ALLOW, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn every_code_is_documented_in_docs_errors_md() {
        let page = include_str!("../../docs/errors.md");
        for code in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.status().as_u16());
            assert!(page.contains(&row), "docs/errors.md lacks the row {row:?}");
        }
    }

    /// The sign-check counter's `result` label values, as docs/metrics.md lists them.
    #[test]
    fn a_codes_metric_label_is_its_name_in_lower_case() {
        assert_eq!(ErrorCode::TicketExpired.label(), "ticket_expired");
        assert_eq!(ErrorCode::DecryptFailed.label(), "decrypt_failed");
        let labels: std::collections::HashSet<_> =
            ErrorCode::ALL.iter().map(|c| c.label()).collect();
        assert_eq!(labels.len(), ErrorCode::ALL.len());
    }
}
