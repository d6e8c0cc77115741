//! Diagnostics before a reset, and ad-hoc commands (chapter 4.7.5), against the simulator:
//! the configured commands run on the phone right before an automatic or manual reset and
//! their outputs stay with the recovery (`GET /api/v1/recoveries/{id}`); one that fails or
//! times out never holds the reset back; a command beyond the API's limits is refused
//! before any call, by the API and by `cphub phones exec`.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error};
use cphub::simulator::fleet::JobKind;

use crate::watchdog::{Fleet, has, jobs_of, manual, start, wait_for_recoveries};

backend_tests!(
    a_manual_reset_keeps_each_diagnostics_output_and_a_failing_one_does_not_stop_it_4_7_5,
    a_diagnostic_that_times_out_does_not_hold_the_reset_back_4_7_5,
    an_automatic_reset_runs_the_diagnostics_first_4_7_5,
    commands_beyond_the_limits_of_4_7_5_are_refused_before_any_call,
    a_phone_heard_again_while_its_reset_is_prepared_is_not_reset_4_3_5,
    two_resets_prepared_at_once_never_run_more_jobs_than_max_in_flight_4_3_5,
);

const BOOTED: &str = "getprop sys.boot_completed";
const NOT_CANNED: &str = "dumpsys battery";

fn watchdog(timeout_ms: u64) -> String {
    format!(
        "diagnostics = [\"{BOOTED}\", \"{NOT_CANNED}\"]\ndiagnostics_timeout_ms = {timeout_ms}\n"
    )
}

fn can(fleet: &Fleet, command: &str, output: &str) {
    let mut sim = fleet.simulator.fleet.lock();
    sim.command_outputs
        .insert(command.to_owned(), output.to_owned());
}

