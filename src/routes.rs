//! Every route cphub serves, as one table per group: the operator API (`api::endpoints`),
//! the callbacks (`receiver::endpoints`) and the service routes here. actix-web cannot list
//! what was registered, so registration is built from these tables and nothing else, and the
//! tests compare them with the OpenAPI document (`crate::openapi`) in both directions.
//! Registering a route any other way (a `.route(...)` on an App or scope) fails a test too.

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, HttpRequest, Responder, Route, web};

use crate::config::Settings;
use crate::http::{error::method_not_allowed, health, json};
use crate::metrics;

/// One route: method, path relative to its group's prefix (actix and OpenAPI write path
/// parameters the same way, `{phone_id}`), and the handler.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    route: Route,
    body_limit: Option<usize>,
}

impl Endpoint {
    pub fn new<F, Args>(method: Method, path: &'static str, handler: F) -> Endpoint
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static,
    {
        Endpoint {
            route: web::method(method.clone()).to(handler),
            method,
            path,
            body_limit: None,
        }
    }

    /// This JSON body limit for the route's path instead of its scope's (the callbacks: each
    /// has its own).
    pub fn with_body_limit(mut self, limit: usize) -> Endpoint {
        self.body_limit = Some(limit);
        self
    }
}

/// Registers `endpoints` in `cfg` (an App's or a scope's configuration): one resource per
/// path holding all its methods, so a method the path lacks is answered `405
/// CPHUB.METHOD_NOT_ALLOWED` with the `Allow` header RFC 9110 asks for, not a 404 that
/// would tell a client the path does not exist.
pub fn register(cfg: &mut web::ServiceConfig, endpoints: Vec<Endpoint>) {
    for (path, endpoints) in by_path(endpoints) {
        let mut methods: Vec<_> = endpoints.iter().map(|e| e.method.as_str()).collect();
        methods.sort_unstable();
        let allow = methods.join(", ");
        let mut resource = web::resource(path);
        // Paths that set a limit have a single route (the callbacks).
        if let Some(limit) = endpoints.iter().find_map(|e| e.body_limit) {
            resource = resource.app_data(json::config(limit));
        }
        for endpoint in endpoints {
            resource = resource.route(endpoint.route);
        }
        cfg.service(resource.default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move { method_not_allowed(&req, &allow) }
        })));
    }
}

/// `endpoints` grouped by path, in the order the paths first appear.
fn by_path(endpoints: Vec<Endpoint>) -> Vec<(&'static str, Vec<Endpoint>)> {
    let mut groups: Vec<(&'static str, Vec<Endpoint>)> = Vec::new();
    for endpoint in endpoints {
        match groups.iter_mut().find(|(path, _)| *path == endpoint.path) {
            Some((_, group)) => group.push(endpoint),
            None => groups.push((endpoint.path, vec![endpoint])),
        }
    }
    groups
}

/// `/healthz` and `/readyz`, at the root of the main listener.
pub fn health() -> Vec<Endpoint> {
    vec![
        Endpoint::new(Method::GET, "/healthz", health::healthz),
        Endpoint::new(Method::GET, "/readyz", health::readyz),
    ]
}

/// `/metrics`: on the main listener, or on its own (`metrics.listen`).
pub fn metrics() -> Endpoint {
    Endpoint::new(Method::GET, "/metrics", metrics::serve_metrics)
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Health and metrics: no credentials.
    Service,
    /// The phones' callbacks under `callbacks.base_path`.
    Callback,
    /// The operator API under `/api/v1`: bearer token.
    Operator,
}

/// One line of [`table`]: a route as a client addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub group: Group,
    pub method: Method,
    /// The whole path pattern, e.g. `/api/v1/phones/{phone_id}` or `/cph/events`.
    pub path: String,
}

/// Every route the application serves with `settings` (`/metrics` included wherever it
/// listens), read from the same tables the registration uses.
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
    ];
    groups
        .into_iter()
        .flat_map(|(group, prefix, endpoints)| {
            endpoints.into_iter().map(move |e| Entry {
                group,
                method: e.method,
                path: format!("{prefix}{}", e.path),
            })
        })
        .collect()
}
