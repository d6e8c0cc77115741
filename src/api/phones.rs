//! `GET /api/v1/phones/{phone_id}`: the phone as the book knows it.

use actix_web::{HttpResponse, web};

use super::ApiError;
use crate::domain::PhoneId;
use crate::store::Store;

pub(super) async fn show(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let id = PhoneId::parse("phone_id", path.into_inner())?;
    let phone = store
        .phone(id.as_str())
        .await?
        .ok_or(ApiError::NotFound("phone"))?;
    Ok(HttpResponse::Ok().json(phone))
}
