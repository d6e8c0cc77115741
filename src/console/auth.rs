//! Signing in to the console, and who is signed in.
//!
//! The operator types one of `api.tokens`; it is checked exactly as the API checks a bearer
//! token (`BearerTokens::identify`: SHA-256, compared with every digest in constant time) and
//! then kept in the `cphub_console` cookie: `HttpOnly` (no script reads it), `SameSite=Strict`
//! (no other site's page sends it), `Path=/console`. Each request identifies the cookie's
//! token again, so a token removed from the configuration signs its holder out at once, and
//! any replica serves any request: there is no server-side session.
//!
//! Forms that act carry a CSRF token derived from the signed-in token (an HMAC keyed by its
//! SHA-256), so it too needs no state shared between replicas, and is compared in constant
//! time.

use std::fmt;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{Error, FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use maud::html;
use serde::Deserialize;
use sha2::Sha256;

use super::{ConsoleError, PREFIX, layout};
use crate::api::{BearerTokens, audit, rate_limit};
use crate::config::{ApiToken, ConsoleSettings, Scope};
use crate::http::route::Endpoint;

const COOKIE: &str = "cphub_console";

/// What the CSRF tokens are an HMAC of: fixed, so every replica derives the same one.
const CSRF_LABEL: &[u8] = b"cphub console csrf v1";

/// The signed-in operator of a console request.
#[derive(Clone)]
pub(super) struct Operator(Arc<ApiToken>);

impl Operator {
    pub(super) fn name(&self) -> &str {
        &self.0.name
    }

    pub(super) fn allows(&self, scope: Scope) -> bool {
        self.0.allows(scope)
    }

    /// The CSRF token of this operator's forms.
    pub(super) fn csrf(&self) -> String {
        hex::encode(self.mac().finalize().into_bytes())
    }

    /// Whether `presented` is this operator's CSRF token (constant time).
    pub(super) fn check_csrf(&self, presented: &str) -> Result<(), ConsoleError> {
        let bytes = hex::decode(presented).map_err(|_| ConsoleError::Csrf)?;
        self.mac()
            .verify_slice(&bytes)
            .map_err(|_| ConsoleError::Csrf)
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0.sha256).expect("any key length");
        mac.update(CSRF_LABEL);
        mac
    }
}

// The token itself is never held; its digest keys the CSRF tokens, so it stays out too.
impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Operator").field(&self.0.name).finish()
    }
}

impl FromRequest for Operator {
    type Error = ConsoleError;
    type Future = std::future::Ready<Result<Operator, ConsoleError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let operator = req.extensions().get::<Operator>().cloned();
        std::future::ready(operator.ok_or(ConsoleError::BadToken))
    }
}

/// The token in the request's cookie, if it is one of `api.tokens`.
fn signed_in(req: &HttpRequest) -> Option<Operator> {
    let tokens = req.app_data::<web::Data<BearerTokens>>()?;
    let cookies = req.headers().get_all(header::COOKIE);
    let value = cookies
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
    let token = URL_SAFE_NO_PAD.decode(value).ok()?;
    tokens.identify(&token).cloned().map(Operator)
}

/// `endpoint` behind the sign-in (unless it is sign-in itself or an asset), its scope, the
/// API's per-token rate limit on actions, and the audit trail's line for what changes state.
pub(super) fn guarded(endpoint: Endpoint) -> Endpoint {
    if is_public(endpoint.path) {
        return endpoint;
    }
    let (scope, audited) = (endpoint.scope, endpoint.audited);
    endpoint
        .wrap_route(|route| route.wrap(from_fn(move |req, next| guard(scope, audited, req, next))))
}

fn is_public(path: &str) -> bool {
    path == "/login" || path.starts_with("/assets/")
}

