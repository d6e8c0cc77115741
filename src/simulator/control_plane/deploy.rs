//! Application deployment: chapters 5.3.1 (the versions deployed on a server), 5.3.4
//! (pushing a version to servers, job type 31), 5.3.6 (the apps on a phone) and 5.3.7
//! (updating a phone to a version, job type 32), the calls a game rollout makes.
//!
//! The POSTs answer 201 (7.1.2) with one job per server × version or phone × version, as
//! their examples show (`job_type`, `job_id`, `server_id`/`phone_id`, `app_version_id`); a
//! task per job finishes it after `job_delay`, as the batch operations do. Where the
//! reference is silent, the choices are said where they are made.

use std::collections::BTreeSet;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::apps::launch_activity;
use super::auth::ControlPlane;
use super::error::{ControlPlaneError, ItemError};
use super::faults::Operation;
use super::wire::{created_json, ok_json, page, page_of, parse_json, query_pairs, timestamp};
use crate::cph::model::job_status;
use crate::http::request_id;
use crate::simulator::fleet::{Fleet, JobFailure, JobKind, SimApp, SimJob, SimVersion};

/// 5.3.1 and 5.3.6: "A maximum of 100 records can be returned for each request".
const MAX_PAGE: usize = 100;
/// Table 5-26 and Table 5-36.
const PUSH_JOB: u8 = 31;
const UPDATE_JOB: u8 = 32;

#[derive(Deserialize)]
struct PushBody {
    batch_push_app_version: PushVersions,
}

/// Table 5-25: both lists mandatory.
#[derive(Deserialize)]
struct PushVersions {
    app_version_ids: Vec<String>,
    server_ids: Vec<String>,
}

#[derive(Deserialize)]
struct UpdateBody {
    update_app_version: UpdateVersions,
}

/// Table 5-35.
#[derive(Deserialize)]
struct UpdateVersions {
    app_version_ids: Vec<String>,
}

/// `GET /v1/{project_id}/cloud-phone/servers/{server_id}/apps` (5.3.1): the versions pushed
/// to the server, in version id order (the reference is silent on the order). The reference
/// names no error for an unknown server (7.2 has no server code): it is answered as a server
/// with nothing deployed, an empty list.
pub(super) async fn server_apps(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::ServerApps)?;
    let (offset, limit) = page(
        &query_pairs(req.uri().query().unwrap_or_default()),
        MAX_PAGE,
    )?;
    let server_id = req.match_info().get("server_id").unwrap_or_default();
    let fleet = cp.fleet.lock();
    let pushed = fleet.pushed.get(server_id).cloned().unwrap_or_default();
    let versions = (pushed.iter()).filter_map(|id| fleet.find_version(id));
    let apps: Vec<Value> = page_of(versions, offset, limit)?
        .into_iter()
        // 5.3.1's example spells the version id `app_verison_id` (Table 5-15 says
        // `app_version_id`), as 5.1.2's does; cphub reads both.
        .map(|(app, version)| app_json(app, version, "app_verison_id"))
        .map(|app| blanked(app, &cp))
        .collect();
    Ok(ok_json(
        json!({"request_id": request_id::current(), "apps": apps}),
    ))
}

/// `GET /v1/{project_id}/cloud-phone/phones/{phone_id}/apps` (5.3.6): the phone's apps, each
/// at its installed version, in deployment order (5.3.6 states no order).
pub(super) async fn phone_apps(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::PhoneApps)?;
    let (offset, limit) = page(
        &query_pairs(req.uri().query().unwrap_or_default()),
        MAX_PAGE,
    )?;
    let phone_id = req.match_info().get("phone_id").unwrap_or_default();
    let fleet = cp.fleet.lock();
    let phone = fleet
        .phone(phone_id)
        .ok_or_else(|| ControlPlaneError::unknown_phone(phone_id))?;
    let installed = (phone.apps.iter()).filter_map(|app_id| fleet.app(app_id));
    let apps: Vec<Value> = page_of(installed, offset, limit)?
        .into_iter()
        .map(|app| {
            let version = phone.versions.get(&app.app_id).and_then(|id| app.version(id));
            app_json(app, version.unwrap_or(app.latest()), "app_version_id")
        })
        .map(|app| blanked(app, &cp))
        .collect();
    Ok(ok_json(
        json!({"request_id": request_id::current(), "apps": apps}),
    ))
}

