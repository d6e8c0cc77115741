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

impl CphError {
    /// Worth another try (after a backoff) if the request is safe to repeat.
    pub fn is_transient(&self) -> bool {
        match self {
            CphError::Api { status, .. } => *status == 429 || *status >= 500,
            CphError::Unreachable(_) => true,
            _ => false,
        }
    }

    /// Counts against the circuit breaker: the control plane itself looks unwell.
    pub fn is_control_plane_failure(&self) -> bool {
        match self {
            CphError::Api { status, .. } => *status >= 500,
            CphError::Unreachable(_) | CphError::OutcomeUnknown(_) | CphError::BadResponse(_) => {
                true
            }
            _ => false,
        }
    }
}
