//! Applications: chapters 5.1.3 (the application list) and 5.1.2 (the phones an application
//! is deployed on), the two cphub's phone sync reads.
//!
//! 5.1.3: "sorted by creation time in descending order"; the simulated apps were created one
//! minute apart in the order they were deployed, so the last one comes first. 5.1.2 names
//! no order: its phones come in fleet order.

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::TimeDelta;
use serde_json::{Value, json};

use super::auth::ControlPlane;
use super::error::ControlPlaneError;
use super::faults::Operation;
use super::wire::{ok_json, page, page_of, query_pairs, query_param, timestamp};
use crate::http::request_id;
use crate::simulator::fleet::{SimApp, SimPhone};

/// 5.1.2 and 5.1.3: "A maximum of 100 records can be returned for each request"; `limit`
/// "Value range: 1–100", anything else is 400 CPS.0002 (7.2).
const MAX_PAGE: usize = 100;

/// `GET /v1/{project_id}/cloud-phone/apps?name=&offset=&limit=` (5.1.3).
pub(super) async fn list_apps(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::ListApps)?;
    let pairs = query_pairs(req.uri().query().unwrap_or_default());
    let (offset, limit) = page(&pairs, MAX_PAGE)?;
    // "Fuzzy search is supported": a name containing the text matches.
    let name = query_param(&pairs, "name").unwrap_or_default();
    let fleet = cp.fleet.lock();
    let count = fleet.apps.len();
    let matching = (fleet.apps.iter().enumerate().rev()).filter(|(_, app)| app.name.contains(name));
    let apps: Vec<Value> = page_of(matching, offset, limit)?
        .into_iter()
        .map(|(index, app)| {
            let created = cp.started - TimeDelta::minutes((count - index) as i64);
            app_summary(app, timestamp(created))
        })
        .collect();
    Ok(ok_json(
        json!({"request_id": request_id::current(), "apps": apps}),
    ))
}

/// Table 5-6.
fn app_summary(app: &SimApp, created: String) -> Value {
    json!({
        "name": app.name,
        "package_name": app.package_name,
        "launch_activity": launch_activity(app),
        "app_id": app.app_id,
        "description": "",
        "create_time": created,
        "update_time": created,
    })
}

/// `GET /v1/{project_id}/cloud-phone/apps/{app_id}/phones?offset=&limit=` (5.1.2).
///
/// The reference lists no error for an unknown application (7.2 has no application code):
/// it is answered like an application deployed nowhere, an empty list.
pub(super) async fn app_phones(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::AppPhones)?;
    let (offset, limit) = page(
        &query_pairs(req.uri().query().unwrap_or_default()),
        MAX_PAGE,
    )?;
    let app_id = req.match_info().get("app_id").unwrap_or_default();
    let fleet = cp.fleet.lock();
    let Some(app) = fleet.apps.iter().find(|app| app.app_id == app_id) else {
        return Ok(phone_page(Vec::new()));
    };
    let deployed = (fleet.listed()).filter(|phone| phone.apps.iter().any(|a| a == app_id));
    let phones = page_of(deployed, offset, limit)?
        .into_iter()
        .map(|phone| deployment(phone, app))
        .collect();
    Ok(phone_page(phones))
}

fn phone_page(phones: Vec<Value>) -> HttpResponse {
    ok_json(json!({"request_id": request_id::current(), "phones": phones}))
}

/// Table 5-4, spelt as the reference's example spells it: `app_verison_id` (the table says
/// `app_version_id`; cphub reads both), `""` for the version id, as in the example. The
/// example also answers `""` for `version_code` and `version_name`; the table gives them
/// as the version's code and name, which the simulator fills in so that what phone sync
/// stores of them can be checked (the `blank_versions` fault blanks 5.3.1's and 5.3.6's).
fn deployment(phone: &SimPhone, app: &SimApp) -> Value {
    let installed = phone.versions.get(&app.app_id);
    let version = installed
        .and_then(|id| app.version(id))
        .unwrap_or(app.latest());
    json!({
        "phone_id": phone.phone_id,
        "app_verison_id": "",
        "version_code": version.version_code,
        "version_name": version.version_name,
        "launch_activity": launch_activity(app),
    })
}

pub(super) fn launch_activity(app: &SimApp) -> String {
    format!("{}.MainActivity", app.package_name)
}