/// With the version fields `""`, as 5.3.1's and 5.3.6's examples answer, when asked for
/// (`faults.rs`).
fn blanked(mut app: Value, cp: &ControlPlane) -> Value {
    if cp.settings.faults.blank_versions() {
        for field in ["app_version_id", "app_verison_id", "version_code", "version_name"] {
            if let Some(value) = app.get_mut(field) {
                *value = json!("");
            }
        }
    }
    app
}

/// Table 5-15 / Table 5-33, with the version id under `id_field`.
fn app_json(app: &SimApp, version: &SimVersion, id_field: &str) -> Value {
    json!({
        "app_id": app.app_id,
        id_field: version.app_version_id,
        "package_name": app.package_name,
        "name": app.name,
        "description": "",
        "version_code": version.version_code,
        "version_name": version.version_name,
        "launch_activity": launch_activity(app),
    })
}

/// `POST /v1/{project_id}/cloud-phone/servers/action` with `batch_push_app_version` (5.3.4).
/// An unknown version id or server id is refused whole with 7.2's parameter error: the
/// reference has no per-item error for this call.
pub(super) async fn push_app_version(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::PushAppVersion)?;
    let body: PushBody = parse_json(&body)?;
    let PushVersions {
        app_version_ids,
        server_ids,
    } = body.batch_push_app_version;
    if app_version_ids.is_empty() || server_ids.is_empty() {
        return Err(invalid("app_version_ids and server_ids must not be empty"));
    }
    let request_id = request_id::current();
    let mut jobs = Vec::new();
    {
        let mut fleet = cp.fleet.lock();
        known_versions(&fleet, &app_version_ids)?;
        let servers: BTreeSet<String> = fleet.phones.iter().map(|p| p.server_id.clone()).collect();
        if let Some(unknown) = server_ids.iter().find(|id| !servers.contains(*id)) {
            return Err(invalid(&format!("server_id {unknown} is invalid")));
        }
        for server_id in &server_ids {
            for version in &app_version_ids {
                let job = new_job(&request_id, JobKind::PushAppVersion, None, server_id);
                jobs.push(json!({
                    "job_type": PUSH_JOB, "job_id": job.job_id,
                    "server_id": server_id, "app_version_id": version,
                }));
                cp.finish_deployment_later(&mut fleet, job, version.clone());
            }
        }
    }
    Ok(created_json(
        json!({"request_id": request_id, "jobs": jobs}),
    ))
}

/// `POST /v1/{project_id}/cloud-phone/phones/{phone_id}/action` with `update_app_version`
/// (5.3.7), one job per version.
pub(super) async fn update_app_version(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::UpdateAppVersion)?;
    let body: UpdateBody = parse_json(&body)?;
    let versions = body.update_app_version.app_version_ids;
    if versions.is_empty() {
        return Err(invalid("app_version_ids must not be empty"));
    }
    let phone_id = req.match_info().get("phone_id").unwrap_or_default().to_owned();
    let request_id = request_id::current();
    // As the batch operations: a 504 at once, the jobs started later (the reference is
    // silent on when a job may appear).
    if let Some(delay) = cp.settings.faults.take_late_start(Operation::UpdateAppVersion) {
        let cp = cp.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            start_updates(&cp, &phone_id, &request_id, &versions).ok();
        });
        return Err(ControlPlaneError::AnswerLost(504));
    }
    let jobs = start_updates(&cp, &phone_id, &request_id, &versions)?;
    // As the batch operations: the jobs run, the answer is lost (7.1.2), and 4.4.2 finds
    // them by the request id the error names.
    if let Some(lost) = cp
        .settings
        .faults
        .take_lost_answer(Operation::UpdateAppVersion)
    {
        return Err(ControlPlaneError::AnswerLost(lost.status()));
    }
    Ok(created_json(
        json!({"request_id": request_id, "jobs": jobs}),
    ))
}

/// One 5.3.7 job per version on the phone; the answer's `jobs`.
fn start_updates(
    cp: &ControlPlane,
    phone_id: &str,
    request_id: &str,
    versions: &[String],
) -> Result<Vec<Value>, ControlPlaneError> {
    let mut fleet = cp.fleet.lock();
    let server_id = (fleet.phone(phone_id).map(|p| p.server_id.clone()))
        .ok_or_else(|| ControlPlaneError::unknown_phone(phone_id))?;
    known_versions(&fleet, versions)?;
    let mut jobs = Vec::new();
    let mut versions = versions.iter();
    // On demand (`faults.rs`): the first version refused in its entry, the others started.
    // Table 5-36 shows no error fields; the reference is silent on refusing one version of
    // several, so the entry is written as 4.3.5's batch answer writes a refused phone.
    if cp.settings.faults.take_item_errors(Operation::UpdateAppVersion)
        && let Some(refused) = versions.next()
    {
        let mut entry = ItemError::SystemError.answer(phone_id);
        entry["app_version_id"] = json!(refused);
        jobs.push(entry);
    }
    for version in versions {
        let job = new_job(
            request_id,
            JobKind::UpdateAppVersion,
            Some(phone_id),
            &server_id,
        );
        jobs.push(json!({
            "job_type": UPDATE_JOB, "job_id": job.job_id,
            "phone_id": phone_id, "app_version_id": version,
        }));
        cp.finish_deployment_later(&mut fleet, job, version.clone());
    }
    Ok(jobs)
}

