//! HTTP plumbing shared by every route: error bodies with stable codes, request ids, JSON
//! body limits, health checks, route registration, the served OpenAPI document, and the
//! signals that stop a server.

pub mod api_document;
pub mod error;
pub mod health;
pub mod json;
pub mod request_id;
pub mod route;
pub mod source;
pub mod stop;

pub use error::{ErrorCode, error_response};