async fn guard(
    scope: Option<Scope>,
    audited: bool,
    req: ServiceRequest,
    next: Next<BoxBody>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let Some(operator) = signed_in(req.request()) else {
        let res = to_login(&req);
        return Ok(req.into_response(res));
    };
    if audited && let Some(refused) = rate_limit::check(&req, operator.name()) {
        return Ok(req.into_response(refused));
    }
    if let Some(span) = req.extensions().get::<tracing_actix_web::RootSpan>() {
        span.record("token_name", operator.name());
    }
    let pending = match audited {
        true => audit::Pending::start(&req, operator.name(), false).await,
        false => None,
    };
    let res = match scope.is_none_or(|s| operator.allows(s)) {
        true => {
            req.extensions_mut().insert(operator);
            next.call(req).await?
        }
        false => {
            let page = layout::error_page_for(&operator, ConsoleError::Forbidden(scope.unwrap()));
            req.into_response(page)
        }
    };
    if let Some(pending) = pending {
        pending.record(&res).await;
    }
    Ok(res)
}

/// A page asked for without signing in goes to the sign-in form, which comes back to it.
fn to_login(req: &ServiceRequest) -> HttpResponse {
    let back = req.uri().path_and_query().map_or(PREFIX, |p| p.as_str());
    let target = format!(
        "{PREFIX}/login?next={}",
        percent_encoding::utf8_percent_encode(back, percent_encoding::NON_ALPHANUMERIC)
    );
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, target))
        .finish()
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    next: Option<String>,
}

/// Where to go after signing in: only a console path, never another site.
fn next_page(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with(PREFIX) && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => format!("{PREFIX}/fleet"),
    }
}

pub(super) async fn login_form(query: web::Query<NextQuery>) -> HttpResponse {
    layout::html_ok(login_page(query.next.as_deref(), None))
}

fn login_page(next: Option<&str>, refused: Option<&str>) -> maud::Markup {
    let body = html! {
        h1 { "Sign in" }
        @if let Some(message) = refused {
            p.error role="alert" { (message) }
        }
        form method="post" action={ (PREFIX) "/login" } {
            input type="hidden" name="next" value=(next_page(next));
            label for="token" { "Operator token" }
            input #token type="password" name="token" autocomplete="current-password" required autofocus;
            button type="submit" { "Sign in" }
        }
        p.hint { "A token of the API's " code { "api.tokens" } "; its scopes decide what you see and may do." }
    };
    layout::bare("Sign in", body)
}

#[derive(Deserialize)]
pub(super) struct LoginForm {
    token: String,
    next: Option<String>,
}

// The token is a secret: never in a log line, nor in this form's Debug.
impl fmt::Debug for LoginForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginForm")
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Signs in: a wrong token is answered 401 with the form again and no cookie. Attempts are
/// rate limited per client address by the API's limiter, so guessing is as slow here as
/// against the API.
pub(super) async fn login(
    req: HttpRequest,
    form: web::Form<LoginForm>,
    tokens: web::Data<BearerTokens>,
    settings: web::Data<ConsoleSettings>,
) -> HttpResponse {
    if let Some(refused) = login_rate_limit(&req) {
        // The limiter's answer is the API's JSON: the console answers with its page, and
        // the same Retry-After.
        let code = crate::http::ErrorCode::RateLimited;
        let mut page = layout::error_page(code, "too many sign-in attempts; try again shortly");
        if let Some(retry) = refused.headers().get(header::RETRY_AFTER) {
            page.headers_mut().insert(header::RETRY_AFTER, retry.clone());
        }
        return page;
    }
    let form = form.into_inner();
    let client = crate::api::client_ip(&req);
    let presented = tokens.identify_from(client, form.token.as_bytes());
    if let crate::api::Presented::Refused(left) = presented {
        let code = crate::http::ErrorCode::RateLimited;
        let mut page = layout::error_page(code, "too many wrong tokens from this address");
        let retry = crate::api::too_many_failures(left);
        if let Some(retry) = retry.headers().get(header::RETRY_AFTER) {
            page.headers_mut().insert(header::RETRY_AFTER, retry.clone());
        }
        return page;
    }
    if matches!(presented, crate::api::Presented::Wrong) {
        let page = login_page(
            form.next.as_deref(),
            Some(&ConsoleError::BadToken.to_string()),
        );
        let mut res = layout::html(actix_web::http::StatusCode::UNAUTHORIZED, page);
        res.extensions_mut()
            .insert(crate::http::ErrorCode::Unauthorized);
        return res;
    }
    let value = URL_SAFE_NO_PAD.encode(form.token.as_bytes());
    let cookie = cookie(&req, &settings, &value, None);
    HttpResponse::SeeOther()
        .insert_header((header::SET_COOKIE, cookie))
        .insert_header((header::LOCATION, next_page(form.next.as_deref())))
        .finish()
}