fn known_versions(fleet: &Fleet, ids: &[String]) -> Result<(), ControlPlaneError> {
    match ids.iter().find(|id| fleet.find_version(id).is_none()) {
        Some(unknown) => Err(invalid(&format!("app_version_id {unknown} is invalid"))),
        None => Ok(()),
    }
}

fn invalid(why: &str) -> ControlPlaneError {
    ControlPlaneError::InvalidParameter(why.to_owned())
}

fn new_job(request_id: &str, kind: JobKind, phone_id: Option<&str>, server_id: &str) -> SimJob {
    SimJob {
        job_id: uuid::Uuid::new_v4().simple().to_string(),
        request_id: request_id.to_owned(),
        phone_id: phone_id.map(str::to_owned),
        server_id: Some(server_id.to_owned()),
        kind,
        status: job_status::RUNNING,
        begin_time: timestamp(Utc::now()),
        end_time: None,
        error_code: None,
        error_msg: None,
    }
}

impl ControlPlane {
    /// Records the running job and ends it `job_delay` later in its own task. An update
    /// (job 32) fails at `job_failure_rate`, as restarts and resets do; a push (job 31) does
    /// not: it is a copy to the server, and rollouts need the failures on the phones.
    fn finish_deployment_later(&self, fleet: &mut Fleet, job: SimJob, version: String) {
        let job_id = job.job_id.clone();
        let unlucky = job.kind == JobKind::UpdateAppVersion
            && rand::random_bool(self.settings.job_failure_rate.clamp(0.0, 1.0));
        fleet.jobs.insert(job_id.clone(), job);
        let (shared, delay) = (self.fleet.clone(), fleet.job_delay(self.settings.job_delay));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            finish(&mut shared.lock(), &job_id, &version, unlucky);
        });
    }
}

/// Ends a push (the server holds the version) or an update (the phone runs it, unless the
/// job was drawn to fail).
fn finish(fleet: &mut Fleet, job_id: &str, version: &str, unlucky: bool) {
    let Some(job) = fleet.jobs.get(job_id).cloned() else {
        return;
    };
    let server_id = job.server_id.clone().unwrap_or_default();
    let outcome = match (job.kind, job.phone_id.as_deref()) {
        (JobKind::UpdateAppVersion, Some(_)) if unlucky => {
            Err("The application version failed to install.")
        }
        (JobKind::UpdateAppVersion, Some(phone_id)) => {
            install(fleet, phone_id, &server_id, version)
        }
        _ => {
            fleet
                .pushed
                .entry(server_id)
                .or_default()
                .insert(version.to_owned());
            Ok(())
        }
    };
    if let Some(job) = fleet.jobs.get_mut(job_id) {
        job.end(timestamp(Utc::now()), outcome.map_err(JobFailure::system));
    }
}

/// 5.3.7: "Ensure that the application version has been pushed to the server." The
/// reference does not say how a version that was not fails; here the job fails (7.2's
/// system error) with a message saying so. Installing restarts the game, so whatever
/// session the phone was playing is lost (the reference is silent; a rollout must drain
/// the phone first): the phone's task starts over, as after a restart.
fn install(
    fleet: &mut Fleet,
    phone_id: &str,
    server_id: &str,
    version: &str,
) -> Result<(), &'static str> {
    let pushed = fleet
        .pushed
        .get(server_id)
        .is_some_and(|s| s.contains(version));
    if !pushed {
        return Err("The application version has not been pushed to the server.");
    }
    let app_id = fleet
        .find_version(version)
        .map(|(app, _)| app.app_id.clone());
    let (Some(app_id), Some(phone)) = (app_id, fleet.phone_mut(phone_id)) else {
        return Err("Phone is not found.");
    };
    if phone.faults.update_fails {
        return Err("The application version failed to install.");
    }
    if !phone.apps.contains(&app_id) {
        phone.apps.push(app_id.clone());
    }
    phone.versions.insert(app_id, version.to_owned());
    phone.boots += 1;
    Ok(())
}
