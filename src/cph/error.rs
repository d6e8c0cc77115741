//! What can go wrong talking to the control plane, sorted by what the caller may do next.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum CphError {
    /// The control plane answered with an error body (chapter 7.1.1).
    #[error("CPH API answered {status}: {code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: Option<String>,
        /// The server's `Retry-After`, when it sent one (seconds form).
        retry_after: Option<Duration>,
    },
    /// Sent, but no answer arrived in time: the operation may or may not have happened.
    /// Never resent blindly; reconcile (list jobs, look at the phone) instead.
    #[error("CPH API call timed out after it was sent; outcome unknown")]
    OutcomeUnknown(#[source] reqwest::Error),
    /// A POST answered 500, 502, 503 or 504: the operation may or may not have happened
    /// (7.1.2 says only that the request could not be completed, by an internal error, an
    /// invalid answer behind the gateway, or a gateway timeout); or answered 2xx with a body
    /// that could not be read (`code` empty). Never resent; when the answer names the
    /// request (`request_id`, from 7.1.1's body or the `X-Request-Id` header), the client has
    /// already asked 4.4.2 for its jobs and found none yet.
    #[error("CPH API answered {status} to a POST; outcome unknown (request {request_id:?})")]
    AnswerLost {
        status: u16,
        code: String,
        request_id: Option<String>,
    },
    /// Could not be sent (connection refused, DNS, TLS): nothing happened.
    #[error("CPH API unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// Retries used up on 429/5xx/connection failures.
    #[error("CPH API still failing after {attempts} attempts")]
    RetriesExhausted {
        attempts: u32,
        #[source]
        last: Box<CphError>,
    },
    /// Too many recent failures: calls are refused locally for a while.
    #[error("CPH API circuit breaker is open; not calling for now")]
    CircuitOpen,
    /// A 2xx whose body is not what the reference describes.
    #[error("CPH API answered an unexpected body")]
    BadResponse(#[source] serde_json::Error),
    #[error("IAM token request failed: {0}")]
    Token(String),
    #[error("job {job_id} still running after {waited:?}")]
    JobDeadline { job_id: String, waited: Duration },
    #[error("invalid CPH configuration: {0}")]
    Config(String),
}

/// 7.2: "System error. … Try again later." Taken as a 400 that refused the request, with
/// nothing done, so that even a POST is sent again. The reference does not say so in as
/// many words (its message, "Service internal error", is close to 7.1.2's 500, whose POSTs
/// cphub never resends): the reading rests on the 400 class (7.1.2: "The request parameter
/// is incorrect", a refusal before acting) and on the handling measure, "Try again later".
/// The simulator's CPS.0003 fault does nothing, as this reading assumes.
pub const SYSTEM_ERROR: &str = "CPS.0003";

/// 7.2: "Parameter error: Invalid pagination parameter." (`offset or limit is invalid`).
pub const BAD_PAGE: &str = "CPS.0002";

/// 7.2: "Invalid parameters." (the reference's example names `peering_id`): a value the
/// control plane does not know, such as an application version id.
pub const INVALID_PARAMETERS: &str = "CPS.0200";

/// 7.2: "The cloud phone you queried does not exist." (`Phone is not found`).
pub const PHONE_NOT_FOUND: &str = "CPS.0005";

/// 7.2: the account is in arrears (CPS.0006), frozen (CPS.0007) or not verified (CPS.0008).
/// Every call fails until a person acts; retrying or recovering other phones cannot help.
pub const ACCOUNT_CODES: [&str; 3] = ["CPS.0006", "CPS.0007", "CPS.0008"];

impl CphError {
    /// Worth another try (after a backoff) if the request is safe to repeat. CPS.0003 (7.2)
    /// is transient although it comes with a 400; 501 (7.1.2: "the server does not support
    /// the requested function") is not, however often it is asked.
    pub fn is_transient(&self) -> bool {
        match self {
            CphError::Api { status: 501, .. } => false,
            CphError::Api { status, .. } if *status == 429 || *status >= 500 => true,
            CphError::Api { .. } => self.code() == Some(SYSTEM_ERROR),
            CphError::Unreachable(_) => true,
            _ => false,
        }
    }

    /// The control plane refused the request without doing anything, so even a POST may be
    /// sent again: CPS.0003 (7.2: "Try again later"), a 429, or a connection that never
    /// opened. The reference is silent on 429; it is a gateway's throttle, answered before
    /// the request reaches the service. A 503 is not here: 7.1.2 gives it the same "internal
    /// service error" as a 500, so a reset answered 503 may be running.
    pub fn was_not_processed(&self) -> bool {
        match self {
            CphError::Api { status: 429, .. } => true,
            CphError::Api { .. } => self.code() == Some(SYSTEM_ERROR),
            CphError::Unreachable(e) => e.is_connect(),
            _ => false,
        }
    }

    /// Nothing reached the control plane, or it refused without doing anything
    /// ([`Self::was_not_processed`], also after the last retry): the operation is not done,
    /// and may be asked for again later.
    pub fn did_nothing(&self) -> bool {
        match self {
            CphError::CircuitOpen | CphError::Token(_) => true,
            CphError::RetriesExhausted { last, .. } => last.did_nothing(),
            _ => self.was_not_processed(),
        }
    }

    /// A failure that may pass, also after the last retry (5xx, a timeout, CPS.0003, 429,
    /// the breaker open, no IAM token): worth asking again rather than concluding from.
    pub fn may_pass(&self) -> bool {
        match self {
            CphError::RetriesExhausted { last, .. } => last.may_pass(),
            _ => self.is_transient() || self.did_nothing(),
        }
    }

    /// CPS.0006/0007/0008 (7.2): the account, not the request or the phone, is the problem
    /// (arrears, frozen, unverified). Never retried; a caller acting on many phones should
    /// pause them all until a person has fixed the account.
    pub fn is_account_level(&self) -> bool {
        match self {
            CphError::RetriesExhausted { last, .. } => last.is_account_level(),
            _ => self
                .code()
                .is_some_and(|code| ACCOUNT_CODES.contains(&code)),
        }
    }

    /// Sent, but whether it was done is not known (a POST timed out or answered 5xx):
    /// reconcile (4.4.2 by request id, or the phone's status in 4.3.2), never resend blindly.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(
            self,
            CphError::OutcomeUnknown(_) | CphError::AnswerLost { .. }
        )
    }

    /// The chapter 7.2 code of an error answer (`CPS.0003`, `APIGW.0101`, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            CphError::Api { code, .. } | CphError::AnswerLost { code, .. } => Some(code),
            CphError::RetriesExhausted { last, .. } => last.code(),
            _ => None,
        }
    }

    /// Counts against the circuit breaker: the control plane itself looks unwell. A 501 says
    /// one function is missing, not that the service is down: it never opens the breaker,
    /// which would stop the recoveries too.
    pub fn is_control_plane_failure(&self) -> bool {
        match self {
            CphError::Api { status: 501, .. } => false,
            CphError::Api { status, .. } => *status >= 500 || self.code() == Some(SYSTEM_ERROR),
            CphError::Unreachable(_)
            | CphError::OutcomeUnknown(_)
            | CphError::AnswerLost { .. }
            | CphError::BadResponse(_) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> CphError {
        CphError::Api {
            status,
            code: code.into(),
            message: String::new(),
            request_id: None,
            retry_after: None,
        }
    }

    /// 7.2: CPS.0003 is a 400 whose handling is "Try again later".
    #[test]
    fn cps_0003_of_7_2_is_transient_and_not_processed() {
        let error = api(400, "CPS.0003");
        assert!(error.is_transient() && error.was_not_processed());
        assert!(!error.is_account_level());
        for other in ["CPS.0001", "CPS.0004", "CPS.0005", "CPS.0006"] {
            assert!(!api(400, other).is_transient(), "{other}");
        }
    }

    /// 7.1.2: 500 and 503 are both "an internal service error": a POST answered either may
    /// have been done, so neither is resent; 501 is no passing failure at all.
    #[test]
    fn a_503_is_not_taken_for_a_refusal_and_a_501_is_not_transient_7_1_2() {
        for status in [500, 503] {
            assert!(!api(status, "").was_not_processed(), "{status}");
            assert!(api(status, "").is_transient(), "{status}: a GET may be repeated");
        }
        assert!(api(429, "").was_not_processed());
        let missing = api(501, "");
        assert!(!missing.is_transient() && !missing.is_control_plane_failure());
    }

    /// 7.2: CPS.0006 (arrears), CPS.0007 (frozen), CPS.0008 (unverified) are the account's.
    #[test]
    fn cps_0006_to_0008_of_7_2_are_account_level_and_not_retried() {
        for code in ACCOUNT_CODES {
            let error = api(400, code);
            assert!(error.is_account_level(), "{code}");
            assert!(
                !error.is_transient() && !error.was_not_processed(),
                "{code}"
            );
        }
        for code in ["CPS.0001", "CPS.0003", "CPS.0005"] {
            assert!(!api(400, code).is_account_level(), "{code}");
        }
    }
}
