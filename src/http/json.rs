//! JSON bodies: a size limit per route, no Content-Type requirement (the phones' engine is a
//! black box and cphub should not depend on its headers), and every failure mapped to an
//! error body with a stable code instead of actix's plain-text default.

use actix_web::error::{InternalError, JsonPayloadError};
use actix_web::web::{JsonConfig, QueryConfig};

use super::{ErrorCode, error_response};

pub fn config(limit: usize) -> JsonConfig {
    JsonConfig::default()
        .limit(limit)
        .content_type_required(false)
        .content_type(|_| true)
        .error_handler(|err, _req| {
            let (code, message) = classify(&err);
            let response = error_response(code, &message);
            InternalError::from_response(err, response).into()
        })
}

fn classify(err: &JsonPayloadError) -> (ErrorCode, String) {
    match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => (
            ErrorCode::PayloadTooLarge,
            format!("request body larger than {limit} bytes"),
        ),
        JsonPayloadError::Deserialize(e) if e.is_data() => (ErrorCode::InvalidField, e.to_string()),
        JsonPayloadError::Deserialize(e) => (ErrorCode::MalformedJson, e.to_string()),
        other => (ErrorCode::MalformedJson, other.to_string()),
    }
}

/// Query strings that do not parse (e.g. `limit=ten`) get an error body too.
pub fn query_config() -> QueryConfig {
    QueryConfig::default().error_handler(|err, _req| {
        let response = error_response(ErrorCode::InvalidField, &format!("query string: {err}"));
        InternalError::from_response(err, response).into()
    })
}
