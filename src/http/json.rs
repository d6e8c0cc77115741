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

/// A JSON body that may be left out: no body at all, or `null`, is `None`; any other must parse, under
/// the route's limit and with the same error bodies as `web::Json`. (actix's
/// `Option<Json<T>>` turns every failure into `None`: a misspelt field, a wrong type or an
/// oversized body was taken as no body and the call succeeded.)
pub struct OptionalJson<T>(pub Option<T>);

impl<T: serde::de::DeserializeOwned + 'static> actix_web::FromRequest for OptionalJson<T> {
    type Error = actix_web::Error;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(
        req: &actix_web::HttpRequest,
        payload: &mut actix_web::dev::Payload,
    ) -> Self::Future {
        use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
        let headers = req.headers();
        let length = headers.get(CONTENT_LENGTH);
        let empty = match length {
            Some(length) => length.as_bytes() == b"0",
            None => !headers.contains_key(TRANSFER_ENCODING),
        };
        if empty {
            return Box::pin(std::future::ready(Ok(OptionalJson(None))));
        }
        // `null` is no body too, as the document's optional (nullable) body allows.
        let body = actix_web::web::Json::<Option<T>>::from_request(req, payload);
        Box::pin(async move { Ok(OptionalJson(body.await?.into_inner())) })
    }
}

/// Query strings that do not parse (e.g. `limit=ten`) get an error body too.
pub fn query_config() -> QueryConfig {
    QueryConfig::default().error_handler(|err, _req| {
        let response = error_response(ErrorCode::InvalidField, &format!("query string: {err}"));
        InternalError::from_response(err, response).into()
    })
}
