//! Errors: a whole request refused ([`ControlPlaneError`], answered with chapter 7.1.1's
//! `{request_id, error_code, error_msg}` body and chapter 7.2's codes), why authentication
//! failed ([`AuthFailure`]), and one phone of a batch refused inside the 200 answer
//! (`ItemError`, chapter 4.3.5's example).

use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::http::request_id;

/// Why a request was not authenticated; each reason has its own message so a client's
/// mistake can be told from another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no Authorization or X-Auth-Token header")]
    Missing,
    #[error(
        "the Authorization header is not \"SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…\""
    )]
    Malformed,
    #[error("the access key is unknown")]
    UnknownAccessKey,
    #[error("X-Sdk-Date is missing or not in the YYYYMMDDTHHMMSSZ format")]
    BadDate,
    #[error("X-Sdk-Date is too far from the server's time (request expired)")]
    StaleDate,
    #[error("the signed header {0} is not in the request")]
    MissingSignedHeader(String),
    #[error("the signature does not match the request")]
    BadSignature,
    #[error("the token is unknown or expired")]
    BadToken,
}

/// A whole request refused. The body is chapter 7.1.1's `{request_id, error_code, error_msg}`.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("Incorrect IAM authentication information: {0}")]
    Unauthenticated(#[from] AuthFailure),
    #[error("The username or password is wrong, or the scope is not project {0}.")]
    IamRefused(String),
    #[error("The API does not exist or has not been published in the environment: {0}")]
    NoRoute(String),
    #[error("The API does not exist: project {0} is not served here.")]
    WrongProject(String),
    #[error("Parameter: {0}")]
    InvalidParameter(String),
    #[error("Parameter: offset or limit is invalid.")]
    BadPage,
    #[error("Parameter: status is invalid.")]
    BadStatus,
    #[error("Parameter: phone_id list is empty.")]
    NoPhones,
    #[error("Phone is not found.")]
    PhoneNotFound,
    #[error("Job is not found.")]
    JobNotFound,
}

impl ControlPlaneError {
    /// Codes of chapter 7.2 where it has one; `APIGW.*` are the API gateway's. The job code
    /// is the simulator's own (the reference lists none for an unknown job).
    fn code(&self) -> &'static str {
        match self {
            ControlPlaneError::Unauthenticated(_) | ControlPlaneError::IamRefused(_) => {
                "APIGW.0301"
            }
            ControlPlaneError::NoRoute(_) | ControlPlaneError::WrongProject(_) => "APIGW.0101",
            ControlPlaneError::InvalidParameter(_) => "CPS.0001",
            ControlPlaneError::BadPage => "CPS.0002",
            ControlPlaneError::PhoneNotFound => "CPS.0005",
            ControlPlaneError::NoPhones => "CPS.0009",
            ControlPlaneError::BadStatus => "CPS.0010",
            ControlPlaneError::JobNotFound => "CPS.0011",
        }
    }
}

impl ResponseError for ControlPlaneError {
    fn status_code(&self) -> StatusCode {
        match self {
            ControlPlaneError::Unauthenticated(_) | ControlPlaneError::IamRefused(_) => {
                StatusCode::UNAUTHORIZED
            }
            ControlPlaneError::NoRoute(_)
            | ControlPlaneError::WrongProject(_)
            | ControlPlaneError::PhoneNotFound
            | ControlPlaneError::JobNotFound => StatusCode::NOT_FOUND,
            ControlPlaneError::InvalidParameter(_)
            | ControlPlaneError::BadPage
            | ControlPlaneError::BadStatus
            | ControlPlaneError::NoPhones => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ControlPlaneError::Unauthenticated(reason) = self {
            tracing::info!(%reason, "fake CPH API refused a request");
        }
        HttpResponse::build(self.status_code())
            .insert_header(CacheControl(vec![CacheDirective::NoStore]))
            .json(json!({
                "request_id": request_id::current(),
                "error_code": self.code(),
                "error_msg": self.to_string(),
            }))
    }
}

/// A phone of a batch that could not be acted on: reported inside the 200 answer, next to
/// the jobs of the other phones (chapter 4.3.5's example).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ItemError {
    #[error("Parameter: phone_id is invalid.")]
    InvalidPhoneId,
    #[error("Phone is not found.")]
    PhoneNotFound,
    #[error("Parameter: property is missing.")]
    MissingProperty,
    #[error("Parameter: property is invalid: {0}")]
    InvalidProperty(String),
}

impl ItemError {
    fn code(&self) -> &'static str {
        match self {
            ItemError::InvalidPhoneId => "CPS.0004",
            ItemError::PhoneNotFound => "CPS.0005",
            ItemError::MissingProperty | ItemError::InvalidProperty(_) => "CPS.0001",
        }
    }

    /// The batch answer's entry for the phone: an error in place of a job.
    pub(super) fn answer(&self, phone_id: &str) -> Value {
        json!({"phone_id": phone_id, "error_code": self.code(), "error_msg": self.to_string()})
    }
}
