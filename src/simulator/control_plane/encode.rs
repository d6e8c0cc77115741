//! Encoding servers: chapters 4.6.1 (the list, with status) and 4.6.2 (restart, an
//! asynchronous job per server followed through 4.4, as every batch operation is). Each
//! answer is shaped as its example: 4.6.1's entries with their `access_infos`, 4.6.2's
//! `{"job_id", "encode_server_id"}` per server.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::ControlPlane;
use super::error::ControlPlaneError;
use super::faults::Operation;
use super::wire::{created_json, ok_json, page, page_of, parse_json, query_pairs, query_param, timestamp};
use crate::cph::model::job_status;
use crate::http::request_id;
use crate::simulator::fleet::{
    ENCODE_SERVER_RESTARTING, ENCODE_SERVER_RUNNING, JobKind, SimEncodeServer, SimJob,
};

/// 4.6.1: "Value range: 1–100".
const MAX_PAGE: usize = 100;

#[derive(Deserialize)]
struct RestartBody {
    encode_server_ids: Vec<String>,
}

pub(super) async fn list_encode_servers(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::ListEncodeServers)?;
    let pairs = query_pairs(req.uri().query().unwrap_or_default());
    let (offset, limit) = page(&pairs, MAX_PAGE)?;
    let status = number(&pairs, "status")?;
    let server_type = number(&pairs, "type")?;
    let server_id = query_param(&pairs, "server_id");
    let fleet = cp.fleet.lock();
    // Listed in the fleet's order: 4.6.1 states no order. Every simulated encoding server
    // is a server (type 0), not a container. Any integer
    // `status` or `type` is taken as a filter (one no server has lists none): 4.6.1 names
    // their values but is silent on what an unknown one is answered.
    let matching = (fleet.encode_servers.iter())
        .filter(|e| status.is_none_or(|s| s == e.status))
        .filter(|_| server_type.is_none_or(|t| t == 0))
        .filter(|e| server_id.is_none_or(|s| s == e.server_id));
    let servers: Vec<Value> = page_of(matching, offset, limit)?
        .into_iter()
        .map(encode_server_json)
        .collect();
    Ok(ok_json(
        json!({"encode_servers": servers, "request_id": request_id::current()}),
    ))
}

fn number(pairs: &[(String, String)], name: &str) -> Result<Option<i32>, ControlPlaneError> {
    query_param(pairs, name)
        .map(|v| v.parse::<i32>())
        .transpose()
        .map_err(|_| ControlPlaneError::InvalidParameter(format!("{name} is invalid.")))
}

/// Table 4-55 with one `access_infos` entry (Table 4-56), the expired and new names both,
/// as the example sends them.
fn encode_server_json(server: &SimEncodeServer) -> Value {
    json!({
        "encode_server_name": server.encode_server_name,
        "encode_server_id": server.encode_server_id,
        "encode_server_ip": "10.237.0.233",
        "server_id": server.server_id,
        "keypair_name": "keyPair2",
        "type": 0,
        "status": server.status,
        "access_infos": [{
            "listen_port": 6902, "intranet_ip": "172.31.240.115", "access_port": 6902,
            "access_ip": "10.154.119.231", "server_ip": "172.31.240.115",
            "public_ip": "10.154.119.231", "type": "port1"
        }],
    })
}

/// 4.6.2: one job per encoding server, each running `job_delay`, the server restarting (3)
/// meanwhile and running (1) after. The reference is silent on an unknown id: the whole
/// call is refused with 7.2's parameter error (CPS.0200), as an unknown version is in 5.3.
pub(super) async fn restart_encode_servers(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::RestartEncodeServers)?;
    let body: RestartBody = parse_json(&body)?;
    // Silent in the reference too: CPS.0009 names an empty phone list only, so an empty
    // server list gets the generic parameter error.
    if body.encode_server_ids.is_empty() {
        let why = "encode_server_ids is empty.".to_owned();
        return Err(ControlPlaneError::InvalidParameter(why));
    }
    let request_id = request_id::current();
    let mut jobs = Vec::new();
    let mut fleet = cp.fleet.lock();
    if let Some(unknown) = (body.encode_server_ids.iter()).find(|id| {
        !fleet
            .encode_servers
            .iter()
            .any(|e| &e.encode_server_id == *id)
    }) {
        let why = format!("encode_server_id {unknown} is invalid.");
        return Err(ControlPlaneError::InvalidParameter(why));
    }
    for id in body.encode_server_ids {
        let job = restart_job(&request_id, &id);
        jobs.push(json!({"job_id": job.job_id, "encode_server_id": id}));
        if let Some(server) = fleet.encode_server_mut(&id) {
            server.status = ENCODE_SERVER_RESTARTING;
        }
        let delay = fleet.job_delay(cp.settings.job_delay);
        cp.finish_restart_later(job.job_id.clone(), id, delay);
        fleet.jobs.insert(job.job_id.clone(), job);
    }
    drop(fleet);
    if let Some(lost) = cp
        .settings
        .faults
        .take_lost_answer(Operation::RestartEncodeServers)
    {
        return Err(ControlPlaneError::AnswerLost(lost.status()));
    }
    Ok(created_json(
        json!({"jobs": jobs, "request_id": request_id}),
    ))
}

fn restart_job(request_id: &str, encode_server_id: &str) -> SimJob {
    SimJob {
        job_id: uuid::Uuid::new_v4().simple().to_string(),
        request_id: request_id.to_owned(),
        phone_id: None,
        server_id: Some(encode_server_id.to_owned()),
        kind: JobKind::RestartEncodeServer,
        status: job_status::RUNNING,
        begin_time: timestamp(Utc::now()),
        end_time: None,
        error_code: None,
        error_msg: None,
    }
}

impl ControlPlane {
    fn finish_restart_later(&self, job_id: String, encode_server_id: String, delay: Duration) {
        let shared = self.fleet.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut fleet = shared.lock();
            if let Some(server) = fleet.encode_server_mut(&encode_server_id) {
                server.status = ENCODE_SERVER_RUNNING;
                server.restarts += 1;
            }
            if let Some(job) = fleet.jobs.get_mut(&job_id) {
                job.end(timestamp(Utc::now()), Ok(()));
            }
        });
    }
}
