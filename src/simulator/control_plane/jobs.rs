//! Jobs: chapters 4.4.1 (one job by id) and 4.4.2 (the jobs of one or more batch requests,
//! by request id), each written as its example shows it: "no error" is `null` in 4.4.1
//! (`error_code`, `error_msg`, `execute_msg`) and `""` in 4.4.2 (`error_code`, `error_msg`),
//! whose jobs also carry `node_id`. 4.4.1's example has no `phone_id`/`server_id`; the
//! official SDK's model has both, so they are sent.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use super::auth::ControlPlane;
use super::error::ControlPlaneError;
use super::faults::Operation;
use super::wire::{ok_json, page, page_of, query_pairs, query_param};
use crate::http::request_id;
use crate::simulator::fleet::{Fleet, JobKind, SimJob};

const MAX_JOB_PAGE: usize = 100;

pub(super) async fn show_job(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::ShowJob)?;
    let job_id = req.match_info().get("job_id").unwrap_or_default();
    let fleet = cp.fleet.lock();
    let job = fleet
        .jobs
        .get(job_id)
        .ok_or(ControlPlaneError::JobNotFound)?;
    let mut answer = job_json(&fleet, job);
    if let Value::Object(fields) = &mut answer {
        fields.insert("request_id".into(), request_id::current().into());
        // 4.4.1's example: `null` for no error, and an `execute_msg`.
        fields.insert("execute_msg".into(), Value::Null);
    }
    Ok(ok_json(answer))
}

/// The jobs of one or more batch requests (`request_ids`, comma-separated, wins over
/// `request_id`), in fleet order of their phones. The reference (4.4.2) shows only
/// `request_id`; `request_ids`, `offset` and `limit` (1 to 100, 100 by default) are Huawei's
/// SDK's. It is silent on the order of the list and on an unknown `request_id` (here: an
/// empty list, 200).
pub(super) async fn list_jobs(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::ListJobs)?;
    let pairs = query_pairs(req.uri().query().unwrap_or_default());
    let wanted: Vec<&str> = query_param(&pairs, "request_ids")
        .or_else(|| query_param(&pairs, "request_id"))
        .map(|ids| ids.split(',').map(str::trim).collect())
        .ok_or_else(|| ControlPlaneError::InvalidParameter("request_id is missing.".into()))?;
    let (offset, limit) = page(&pairs, MAX_JOB_PAGE)?;
    let fleet = cp.fleet.lock();
    let position = |phone_id: &Option<String>| {
        let phone_id = phone_id.as_deref()?;
        fleet.phones.iter().position(|p| p.phone_id == phone_id)
    };
    let mut jobs: Vec<&SimJob> = fleet
        .jobs
        .values()
        .filter(|job| wanted.contains(&job.request_id.as_str()))
        .collect();
    jobs.sort_by_key(|job| {
        (
            position(&job.phone_id),
            job.begin_time.clone(),
            job.job_id.clone(),
        )
    });
    let jobs: Vec<Value> = page_of(jobs.into_iter(), offset, limit)?
        .into_iter()
        .map(|job| {
            let mut answer = job_json(&fleet, job);
            if let Value::Object(fields) = &mut answer {
                // 4.4.2's example: `""` for no error, and the server as `node_id` too.
                for field in ["error_code", "error_msg"] {
                    if fields[field].is_null() {
                        fields.insert(field.into(), "".into());
                    }
                }
                // An encoding server's job has no `server_id` (Table 4-50), so no `node_id`.
                if let Some(node) = fields.get("server_id").cloned() {
                    fields.insert("node_id".into(), node);
                }
            }
            answer
        })
        .collect();
    Ok(ok_json(
        json!({"request_id": request_id::current(), "jobs": jobs}),
    ))
}

/// A server job (5.3.4) has no `phone_id` (Table 4-50: it is "contained in tasks related to
/// cloud phones"); a phone job's server is its phone's, as it was when the job started. An encoding server's restart (4.6.2)
/// names only its `encode_server_id` ("contained in tasks related to the encoding server").
/// A running job's `end_time` is `null`: both of the reference's examples show finished
/// jobs only. Table 4-50 lists `execute_msg` for 4.4.2 but its example has none, so the
/// list leaves it out (4.4.1, whose example has it, adds it).
fn job_json(fleet: &Fleet, job: &SimJob) -> Value {
    if job.kind == JobKind::RestartEncodeServer {
        return json!({
            "job_id": job.job_id,
            "encode_server_id": job.server_id,
            "status": job.status,
            "begin_time": job.begin_time,
            "end_time": job.end_time,
            "error_code": job.error_code,
            "error_msg": job.error_msg,
        });
    }
    let phone = job.phone_id.as_deref().and_then(|id| fleet.phone(id));
    let server_id = job
        .server_id
        .as_deref()
        .or(phone.map(|p| p.server_id.as_str()));
    let mut answer = json!({
        "job_id": job.job_id,
        "server_id": server_id,
        "status": job.status,
        "begin_time": job.begin_time,
        "end_time": job.end_time,
        "error_code": job.error_code,
        "error_msg": job.error_msg,
    });
    if let (Some(phone_id), Value::Object(fields)) = (&job.phone_id, &mut answer) {
        fields.insert("phone_id".into(), phone_id.clone().into());
    }
    answer
}
