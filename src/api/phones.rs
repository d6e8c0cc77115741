//! Phones and their recoveries:
//! `GET /api/v1/phones`, `GET /api/v1/phones/{phone_id}`,
//! `POST /api/v1/phones/{phone_id}/restart|reset`, `GET /api/v1/recoveries`.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::clock::Clock;
use crate::config::FleetSettings;
use crate::domain::PhoneId;
use crate::store::{Phone, Recovery, Store};
use crate::watchdog::{Action, Watchdog};

#[derive(Deserialize)]
pub(super) struct Page {
    /// Phones after this id (the `next` of the previous page).
    #[serde(default)]
    after: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

#[derive(Serialize)]
struct PhonePage {
    phones: Vec<Phone>,
    /// Pass as `after` for the next page; null on the last one.
    next: Option<String>,
}

pub(super) async fn list(
    query: web::Query<Page>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    fleet: web::Data<FleetSettings>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.clamp(1, 1000);
    let after = query.after.clone().unwrap_or_default();
    let fresh_since = clock.now().minus(fleet.stale_after());
    let phones = store.phones(fresh_since, &after, limit).await?;
    let next = super::next_position(&phones, limit, |p| p.phone_id.clone());
    Ok(HttpResponse::Ok().json(PhonePage { phones, next }))
}

#[derive(Serialize)]
struct PhoneView {
    #[serde(flatten)]
    phone: Phone,
    last_recovery: Option<Recovery>,
}

pub(super) async fn show(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    fleet: web::Data<FleetSettings>,
) -> Result<HttpResponse, ApiError> {
    let id = PhoneId::parse("phone_id", path.into_inner())?;
    let fresh_since = clock.now().minus(fleet.stale_after());
    let phone = store
        .phone(id.as_str(), fresh_since)
        .await?
        .ok_or(ApiError::NotFound("phone"))?;
    let last_recovery = store.recoveries(Some(id.as_str()), None, 1).await?.pop();
    Ok(HttpResponse::Ok().json(PhoneView {
        phone,
        last_recovery,
    }))
}

pub(super) async fn restart(
    path: web::Path<String>,
    watchdog: Option<web::Data<Arc<Watchdog>>>,
) -> Result<HttpResponse, ApiError> {
    manual(path, watchdog, Action::Restart).await
}

pub(super) async fn reset(
    path: web::Path<String>,
    watchdog: Option<web::Data<Arc<Watchdog>>>,
) -> Result<HttpResponse, ApiError> {
    manual(path, watchdog, Action::Reset).await
}

/// 202 with the recovery record: the job runs on; `GET /api/v1/recoveries` shows its end.
async fn manual(
    path: web::Path<String>,
    watchdog: Option<web::Data<Arc<Watchdog>>>,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    let id = PhoneId::parse("phone_id", path.into_inner())?;
    let watchdog = watchdog.ok_or(ApiError::CphNotConfigured)?;
    let recovery = watchdog.manual(id.as_str(), action).await?;
    Ok(HttpResponse::Accepted().json(recovery))
}

#[derive(Deserialize)]
pub(super) struct RecoveryQuery {
    #[serde(default)]
    phone_id: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

pub(super) async fn recoveries(
    query: web::Query<RecoveryQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let phone = query
        .phone_id
        .clone()
        .map(|p| PhoneId::parse("phone_id", p))
        .transpose()?;
    let log = store
        .recoveries(
            phone.as_ref().map(PhoneId::as_str),
            None,
            query.limit.clamp(1, 1000),
        )
        .await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "recoveries": log })))
}
