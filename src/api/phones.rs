//! Phones and their recoveries:
//! `GET /api/v1/phones`, `GET /api/v1/phones/{phone_id}`,
//! `POST /api/v1/phones/{phone_id}/restart|reset`, `GET /api/v1/recoveries`.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, IntoResponses, ToSchema};

use super::ApiError;
use crate::clock::Clock;
use crate::config::FleetSettings;
use crate::domain::{AppId, PhoneId};
use crate::http::error::ErrorBody;
use crate::store::{Phone, PhoneApp, Recovery, Store};
use crate::watchdog::{Action, Watchdog};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct Page {
    /// The `next_cursor` of the previous page: phones after it.
    #[serde(default)]
    #[param(value_type = Option<PhoneId>)]
    cursor: Option<String>,
    /// Deprecated spelling of `cursor`, still accepted.
    #[serde(default)]
    #[param(value_type = Option<PhoneId>)]
    after: Option<String>,
    /// Only phones with this app deployed (as phone sync last saw it, chapter 5.1.2).
    #[serde(default)]
    #[param(value_type = Option<AppId>)]
    app_id: Option<String>,
    /// 1 to 1000.
    #[serde(default = "default_limit")]
    #[param(default = 100)]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

#[derive(Serialize, ToSchema)]
pub(super) struct PhonePage {
    phones: Vec<Phone>,
    /// Pass as `cursor` for the next page; null on the last one.
    next_cursor: Option<String>,
    /// Deprecated: the same as `next_cursor`, for clients of the older spelling.
    next: Option<String>,
}

#[utoipa::path(
    get,
    path = "/phones",
    tag = "operator",
    params(Page),
    responses(
        (status = 200, description = "Phones in id order", body = PhonePage),
        (status = 400, description = "`CPHUB.INVALID_FIELD`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    query: web::Query<Page>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    fleet: web::Data<FleetSettings>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.clamp(1, 1000);
    // A position is a phone id; parsed like one, it cannot carry what a database refuses.
    let position = match (&query.cursor, &query.after) {
        (Some(cursor), _) => Some(PhoneId::parse("cursor", cursor.clone())?),
        (None, Some(after)) => Some(PhoneId::parse("after", after.clone())?),
        (None, None) => None,
    };
    let app = query
        .app_id
        .clone()
        .map(|a| AppId::parse("app_id", a))
        .transpose()?;
    let fresh_since = clock.now().minus(fleet.stale_after());
    let phones = store
        .phones(fresh_since, position.as_ref(), app.as_ref(), limit)
        .await?;
    let next_cursor = super::next_position(&phones, limit, |p| p.phone_id.clone());
    Ok(HttpResponse::Ok().json(PhonePage {
        phones,
        next: next_cursor.clone(),
        next_cursor,
    }))
}

#[derive(Serialize, ToSchema)]
pub(super) struct PhoneView {
    #[serde(flatten)]
    phone: Phone,
    last_recovery: Option<Recovery>,
    /// The applications deployed on the phone, as phone sync last saw them (5.1.2).
    apps: Vec<PhoneApp>,
}

#[utoipa::path(
    get,
    path = "/phones/{phone_id}",
    tag = "operator",
    params(("phone_id" = PhoneId, Path, description = "The phone's id")),
    responses(
        (status = 200, description = "The phone and its last recovery", body = PhoneView),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: not a valid id", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn show(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    fleet: web::Data<FleetSettings>,
) -> Result<HttpResponse, ApiError> {
    let id = PhoneId::parse("phone_id", path.into_inner())?;
    let fresh_since = clock.now().minus(fleet.stale_after());
    let phone = store
        .phone(&id, fresh_since)
        .await?
        .ok_or(ApiError::NotFound("phone"))?;
    let last_recovery = store.recoveries(Some(&id), None, 1).await?.pop();
    let apps = store.phone_apps(&id).await?;
    Ok(HttpResponse::Ok().json(PhoneView {
        phone,
        last_recovery,
        apps,
    }))
}

#[utoipa::path(
    post,
    path = "/phones/{phone_id}/restart",
    tag = "operator",
    params(("phone_id" = PhoneId, Path, description = "The phone's id")),
    responses(
        (status = 202, description = "Restart job started; the record as logged", body = Recovery),
        ManualRefusal,
    ),
)]
pub(super) async fn restart(
    path: web::Path<String>,
    watchdog: Option<web::Data<Arc<Watchdog>>>,
) -> Result<HttpResponse, ApiError> {
    manual(path, watchdog, Action::Restart).await
}

#[utoipa::path(
    post,
    path = "/phones/{phone_id}/reset",
    tag = "operator",
    params(("phone_id" = PhoneId, Path, description = "The phone's id")),
    responses(
        (status = 202, description = "Reset job started; the record as logged", body = Recovery),
        ManualRefusal,
    ),
)]
pub(super) async fn reset(
    path: web::Path<String>,
    watchdog: Option<web::Data<Arc<Watchdog>>>,
) -> Result<HttpResponse, ApiError> {
    manual(path, watchdog, Action::Reset).await
}

/// Why a manual restart or reset is refused; only describes the answers for the document.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum ManualRefusal {
    /// `CPHUB.INVALID_FIELD`: not a valid id
    #[response(status = 400)]
    InvalidId(ErrorBody<'static>),
    /// `CPHUB.RECOVERY_REFUSED`: the watchdog is off on this replica, or the phone is
    /// excluded, already recovering, updated by a rollout, or at a cap
    #[response(status = 409)]
    Refused(ErrorBody<'static>),
    /// `CPHUB.CPH_NOT_CONFIGURED` or `CPHUB.UNAVAILABLE`, with `Retry-After`
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// 202 with the recovery record: the job runs on; `GET /api/v1/recoveries` shows its end.
async fn manual(
    path: web::Path<String>,
    watchdog: Option<web::Data<Arc<Watchdog>>>,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    let id = PhoneId::parse("phone_id", path.into_inner())?;
    let watchdog = watchdog.ok_or(ApiError::CphNotConfigured)?;
    watchdog.check_followed()?;
    let recovery = watchdog.manual(&id, action).await?;
    Ok(HttpResponse::Accepted().json(recovery))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct RecoveryQuery {
    /// Only this phone's recoveries.
    #[serde(default)]
    #[param(value_type = Option<PhoneId>)]
    phone_id: Option<String>,
    /// 1 to 1000.
    #[serde(default = "default_limit")]
    #[param(default = 100)]
    limit: i64,
}

#[derive(Serialize, ToSchema)]
pub(super) struct RecoveryLog {
    /// Newest first.
    recoveries: Vec<Recovery>,
}

/// The recovery log, newest first.
#[utoipa::path(
    get,
    path = "/recoveries",
    tag = "operator",
    params(RecoveryQuery),
    responses(
        (status = 200, description = "The recovery log", body = RecoveryLog),
        (status = 400, description = "`CPHUB.INVALID_FIELD`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
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
        .recoveries(phone.as_ref(), None, query.limit.clamp(1, 1000))
        .await?;
    Ok(HttpResponse::Ok().json(RecoveryLog { recoveries: log }))
}