/// Per client address: behind a trusted proxy (`server.trusted_proxies`) the address it
/// forwarded, as the request's log line has it. By the peer, every sign-in through the
/// proxy shared one bucket, and a stranger's wrong guesses locked the operators out.
fn login_rate_limit(req: &HttpRequest) -> Option<HttpResponse> {
    let limit = req.app_data::<web::Data<crate::api::RateLimit>>()?;
    let client = crate::api::client_ip(req);
    limit.check_key(&format!("console sign-in from {client}"))
}

/// The body of a form that acts: only its CSRF token.
#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

impl CsrfForm {
    /// The token a POST carried; none (an empty or unreadable body) is refused as a wrong
    /// one, with the CSRF page, not as a malformed form.
    pub(super) fn presented(form: &Option<web::Form<CsrfForm>>) -> &str {
        form.as_ref().map_or("", |f| f.csrf.as_str())
    }
}

/// Signs out: the cookie is cleared (a form with the CSRF token, so no other site can).
pub(super) async fn logout(
    req: HttpRequest,
    operator: Operator,
    form: Option<web::Form<CsrfForm>>,
    settings: web::Data<ConsoleSettings>,
) -> Result<HttpResponse, ConsoleError> {
    operator.check_csrf(CsrfForm::presented(&form))?;
    let cookie = cookie(&req, &settings, "", Some(0));
    Ok(HttpResponse::SeeOther()
        .insert_header((header::SET_COOKIE, cookie))
        .insert_header((header::LOCATION, format!("{PREFIX}/login")))
        .finish())
}

/// The cookie line: `Secure` when the request came over https or the settings say so.
fn cookie(
    req: &HttpRequest,
    settings: &ConsoleSettings,
    value: &str,
    max_age: Option<u32>,
) -> HeaderValue {
    let secure = settings.secure_cookie || req.connection_info().scheme() == "https";
    let mut line = format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path={PREFIX}");
    if let Some(age) = max_age {
        line.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        line.push_str("; Secure");
    }
    HeaderValue::from_str(&line).expect("base64url and fixed text are header-safe")
}

/// The CSRF field of a form that acts.
pub(super) fn csrf_field(operator: &Operator) -> maud::Markup {
    html! { input type="hidden" name="csrf" value=(operator.csrf()); }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::token_digest;

    fn operator(secret: &str) -> Operator {
        Operator(Arc::new(ApiToken {
            name: "ops".into(),
            sha256: token_digest(secret.as_bytes()),
            scopes: vec![Scope::Admin],
            legacy: false,
        }))
    }

    #[test]
    fn a_csrf_token_holds_only_for_the_token_it_was_made_for() {
        let (alice, bob) = (operator("alpha"), operator("bravo"));
        assert!(alice.check_csrf(&alice.csrf()).is_ok());
        assert_eq!(
            alice.csrf(),
            operator("alpha").csrf(),
            "stateless: same on any replica"
        );
        assert!(alice.check_csrf(&bob.csrf()).is_err());
        assert!(alice.check_csrf("").is_err());
        assert!(alice.check_csrf("zz").is_err());
        assert!(alice.check_csrf(&alice.csrf()[..62]).is_err());
    }

    #[test]
    fn sign_in_only_returns_to_console_pages() {
        assert_eq!(next_page(Some("/console/usage?x=1")), "/console/usage?x=1");
        for elsewhere in [
            None,
            Some("https://evil.example"),
            Some("//evil"),
            Some("/api/v1/x"),
        ] {
            assert_eq!(next_page(elsewhere), "/console/fleet", "{elsewhere:?}");
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let form = LoginForm {
            token: "s3cret".into(),
            next: None,
        };
        assert!(!format!("{form:?}").contains("s3cret"));
        assert!(!format!("{:?}", operator("s3cret")).contains("s3cret"));
    }
}