async fn recovery(app: &TestApp, id: &Value) -> Value {
    let res = app
        .get(&format!("/api/v1/recoveries/{id}"), Some(TOKEN))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn reset(fleet: &Fleet, phone_id: &str) -> Value {
    let res = manual(&fleet.app, phone_id, "reset").await;
    assert_eq!(res.status(), 202);
    res.json().await.unwrap()
}

async fn a_manual_reset_keeps_each_diagnostics_output_and_a_failing_one_does_not_stop_it_4_7_5(
    backend: Backend,
) {
    let fleet = start(backend, 2, &watchdog(5000), |_| {}).await;
    can(&fleet, BOOTED, "1");
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let started = reset(&fleet, &phone_id).await;

    let log =
        wait_for_recoveries(&fleet.app, &phone_id, |log| has(log, "reset", "succeeded")).await;
    assert_eq!(log[0]["id"], started["id"]);
    let shown = recovery(&fleet.app, &started["id"]).await;
    assert_eq!(
        shown["diagnostics"],
        json!([
            {"command": BOOTED, "outcome": "succeeded", "output": "1", "error": null},
            {"command": NOT_CANNED, "outcome": "failed",
             "output": "/system/bin/sh: dumpsys: not found",
             "error": "status -1: CPS.0191: Run command failed."},
        ])
    );
    assert_eq!(shown["outcome"], "succeeded");
    fleet.simulator.stop().await;
}

async fn a_diagnostic_that_times_out_does_not_hold_the_reset_back_4_7_5(backend: Backend) {
    let fleet = start(backend, 2, &watchdog(300), |_| {}).await;
    can(&fleet, BOOTED, "1");
    fleet
        .simulator
        .faults
        .hang_commands(Some(Duration::from_secs(30)));
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let started = reset(&fleet, &phone_id).await;

    wait_for_recoveries(&fleet.app, &phone_id, |log| has(log, "reset", "succeeded")).await;
    let shown = recovery(&fleet.app, &started["id"]).await;
    let outcomes: Vec<&Value> = (shown["diagnostics"].as_array().unwrap().iter())
        .map(|run| &run["outcome"])
        .collect();
    assert_eq!(outcomes, ["timed_out", "timed_out"], "{shown}");
    assert_eq!(shown["diagnostics"][0]["output"], Value::Null);
    fleet.simulator.stop().await;
}

/// A phone whose restart fails is reset by the watchdog (4.3.5); the diagnostics run first.
/// The phone is silent, so the simulator cannot run them: each fails, the reset goes on.
async fn an_automatic_reset_runs_the_diagnostics_first_4_7_5(backend: Backend) {
    let fleet = start(backend, 2, &watchdog(5000), |o| {
        o.silent = 1;
        o.restart_fails = 1;
    })
    .await;
    can(&fleet, BOOTED, "1");
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let log =
        wait_for_recoveries(&fleet.app, &phone_id, |log| has(log, "reset", "succeeded")).await;

    let reset = log.iter().find(|r| r["action"] == "reset").unwrap();
    let shown = recovery(&fleet.app, &reset["id"]).await;
    let commands: Vec<(&Value, &Value)> = (shown["diagnostics"].as_array().unwrap().iter())
        .map(|run| (&run["command"], &run["outcome"]))
        .collect();
    assert_eq!(
        commands,
        [
            (&Value::from(BOOTED), &Value::from("failed")),
            (&Value::from(NOT_CANNED), &Value::from("failed")),
        ]
    );
    let restart = log.iter().find(|r| r["action"] == "restart").unwrap();
    let shown = recovery(&fleet.app, &restart["id"]).await;
    assert_eq!(shown["diagnostics"], json!([]), "a restart wipes nothing");
    fleet.simulator.stop().await;
}

/// Diagnostic commands (4.7.5) the client has finished, whatever their outcome.
async fn commands_run(app: &TestApp) -> f64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    (text.lines())
        .filter(|line| line.starts_with("cphub_cph_requests_total{operation=\"run_sync_command\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The watchdog decides on its pass's snapshot, then prepares a reset for seconds (three
/// diagnostics, 4.7.5, each answered after 3 s here). A stuck phone its restart did
/// not help comes back during the first: it may be serving a player again, and the reset
/// (4.3.5, factory settings) is not sent.
async fn a_phone_heard_again_while_its_reset_is_prepared_is_not_reset_4_3_5(backend: Backend) {
    let slow = format!(
        "diagnostics = [\"{BOOTED}\", \"{NOT_CANNED}\", \"uptime\"]\ndiagnostics_timeout_ms = 5000\n"
    );
    let fleet = start(backend, 2, &slow, |o| o.stuck = 1).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    wait_for_recoveries(&fleet.app, &phone_id, |log| {
        has(log, "restart", "succeeded")
    })
    .await;
    (fleet.simulator.faults).hang_commands(Some(Duration::from_secs(3)));
    for _ in 0..200 {
        if commands_run(&fleet.app).await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(commands_run(&fleet.app).await >= 1.0, "no diagnostics ran");

    fleet.simulator.fleet.lock().phones[0].faults.stuck = false;

    for _ in 0..200 {
        if commands_run(&fleet.app).await >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet
        .app
        .wait_for_phone(&phone_id, |p| p["state"] == "idle")
        .await;
    // The reset, had it been decided, goes out within milliseconds of the last diagnostic.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = crate::watchdog::recoveries(&fleet.app, &phone_id).await;
    assert!(log.iter().all(|r| r["action"] == "restart"), "{log:?}");
    assert_eq!(
        jobs_of(&fleet.simulator, &phone_id, JobKind::Reset),
        0,
        "no reset sent"
    );
    fleet.simulator.stop().await;
}

/// `watchdog.max_in_flight` is 1. Two manual resets (4.3.5) of two phones asked at once
/// both find no job in flight, then spend 2 s preparing (a diagnostic, 4.7.5, answered
/// after 2 s here). Only one may be sent: the cap is counted again as each recovery is
/// logged, under one lock. Before, both were sent, two jobs against a cap of one; the
/// same held for a watchdog pass, another replica or a rollout deciding meanwhile.
async fn two_resets_prepared_at_once_never_run_more_jobs_than_max_in_flight_4_3_5(
    backend: Backend,
) {
    let config = format!("max_in_flight = 1\n{}", watchdog(5000));
    let fleet = start(backend, 2, &config, |_| {}).await;
    can(&fleet, BOOTED, "1");
    let ids = fleet.simulator.phone_ids();
    (fleet.simulator.faults).hang_commands(Some(Duration::from_secs(2)));

    let (first, second) = tokio::join!(
        manual(&fleet.app, &ids[0], "reset"),
        manual(&fleet.app, &ids[1], "reset")
    );
    let mut statuses = [first.status().as_u16(), second.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(statuses, [202, 409], "one reset sent, one refused");
    let refused = match first.status().as_u16() {
        409 => first,
        _ => second,
    };
    let body = assert_error(refused, 409, "CPHUB.RECOVERY_REFUSED").await;
    assert!(
        body["error_msg"]
            .as_str()
            .is_some_and(|m| m.contains("max_in_flight")),
        "{body}"
    );
    let resets: usize = (ids.iter())
        .map(|id| jobs_of(&fleet.simulator, id, JobKind::Reset))
        .sum();
    assert_eq!(resets, 1, "resets sent against a cap of one");
    fleet.simulator.stop().await;
}

async fn exec(app: &TestApp, phone_id: &str, command: &str) -> reqwest::Response {
    let url = format!("{}/api/v1/phones/{phone_id}/exec", app.address);
    let body = json!({"command": command});
    app.client
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// How many synchronous command calls cphub made, as its own metrics count them.
async fn command_calls(app: &TestApp) -> usize {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with("cphub_cph_requests_total{"))
        .filter(|line| line.contains("operation=\"run_sync_command\""))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as usize)
        .sum()
}

fn cli_exec(fleet: &Fleet, endpoint: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cphub"));
    cmd.env_clear()
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .env("CPHUB__CPH__ENDPOINT", endpoint)
        .env("CPHUB__CPH__PROJECT_ID", &fleet.options.project_id)
        .env("CPHUB__CPH__AUTH__AK", &fleet.options.ak)
        .env("CPHUB__CPH__AUTH__SK", &fleet.options.sk)
        .args(["phones", "exec"])
        .args(args);
    cmd
}

async fn output(cmd: std::process::Command) -> std::process::Output {
    crate::helpers::child_output(cmd).await
}

async fn commands_beyond_the_limits_of_4_7_5_are_refused_before_any_call(backend: Backend) {
    let fleet = start(backend, 1, "", |_| {}).await;
    can(&fleet, BOOTED, "1");
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    let too_long = "a".repeat(1025);

    for bad in [
        "ls; reboot",
        "cat /a | grep b",
        "echo $PATH",
        too_long.as_str(),
        " ",
    ] {
        let res = exec(&fleet.app, &phone_id, bad).await;
        assert_error(res, 400, "CPHUB.INVALID_COMMAND").await;
    }
    // A field the API does not have (a timeout the caller thinks it set) is refused, not
    // ignored, as on every operator body.
    let url = format!("{}/api/v1/phones/{phone_id}/exec", fleet.app.address);
    let body = json!({"command": BOOTED, "timeout_ms": 60000});
    let res = (fleet
        .app
        .client
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await)
        .unwrap();
    let error = assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    assert!(
        error["error_msg"].as_str().unwrap().contains("timeout_ms"),
        "{error}"
    );
    assert_eq!(command_calls(&fleet.app).await, 0, "nothing was sent");
    let res = exec(&fleet.app, &phone_id, BOOTED).await;
    assert_eq!(res.status(), 200);
    let run: Value = res.json().await.unwrap();
    assert_eq!(
        (&run["outcome"], &run["output"]),
        (&json!("succeeded"), &json!("1"))
    );
    assert_eq!(command_calls(&fleet.app).await, 1);

    // Nothing listens on port 9: were the command sent, the error would say unreachable.
    let refused = output(cli_exec(
        &fleet,
        "http://127.0.0.1:9",
        &[&phone_id, "--", "ls;", "reboot"],
    ))
    .await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("not sent") && stderr.contains("4.7.5"),
        "{stderr}"
    );
    let endpoint = fleet.simulator.cph_endpoint();
    let args = [phone_id.as_str(), "--", "getprop", "sys.boot_completed"];
    let looked = output(cli_exec(&fleet, &endpoint, &args)).await;
    assert!(looked.status.success(), "{looked:?}");
    assert_eq!(String::from_utf8_lossy(&looked.stdout), "1\n");
    fleet.simulator.stop().await;
}
