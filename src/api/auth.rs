//! Who calls the operator API, and whether the route allows it.
//!
//! The scope's middleware ([`require_bearer_token`]) identifies the caller: the presented
//! token's SHA-256 is compared with every configured digest in constant time, all of them,
//! so the answer's timing tells nothing about any. Each route then checks its own scope,
//! declared once in the route table ([`super::endpoints`]), in [`guard`]: rate limit, scope,
//! the call itself, and its line in the audit trail.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use actix_web::middleware::{Next, from_fn};
use actix_web::{Error, HttpMessage, web};
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::auth_failures::AuthFailures;
use super::{audit, rate_limit};
use crate::config::{ApiToken, Scope, token_digest};
use crate::http::route::Endpoint;
use crate::http::{ErrorCode, error_response};

/// The accepted tokens (`api.tokens`), as digests.
#[derive(Clone)]
pub struct BearerTokens {
    tokens: Vec<Arc<ApiToken>>,
    /// Shared by every clone (every worker's copy of the app data).
    failures: Arc<AuthFailures>,
}

/// What a presented token turned out to be.
pub(crate) enum Presented<'a> {
    Known(&'a Arc<ApiToken>),
    Wrong,
    /// The client address spent its wrong tokens (`api.auth_failures_per_minute`): not
    /// looked at, for this long.
    Refused(Duration),
}

/// The caller of an operator request, put in the request's extensions once identified.
#[derive(Clone)]
pub(super) struct Caller(pub Arc<ApiToken>);

/// The name of the token the request was made with (the scope's middleware put it there):
/// a platform's own namespace for idempotency keys and queue entries.
pub(super) fn caller_name(req: &actix_web::HttpRequest) -> String {
    let caller = req.extensions().get::<Caller>().cloned();
    caller.map(|Caller(token)| token.name.clone()).unwrap_or_default()
}

impl BearerTokens {
    pub fn new(tokens: Vec<ApiToken>, failures_per_minute: u32) -> Self {
        BearerTokens {
            tokens: tokens.into_iter().map(Arc::new).collect(),
            failures: Arc::new(AuthFailures::new(failures_per_minute)),
        }
    }

    /// The token `client` presented, counting a wrong one against the address.
    pub(crate) fn identify_from(&self, client: IpAddr, presented: &[u8]) -> Presented<'_> {
        if let Some(left) = self.failures.refused(client) {
            return Presented::Refused(left);
        }
        match self.identify(presented) {
            Some(token) => Presented::Known(token),
            None => {
                self.failures.failed(client);
                Presented::Wrong
            }
        }
    }

    /// The token whose digest matches, comparing with every one whatever matched.
    pub(crate) fn identify(&self, presented: &[u8]) -> Option<&Arc<ApiToken>> {
        let digest = token_digest(presented);
        let mut index = 0u32;
        let mut found = subtle::Choice::from(0);
        for (i, token) in self.tokens.iter().enumerate() {
            let matches = token.sha256.ct_eq(&digest);
            index.conditional_assign(&(i as u32), matches);
            found |= matches;
        }
        bool::from(found).then(|| &self.tokens[index as usize])
    }
}

fn presented_token(header: Option<&HeaderValue>) -> Option<&[u8]> {
    let value = header?.as_bytes();
    let scheme = value.get(..7)?;
    scheme.eq_ignore_ascii_case(b"bearer ").then(|| &value[7..])
}

/// The scope's middleware: 401 unless the token is one of `api.tokens`; otherwise the
/// caller goes into the request (and its name into the log span).
pub(super) async fn require_bearer_token(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let caller = match (
        req.app_data::<web::Data<BearerTokens>>(),
        presented_token(req.headers().get(AUTHORIZATION)),
    ) {
        (Some(tokens), Some(token)) => match tokens.identify_from(client_ip(req.request()), token) {
            Presented::Known(token) => Some(Arc::clone(token)),
            Presented::Wrong => None,
            Presented::Refused(left) => {
                return Ok(req.into_response(too_many_failures(left)).map_into_right_body());
            }
        },
        _ => None,
    };
    let Some(caller) = caller else {
        return Ok(req.into_response(unauthorized()).map_into_right_body());
    };
    if let Some(span) = req.extensions().get::<tracing_actix_web::RootSpan>() {
        span.record("token_name", caller.name.as_str());
    }
    req.extensions_mut().insert(Caller(caller));
    Ok(next.call(req).await?.map_into_left_body())
}

