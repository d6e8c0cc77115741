//! The OpenAPI document of every route, served at `GET /api/v1/openapi.json`. Each group
//! describes its own routes (`api::OperatorDoc`, `receiver::CallbackDoc`, [`ServiceDoc`]);
//! this module puts them under their prefixes. The callbacks go under the *configured*
//! `callbacks.base_path`, which may be a secret: one reason the document is an operator route.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::config::{BasePath, Scope};
use crate::domain::IdempotencyKey;
use crate::http::error::ErrorBody;

/// The security scheme every operator route requires.
const BEARER: &str = "bearer_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cphub",
        description = "Operator-side service for cloud mobile gaming on Huawei Cloud Phone: \
                       the phones' callbacks, the operator API, health and metrics. Errors \
                       answer `{request_id, error_code, error_msg}` with a stable `error_code`."
    ),
    // IdempotencyKey is named by a header parameter only, which utoipa does not collect.
    components(schemas(ErrorBody, IdempotencyKey)),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

/// `/livez`, `/healthz`, `/readyz`, `/metrics`.
#[derive(OpenApi)]
#[openapi(paths(
    crate::http::health::livez,
    crate::http::health::healthz,
    crate::http::health::readyz,
    crate::metrics::http::serve_metrics,
))]
struct ServiceDoc;

/// The whole document for a service whose callbacks live under `base_path`.
pub fn document(base_path: &BasePath) -> Document {
    let mut operator = crate::api::OperatorDoc::openapi();
    for item in operator.paths.paths.values_mut() {
        operations(item).for_each(require_bearer);
    }
    for endpoint in crate::api::endpoints() {
        let operation = (operator.paths.paths.get_mut(endpoint.path))
            .and_then(|item| operation(item, &endpoint.method));
        if let (Some(operation), Some(scope)) = (operation, endpoint.scope) {
            require_scope(operation, scope);
        }
    }
    ApiDoc::openapi()
        .merge_from(ServiceDoc::openapi())
        .nest(crate::api::PREFIX, operator)
        .nest(base_path.as_str(), crate::receiver::CallbackDoc::openapi())
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn operation<'a>(
    item: &'a mut PathItem,
    method: &actix_web::http::Method,
) -> Option<&'a mut utoipa::openapi::path::Operation> {
    use actix_web::http::Method;
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        _ => None,
    }
}

/// The route's scope from the route table (`api::endpoints`), the one place it is declared:
/// as the bearer requirement's scope, as `x-required-scope`, and the 403 (and 429) answers
/// the route's guard gives.
fn require_scope(operation: &mut utoipa::openapi::path::Operation, scope: Scope) {
    let requirement = SecurityRequirement::new(BEARER, [scope.as_str()]);
    operation.security = Some(vec![requirement]);
    let extensions = operation.extensions.get_or_insert_with(Default::default);
    extensions.insert("x-required-scope".into(), scope.as_str().into());
    let forbidden = format!("`CPHUB.FORBIDDEN`: the token lacks the scope `{scope}` (and `admin`)");
    operation
        .responses
        .responses
        .insert("403".into(), error_answer(&forbidden).into());
    if scope != Scope::SessionsMint {
        let limited = "`CPHUB.RATE_LIMITED`: this token's `api.rate_limit_per_second` is \
                       spent, with `Retry-After`";
        operation
            .responses
            .responses
            .insert("429".into(), error_answer(limited).into());
    }
}

fn error_answer(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

/// What the bearer middleware adds to every operator route, so no handler repeats it (the
/// route's scope comes after, from the table).
fn require_bearer(operation: &mut utoipa::openapi::path::Operation) {
    let requirement = SecurityRequirement::new(BEARER, Vec::<String>::new());
    operation.security = Some(vec![requirement]);
    let unauthorized = error_answer(
        "`CPHUB.UNAUTHORIZED`: no bearer token, or not one of `api.tokens` \
         (with `WWW-Authenticate: Bearer`)",
    );
    operation
        .responses
        .responses
        .insert("401".into(), unauthorized.into());
}

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut Document) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A token from `api.tokens`; each route needs the scope its security \
                 requirement names (also `x-required-scope`), or `admin`",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}
