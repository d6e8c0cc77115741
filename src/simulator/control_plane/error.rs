//! Errors: a whole request refused ([`ControlPlaneError`], answered with chapter 7.1.1's
//! `{request_id, error_code, error_msg}` body and chapter 7.2's codes and statuses: every
//! `CPS.*` code is a 400), why authentication failed ([`AuthFailure`]), and one phone of a
//! batch refused inside the 201 answer (`ItemError`, chapter 4.3.5's example).
//!
//! Where 7.2 has no code for a refusal, the closest documented one is used and the choice
//! is said where the code is given.

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
    /// 7.2 CPS.0004, in the words of 4.3.5's example.
    #[error("Parameter: phone_id is invalid.")]
    InvalidPhoneId,
    #[error("Parameter: job_id is invalid.")]
    JobNotFound,
    /// 7.2 CPS.0003, on demand (`faults.rs`).
    #[error("Service internal error.")]
    SystemError,
    /// 7.2 CPS.0006, on demand (`faults.rs`).
    #[error("No permission to request resources. Role is op_restricted.")]
    Arrears,
    /// 7.1.2's 502/504 after the request was performed (`faults.rs`): the gateway's answer.
    #[error("The backend did not answer in time or answered badly.")]
    AnswerLost(u16),
}

impl ControlPlaneError {
    /// A phone the path names that the fleet does not have: CPS.0005 when the id could be a
    /// phone's, CPS.0004 when it could not (as the batch operations answer per phone).
    pub(super) fn unknown_phone(phone_id: &str) -> Self {
        match super::wire::is_phone_id(phone_id) {
            true => ControlPlaneError::PhoneNotFound,
            false => ControlPlaneError::InvalidPhoneId,
        }
    }

    /// Codes of chapter 7.2 where it has one; `APIGW.*` are the API gateway's (not in the
    /// reference). The reference is silent on two refusals:
    ///
    /// * a malformed parameter other than paging, status or phone id (a body that is not
    ///   JSON, a missing `request_id`, a bad `type`): CPS.0200 "Invalid parameters.", 7.2's
    ///   only generic parameter code (CPS.0001 means "no permission", not this);
    /// * an unknown job id (4.4.1 lists no error of its own): also 400 CPS.0200, "Parameter:
    ///   job_id is invalid.", the way 7.2 answers an unknown phone (400 CPS.0004/CPS.0005,
    ///   never 404): every CPS code of 7.2 is a 400.
    fn code(&self) -> &'static str {
        match self {
            ControlPlaneError::Unauthenticated(_) | ControlPlaneError::IamRefused(_) => {
                "APIGW.0301"
            }
            ControlPlaneError::NoRoute(_) | ControlPlaneError::WrongProject(_) => "APIGW.0101",
            ControlPlaneError::InvalidParameter(_) | ControlPlaneError::JobNotFound => {
                INVALID_PARAMETERS
            }
            ControlPlaneError::BadPage => "CPS.0002",
            ControlPlaneError::SystemError => "CPS.0003",
            ControlPlaneError::PhoneNotFound => "CPS.0005",
            ControlPlaneError::InvalidPhoneId => "CPS.0004",
            ControlPlaneError::Arrears => "CPS.0006",
            ControlPlaneError::NoPhones => "CPS.0009",
            ControlPlaneError::BadStatus => "CPS.0010",
            // Huawei's API gateway: backend unavailable / backend timeout.
            ControlPlaneError::AnswerLost(504) => "APIGW.0203",
            ControlPlaneError::AnswerLost(_) => "APIGW.0202",
        }
    }
}

impl ResponseError for ControlPlaneError {
    fn status_code(&self) -> StatusCode {
        match self {
            // 7.1.2 lists no 401; an unsigned or wrongly signed request is refused by the API
            // gateway before the service, and Huawei's gateway answers 401 (its `APIGW.*`
            // codes, see `code`). The reference is silent on it.
            ControlPlaneError::Unauthenticated(_) | ControlPlaneError::IamRefused(_) => {
                StatusCode::UNAUTHORIZED
            }
            ControlPlaneError::NoRoute(_) | ControlPlaneError::WrongProject(_) => {
                StatusCode::NOT_FOUND
            }
            // 7.2: every CPS code, "not found" ones included, comes with a 400.
            ControlPlaneError::InvalidParameter(_)
            | ControlPlaneError::BadPage
            | ControlPlaneError::BadStatus
            | ControlPlaneError::NoPhones
            | ControlPlaneError::PhoneNotFound
            | ControlPlaneError::InvalidPhoneId
            | ControlPlaneError::JobNotFound
            | ControlPlaneError::SystemError
            | ControlPlaneError::Arrears => StatusCode::BAD_REQUEST,
            ControlPlaneError::AnswerLost(status) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
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

/// 7.2's only generic parameter code ("Invalid parameters."), for refusals it has no own
/// code for (see [`ControlPlaneError::code`]).
const INVALID_PARAMETERS: &str = "CPS.0200";

/// A phone of a batch that could not be acted on: reported inside the 201 answer, next to
/// the jobs of the other phones (chapter 4.3.5's example: `phone_id`, `error_code`,
/// `error_msg`, no `job_id`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum ItemError {
    #[error("Parameter: phone_id is invalid.")]
    InvalidPhoneId,
    #[error("Parameter: property is missing.")]
    MissingProperty,
    #[error("Parameter: property is invalid: {0}")]
    InvalidProperty(String),
    /// A restart, reset or stop of a phone whose reset, restart or stop is still running.
    /// The reference is silent; a real service cannot run two such jobs on one phone at
    /// once, so the phone is refused with 7.2's CPS.0010 ("The cloud phone status is
    /// invalid"), the closest documented code.
    #[error("Parameter: status is invalid. The phone is busy with another job.")]
    Busy,
    /// 7.2 CPS.0003, on demand (`faults.rs`).
    #[error("Service internal error.")]
    SystemError,
}

impl ItemError {
    fn code(&self) -> &'static str {
        match self {
            ItemError::InvalidPhoneId => "CPS.0004",
            ItemError::MissingProperty | ItemError::InvalidProperty(_) => INVALID_PARAMETERS,
            ItemError::Busy => "CPS.0010",
            ItemError::SystemError => "CPS.0003",
        }
    }

    /// The batch answer's entry for the phone: an error in place of a job.
    pub(super) fn answer(&self, phone_id: &str) -> Value {
        json!({"phone_id": phone_id, "error_code": self.code(), "error_msg": self.to_string()})
    }
}
