//! Route plumbing: an [`Endpoint`] is one method + path + handler, and [`register`] turns a
//! list of them into actix resources. Each group of routes (the callbacks, the operator API,
//! the service routes) lists its endpoints once; `crate::routes` assembles the table from
//! those lists, so what is registered and what the OpenAPI document says cannot drift.

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, HttpRequest, Responder, Route, web};

use crate::config::Scope;
use crate::http::{error::method_not_allowed, json};

/// One route: method, path relative to its group's prefix (actix and OpenAPI write path
/// parameters the same way, `{phone_id}`), and the handler.
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    /// What a token needs to call it (operator routes; the others take no token).
    pub scope: Option<Scope>,
    /// Whether a call is written to the audit trail: every operator route that changes
    /// state, except those marked [`Endpoint::traffic`].
    pub audited: bool,
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
            audited: !matches!(method, Method::GET | Method::HEAD),
            method,
            path,
            scope: None,
            body_limit: None,
        }
    }

    /// The scope a token needs for this route.
    pub fn scope(mut self, scope: Scope) -> Endpoint {
        self.scope = Some(scope);
        self
    }

    /// Players' traffic (a mint), not an operator's action: kept out of the audit trail.
    pub fn traffic(mut self) -> Endpoint {
        self.audited = false;
        self
    }

    /// The route's handler wrapped by `wrap` (a per-route middleware).
    pub fn wrap_route(mut self, wrap: impl FnOnce(Route) -> Route) -> Endpoint {
        self.route = wrap(self.route);
        self
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
        // A path's limit is its resource's, for every method: the other routes of a path
        // with one (`/rollouts`'s GET) take no body.
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
