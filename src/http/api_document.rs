//! `GET /api/v1/openapi.json`: the OpenAPI document of every route. It is built once at
//! start-up (`crate::openapi::document`, for this service's `callbacks.base_path`) and served
//! from memory: the routes cannot change while the service runs.

use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, web};

/// The serialized OpenAPI document, shared by every worker.
#[derive(Debug, Clone)]
pub struct ApiDocument(web::Bytes);

impl ApiDocument {
    pub fn new(document: &utoipa::openapi::OpenApi) -> ApiDocument {
        let json = serde_json::to_vec(document).expect("an OpenAPI document serializes");
        ApiDocument(web::Bytes::from(json))
    }
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operator",
    responses((status = 200, description = "This document (OpenAPI 3.1)", content_type = "application/json", body = Object)),
)]
pub async fn serve(document: web::Data<ApiDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(document.0.clone())
}
