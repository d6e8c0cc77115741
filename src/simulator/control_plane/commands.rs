//! Synchronous ADB shell commands: chapter 4.7.5. Each phone's run is answered in the call,
//! as the example shows it: `phone_id`, `job_id`, `status` (2 or -1), `error_code` and
//! `error_msg` (`""` on success), and `execute_msg`, the output (at most 1,024 bytes),
//! "returned regardless of whether the command is successfully executed".
//!
//! Outputs are canned per command ([`Fleet::command_outputs`]); a command not listed fails
//! with `CPS.0191` "Run command failed." and a shell's "not found", as the example fails
//! one. The faults (`faults.rs`) make every run fail, or hold the answer back.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::ControlPlane;
use super::error::ControlPlaneError;
use super::faults::Operation;
use super::wire::{created_json, parse_json};
use crate::cph::model::job_status;
use crate::domain::{MAX_OUTPUT_BYTES, truncate_bytes};
use crate::http::request_id;
use crate::simulator::fleet::Fleet;

/// The example's code and message for a command that failed.
const RUN_FAILED: (&str, &str) = ("CPS.0191", "Run command failed.");

#[derive(Deserialize)]
struct CommandBody {
    command: String,
    content: String,
    #[serde(default)]
    phone_ids: Vec<String>,
    #[serde(default)]
    server_ids: Vec<String>,
}

/// Refusals the reference gives no code for (a command other than `shell`, a `content`
/// beyond its limits) are 7.2's parameter error, CPS.0200; no phone at all is CPS.0009.
pub(super) async fn run_sync_command(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body, Operation::RunSyncCommand)?;
    let body: CommandBody = parse_json(&body)?;
    if body.command != "shell" {
        let why = format!(
            "command {:?} is invalid: only shell is supported.",
            body.command
        );
        return Err(ControlPlaneError::InvalidParameter(why));
    }
    if !within_limits(&body.content) {
        let why = "content is invalid: at most 1024 bytes of letters, digits, _ . / : -";
        return Err(ControlPlaneError::InvalidParameter(why.into()));
    }
    let faults = &cp.settings.faults;
    if let Some(delay) = faults.commands_hang() {
        tokio::time::sleep(delay).await;
    }
    let fail = faults.commands_fail();
    let jobs: Vec<Value> = {
        let fleet = cp.fleet.lock();
        let phones = phones_of(&fleet, &body.phone_ids, &body.server_ids);
        if phones.is_empty() {
            return Err(ControlPlaneError::NoPhones);
        }
        (phones.iter())
            .map(|phone_id| run(&fleet, phone_id, &body.content, fail))
            .collect()
    };
    Ok(created_json(
        json!({"request_id": request_id::current(), "jobs": jobs}),
    ))
}

/// `phone_ids`, or else every phone of `server_ids` ("mandatory when parameter phone_ids
/// does not exist").
fn phones_of(fleet: &Fleet, phone_ids: &[String], server_ids: &[String]) -> Vec<String> {
    if !phone_ids.is_empty() {
        return phone_ids.to_vec();
    }
    (fleet.listed())
        .filter(|p| server_ids.contains(&p.server_id))
        .map(|p| p.phone_id.clone())
        .collect()
}

/// One phone's run. A phone that is unknown or not running fails with the example's code
/// and an empty output: the reference is silent on both.
fn run(fleet: &Fleet, phone_id: &str, content: &str, fail: bool) -> Value {
    let job_id = uuid::Uuid::new_v4().simple().to_string();
    let alive = fleet.phone(phone_id).is_some_and(|p| p.is_alive());
    let canned = fleet.command_outputs.get(content);
    let (status, output) = match (alive, canned, fail) {
        (true, Some(output), false) => (job_status::SUCCEEDED, output.clone()),
        (true, Some(output), true) => (job_status::FAILED, output.clone()),
        (true, None, _) => (job_status::FAILED, not_found(content)),
        (false, _, _) => (job_status::FAILED, String::new()),
    };
    let (code, message) = match status {
        job_status::SUCCEEDED => ("", ""),
        _ => RUN_FAILED,
    };
    json!({
        "phone_id": phone_id, "job_id": job_id, "status": status,
        "error_code": code, "error_msg": message,
        "execute_msg": truncate_bytes(&output, MAX_OUTPUT_BYTES),
    })
}

/// 4.7.5's `content`, read from the reference here rather than from cphub's own check, so
/// that the fake holds cphub to the reference: "a maximum of 1024 bytes, including only
/// uppercase letters, lowercase letters, digits, underscores (_), periods (.), slashes (/),
/// colons (:), and hyphens (-)". The list has no space, but its own example request is
/// `"ls -l /system"`: the space is taken as allowed. Empty content is refused too.
fn within_limits(content: &str) -> bool {
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'/' | b':' | b'-' | b' ');
    !content.trim().is_empty() && content.len() <= 1024 && content.bytes().all(allowed)
}

fn not_found(content: &str) -> String {
    let program = content.split_whitespace().next().unwrap_or_default();
    format!("/system/bin/sh: {program}: not found")
}
