//! The probes as Kubernetes names them. `/livez`: the process is up and serving (it never
//! touches the database, so a database outage does not get every replica restarted).
//! `/readyz`: and its database answers with every migration applied. `/healthz` is kept as
//! an alias of `/livez`, which is what it always answered.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::ErrorCode;
use super::error::{ErrorBody, server_error_response};
use crate::store::Store;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` from `/livez` and `/healthz`, `ready` from `/readyz`.
    status: &'static str,
}

#[utoipa::path(
    get,
    path = "/livez",
    tag = "service",
    responses((status = 200, description = "The process runs; the database is not asked", body = Health)),
)]
pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "service",
    description = "An alias of `/livez`, kept for the load balancers configured before it.",
    responses((status = 200, description = "The process runs; the database is not asked", body = Health)),
)]
pub async fn healthz() -> HttpResponse {
    livez().await
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "service",
    responses(
        (status = 200, description = "The database answers and every migration is applied", body = Health),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub async fn readyz(store: web::Data<dyn Store>) -> HttpResponse {
    match store.ping().await {
        Ok(()) => HttpResponse::Ok().json(Health { status: "ready" }),
        Err(error) => server_error_response(
            ErrorCode::Unavailable,
            "database unreachable or not migrated",
            &error,
        ),
    }
}
