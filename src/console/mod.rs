//! The web console under `/console` (docs/console.md): server-rendered pages of the fleet,
//! its sessions, usage, queue, rollouts and webhooks, for an operator signed in with one of
//! `api.tokens`. It reads through the same store queries and acts through the same services
//! as the operator API (`crate::api`), so a page and the API cannot tell different stories.
//!
//! Every answer carries a strict Content-Security-Policy: the pages hold no inline script or
//! style, only the embedded stylesheet and the vendored htmx (`assets/`), which polls the live
//! parts. Nothing is fetched from anywhere but this server.

mod actions;
mod assets;
mod auth;
mod book;
mod fleet;
mod history;
mod layout;
mod lists;
mod phone;
mod sessions;
mod usage;

use actix_web::http::Method;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, Handler, HttpResponse, Responder, ResponseError, web};

use crate::api::ApiError;
use crate::config::Scope;
use crate::domain::ParseError;
use crate::http::ErrorCode;
use crate::http::route::{self, Endpoint};
use crate::store::StoreError;

/// Where the console lives.
pub const PREFIX: &str = "/console";

/// No script or style but this server's files, no frames, no forms elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope(PREFIX)
            .app_data(layout::path_config())
            .wrap(from_fn(security_headers))
            .configure(|cfg| {
                let guarded = endpoints().into_iter().map(auth::guarded).collect();
                route::register(cfg, guarded)
            }),
    );
}

/// Every console route, relative to [`PREFIX`], with the read scope its page shows or the
/// scope its action needs (the API route's of the same thing). Routes without a scope need
/// only a signed-in operator; sign-in and the assets need nothing.
pub fn endpoints() -> Vec<Endpoint> {
    use Scope::*;
    let mut endpoints = vec![
        Endpoint::new(Method::GET, "", fleet::home),
        Endpoint::new(Method::GET, "/login", auth::login_form),
        Endpoint::new(Method::POST, "/login", auth::login).traffic(),
        Endpoint::new(Method::POST, "/logout", auth::logout).traffic(),
        Endpoint::new(Method::GET, "/assets/{hash}/{name}", assets::serve),
        Endpoint::new(Method::GET, "/fleet", fleet::page).scope(PhonesRead),
        Endpoint::new(Method::GET, "/fleet/live", fleet::live).scope(PhonesRead),
        Endpoint::new(Method::GET, "/phones/{phone_id}", phone::page).scope(PhonesRead),
        Endpoint::new(Method::GET, "/sessions", sessions::page).scope(SessionsRead),
        Endpoint::new(Method::GET, "/sessions/{session_id}", sessions::show).scope(SessionsRead),
        Endpoint::new(Method::GET, "/usage", usage::page).scope(UsageRead),
        Endpoint::new(Method::GET, "/usage.csv", usage::csv).scope(UsageRead),
        Endpoint::new(Method::GET, "/queue", lists::queue).scope(SessionsRead),
        Endpoint::new(Method::GET, "/rollouts", lists::rollouts).scope(PhonesRead),
        Endpoint::new(Method::GET, "/rollouts/{rollout_id}", lists::rollout).scope(PhonesRead),
        Endpoint::new(Method::GET, "/webhooks", lists::webhooks).scope(WebhooksRead),
    ];
    let phone = "/phones/{phone_id}/{action}";
    endpoints.extend(action(phone, PhonesOperate, actions::confirm_phone, actions::phone));
    let rollout = "/rollouts/{rollout_id}/{action}";
    endpoints.extend(action(rollout, RolloutsWrite, actions::confirm_rollout, actions::rollout));
    endpoints
}

/// An action's two routes on one path: the GET page that asks to confirm and the POST that
/// acts, both needing the action's scope (actions.rs).
fn action<C, CArgs, A, AArgs>(path: &'static str, scope: Scope, confirm: C, act: A) -> [Endpoint; 2]
where
    C: Handler<CArgs>,
    CArgs: FromRequest + 'static,
    C::Output: Responder + 'static,
    A: Handler<AArgs>,
    AArgs: FromRequest + 'static,
    A::Output: Responder + 'static,
{
    [
        Endpoint::new(Method::GET, path, confirm).scope(scope),
        Endpoint::new(Method::POST, path, act).scope(scope),
    ]
}

/// The headers of every console answer, error pages and assets included.
async fn security_headers(
    req: actix_web::dev::ServiceRequest,
    next: Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    let set = [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in set {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Ok(res)
}

/// Why a console request failed; each renders as a page with cphub's stable error code.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("your token lacks the scope {0} (or admin)")]
    Forbidden(Scope),
    #[error("the form's CSRF token is missing or wrong: reload the page and try again")]
    Csrf,
    #[error("not an operator token of this cphub (api.tokens)")]
    BadToken,
    #[error("no such action: {0}")]
    UnknownAction(String),
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The app was built without what the console reads: a bug of the wiring.
    #[error("the console is wired without {0}")]
    Unwired(&'static str),
}

impl From<StoreError> for ConsoleError {
    fn from(error: StoreError) -> Self {
        ConsoleError::Api(ApiError::Store(error))
    }
}

impl ConsoleError {
    fn code(&self) -> ErrorCode {
        match self {
            ConsoleError::Invalid(_) | ConsoleError::UnknownAction(_) => ErrorCode::InvalidField,
            ConsoleError::NotFound(_) => ErrorCode::NotFound,
            ConsoleError::Forbidden(_) | ConsoleError::Csrf => ErrorCode::Forbidden,
            ConsoleError::BadToken => ErrorCode::Unauthorized,
            ConsoleError::Api(e) => e.code(),
            ConsoleError::Unwired(_) => ErrorCode::Internal,
        }
    }

    /// What the page says: a server error's details go to the log, not to the browser.
    fn message(&self) -> String {
        match self.code().status().is_server_error() {
            true => {
                tracing::error!(error = %crate::telemetry::ErrorChain(self), "console page failed");
                "the page could not be made; the log has why".into()
            }
            false => self.to_string(),
        }
    }
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.code().status()
    }

    fn error_response(&self) -> HttpResponse {
        layout::error_page(self.code(), &self.message())
    }
}