/// The client's address: behind a trusted proxy (`server.trusted_proxies`) the one it
/// forwarded, as the request's log line has it; else the peer's.
pub(crate) fn client_ip(req: &actix_web::HttpRequest) -> IpAddr {
    let forwarded = req.extensions().get::<crate::http::source::ClientAddress>().map(|c| c.0);
    let peer = || req.peer_addr().map(|a| a.ip());
    (forwarded.or_else(peer)).unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED))
}

/// 429 for an address that spent its wrong tokens, with the seconds left (RFC 9110: whole,
/// rounded up).
pub(crate) fn too_many_failures(left: Duration) -> actix_web::HttpResponse {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    let message = "too many wrong tokens from this address; retry after the Retry-After seconds";
    let mut res = error_response(ErrorCode::RateLimited, message);
    res.headers_mut().insert(RETRY_AFTER, secs.max(1).into());
    res
}

fn unauthorized() -> actix_web::HttpResponse {
    let mut response = error_response(ErrorCode::Unauthorized, "missing or invalid bearer token");
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// `endpoint` behind its scope check (and rate limit and audit line): how every operator
/// route is registered.
pub(super) fn guarded(endpoint: Endpoint) -> Endpoint {
    let scope = endpoint
        .scope
        .expect("every operator route declares its scope");
    let audited = endpoint.audited;
    endpoint
        .wrap_route(|route| route.wrap(from_fn(move |req, next| guard(scope, audited, req, next))))
}

async fn guard(
    scope: Scope,
    audited: bool,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let caller = req.extensions().get::<Caller>().cloned();
    let Some(Caller(caller)) = caller else {
        return Ok(req.into_response(unauthorized()));
    };
    // Players' traffic (mints and the queue) is bounded by the fleet, not by this limit;
    // a token without the scope calling those routes is not players' traffic, and each of
    // its refusals writes an audit line: it is limited like any other call.
    let players = scope == Scope::SessionsMint && caller.allows(scope);
    if !players && let Some(refused) = rate_limit::check(&req, &caller.name)
    {
        return Ok(req.into_response(refused));
    }
    let pending = match audited {
        true => audit::Pending::start(&req, &caller.name, players).await,
        false => None,
    };
    let res = match caller.allows(scope) {
        true => next.call(req).await?,
        false => req.into_response(forbidden(scope)),
    };
    if let Some(pending) = pending {
        pending.record(&res).await;
    }
    Ok(res)
}

fn forbidden(scope: Scope) -> actix_web::HttpResponse {
    let message = format!("this token lacks the scope {scope} (or admin)");
    error_response(ErrorCode::Forbidden, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, secret: &str) -> ApiToken {
        ApiToken {
            name: name.into(),
            sha256: token_digest(secret.as_bytes()),
            scopes: vec![Scope::Admin],
            legacy: false,
        }
    }

    #[test]
    fn identifies_only_configured_tokens() {
        let tokens = BearerTokens::new(vec![token("a", "alpha"), token("b", "bravo")], 0);
        assert_eq!(tokens.identify(b"alpha").unwrap().name, "a");
        assert_eq!(tokens.identify(b"bravo").unwrap().name, "b");
        assert!(tokens.identify(b"alph").is_none());
        assert!(tokens.identify(b"alphaa").is_none());
        assert!(tokens.identify(b"").is_none());
        assert!(BearerTokens::new(vec![], 0).identify(b"").is_none());
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
