//! `/healthz`: the process is up. `/readyz`: and its database answers.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{ErrorCode, error::server_error_response};
use crate::store::Store;

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(store: web::Data<dyn Store>) -> HttpResponse {
    match store.ping().await {
        Ok(()) => HttpResponse::Ok().json(json!({ "status": "ready" })),
        Err(error) => server_error_response(ErrorCode::Unavailable, "database unreachable", &error),
    }
}
