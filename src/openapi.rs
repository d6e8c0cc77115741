//! The OpenAPI document of every route, served at `GET /api/v1/openapi.json`. Each group
//! describes its own routes (`api::OperatorDoc`, `receiver::CallbackDoc`, [`ServiceDoc`]);
//! this module puts them under their prefixes. The callbacks go under the *configured*
//! `callbacks.base_path`, which may be a secret: one reason the document is an operator route.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{OpenApi as Document, PathItem, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::config::BasePath;
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

/// What the bearer middleware adds to every operator route, so no handler repeats it.
fn require_bearer(operation: &mut utoipa::openapi::path::Operation) {
    let requirement = SecurityRequirement::new(BEARER, Vec::<String>::new());
    operation.security = Some(vec![requirement]);
    let unauthorized = ResponseBuilder::new()
        .description(
            "`CPHUB.UNAUTHORIZED`: no bearer token, or not one of `api.tokens` \
             (with `WWW-Authenticate: Bearer`)",
        )
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
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
            .description(Some("A token from `api.tokens`"))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    }
}
