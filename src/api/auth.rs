//! Bearer-token check for the operator API. Tokens are compared in constant time, and every
//! configured token is compared, so the answer's timing tells nothing about any of them.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use actix_web::middleware::Next;
use actix_web::{Error, web};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::http::{ErrorCode, error_response};

/// The accepted tokens (`api.tokens`).
#[derive(Clone)]
pub struct BearerTokens(Vec<SecretString>);

impl BearerTokens {
    pub fn new(tokens: Vec<SecretString>) -> Self {
        BearerTokens(tokens)
    }

    fn accepts(&self, presented: &[u8]) -> bool {
        self.0
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.expose_secret().as_bytes().ct_eq(presented)
            })
            .into()
    }
}

fn presented_token(header: Option<&HeaderValue>) -> Option<&[u8]> {
    let value = header?.as_bytes();
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| &value[7..])
}

pub(super) async fn require_bearer_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let accepted = match (
        req.app_data::<web::Data<BearerTokens>>(),
        presented_token(req.headers().get(AUTHORIZATION)),
    ) {
        (Some(tokens), Some(token)) => tokens.accepts(token),
        _ => false,
    };
    if accepted {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let mut response = error_response(ErrorCode::Unauthorized, "missing or invalid bearer token");
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Ok(req.into_response(response).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_only_configured_tokens() {
        let tokens = BearerTokens::new(vec!["alpha".into(), "bravo".into()]);
        assert!(tokens.accepts(b"alpha"));
        assert!(tokens.accepts(b"bravo"));
        assert!(!tokens.accepts(b"alph"));
        assert!(!tokens.accepts(b"alphaa"));
        assert!(!tokens.accepts(b""));
        assert!(!BearerTokens::new(vec![]).accepts(b""));
    }

    #[test]
    fn reads_the_bearer_scheme_case_insensitively() {
        let header = HeaderValue::from_static("bearer abc");
        assert_eq!(presented_token(Some(&header)), Some(&b"abc"[..]));
        let basic = HeaderValue::from_static("Basic abc");
        assert_eq!(presented_token(Some(&basic)), None);
        assert_eq!(presented_token(None), None);
    }
}
