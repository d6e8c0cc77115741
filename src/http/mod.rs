//! HTTP plumbing shared by every route: error bodies with stable codes, request ids, JSON
//! body limits, health checks.

pub mod error;
pub mod health;
pub mod json;
pub mod request_id;

pub use error::{ErrorCode, error_response};
