//! Every route cphub serves, as one table per group: the operator API (`api::endpoints`),
//! the callbacks (`receiver::endpoints`) and the service routes here. actix-web cannot list
//! what was registered, so registration (`http::route::register`) is built from these tables
//! and nothing else, and the tests compare them with the OpenAPI document (`crate::openapi`)
//! in both directions. Registering a route any other way (a route or resource added to an
//! App or scope by hand) fails a test too.

use actix_web::http::Method;

use crate::config::{Scope, Settings};
use crate::http::health;
use crate::http::route::Endpoint;
use crate::metrics;

/// `/livez`, `/readyz` and `/healthz` (`/livez`'s alias), at the root of the main listener.
pub fn health() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::GET, "/livez", health::livez),
        Endpoint::new(Method::GET, "/healthz", health::healthz),
        Endpoint::new(Method::GET, "/readyz", health::readyz),
    ]
}

/// `/metrics`: on the main listener, or on its own (`metrics.listen`).
pub fn metrics() -> Endpoint {
    Endpoint::new(Method::GET, "/metrics", metrics::serve_metrics)
}

/// The console's routes: on the main listener, or on its own (`console.listen`); none when
/// `console.enabled` is off.
pub fn console(settings: &Settings) -> Vec<Endpoint> {
    match settings.console.enabled {
        true => crate::console::endpoints(),
        false => Vec::new(),
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Health and metrics: no credentials.
    Service,
    /// The phones' callbacks under `callbacks.base_path`.
    Callback,
    /// The operator API under `/api/v1`: bearer token with the route's scope.
    Operator,
    /// The web console under `/console`: HTML pages for a signed-in operator, the scope
    /// being the one the page shows or the action needs. Not in the OpenAPI document.
    Console,
}

/// One line of [`table`]: a route as a client addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub group: Group,
    pub method: Method,
    /// The whole path pattern, e.g. `/api/v1/phones/{phone_id}` or `/cph/events`.
    pub path: String,
    /// The scope a token needs (operator routes only).
    pub scope: Option<Scope>,
    /// Whether a call is written to the audit trail.
    pub audited: bool,
}

/// Every route the application serves with `settings` (`/metrics` and the console included
/// wherever they listen), read from the same tables the registration uses.
pub fn table(settings: &Settings) -> Vec<Entry> {
    let mut service = health();
    service.push(metrics());
    let groups = [
        (Group::Service, "", service),
        (
            Group::Callback,
            settings.callbacks.base_path.as_str(),
            crate::receiver::endpoints(&settings.callbacks),
        ),
        (Group::Operator, crate::api::PREFIX, crate::api::endpoints()),
        (Group::Console, crate::console::PREFIX, console(settings)),
    ];
    groups
        .into_iter()
        .flat_map(|(group, prefix, endpoints)| {
            endpoints.into_iter().map(move |e| Entry {
                group,
                method: e.method,
                path: format!("{prefix}{}", e.path),
                scope: e.scope,
                audited: e.audited,
            })
        })
        .collect()
}
