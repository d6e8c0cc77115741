//! `GET /api/v1/openapi.json`: the OpenAPI document of every route, built for this
//! service's `callbacks.base_path`.

use actix_web::{HttpResponse, web};

use crate::config::BasePath;

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operator",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)),
)]
pub(super) async fn serve(base_path: web::Data<BasePath>) -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document(&base_path))
}
