//! Encoding servers against the simulator (chapters 4.6.1, 4.6.2): the watchdog lists them
//! into the book, `GET /api/v1/encode-servers` and `cphub_encode_servers{state}` show them,
//! and an abnormal one is restarted once within its budget, logged like a phone's recovery,
//! and not again within its cooldown.

use std::time::Duration;

use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp};
use crate::watchdog::{has, metric_value, start, wait_for_metric, wait_for_recoveries};

backend_tests!(
    an_abnormal_encoding_server_4_6_2_is_restarted_once_and_not_again_within_its_cooldown,
    the_encode_servers_are_listed_with_their_state_4_6_1,
);

/// Listed every second; a cooldown of an hour, so a second restart could only be a bug.
const WATCHDOG: &str = "encode_server_interval_secs = 1\nencode_server_cooldown_secs = 3600\n\
                        encode_server_hourly_cap = 2\n";

async fn encode_servers(app: &TestApp) -> Vec<Value> {
    let res = app.get("/api/v1/encode-servers", Some(TOKEN)).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["encode_servers"].as_array().unwrap().clone()
}

/// Polls the listed encoding servers until `check` holds (up to 30 s).
async fn wait_for_encode_servers(app: &TestApp, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..300 {
        let servers = encode_servers(app).await;
        if check(&servers) {
            return servers;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "encode servers never matched: {:?}",
        encode_servers(app).await
    );
}

fn state_of<'a>(servers: &'a [Value], id: &str) -> Option<&'a Value> {
    servers
        .iter()
        .find(|s| s["encode_server_id"] == id)
        .map(|s| &s["state"])
}

async fn an_abnormal_encoding_server_4_6_2_is_restarted_once_and_not_again_within_its_cooldown(
    backend: Backend,
) {
    let fleet = start(backend, 2, WATCHDOG, |_| {}).await;
    let id = {
        let mut sim = fleet.simulator.fleet.lock();
        sim.set_encode_server_abnormal(0);
        sim.encode_servers[0].encode_server_id.clone()
    };

    let log = wait_for_recoveries(&fleet.app, &id, |log| has(log, "restart", "succeeded")).await;

    assert_eq!(log[0]["reason"], "encode_server_abnormal");
    assert!(log[0]["job_id"].is_string(), "{log:?}");
    assert_eq!(fleet.simulator.fleet.lock().encode_servers[0].restarts, 1);
    // Abnormal again within the cooldown: seen by two more syncs (each sync is followed by
    // its decision in the same pass), and left alone.
    fleet.simulator.fleet.lock().set_encode_server_abnormal(0);
    let seen = wait_for_encode_servers(&fleet.app, |s| {
        state_of(s, &id).is_some_and(|state| state == "abnormal")
    })
    .await;
    let synced = |servers: &[Value]| servers[0]["synced_at"].clone();
    let first = synced(&seen);
    let later = wait_for_encode_servers(&fleet.app, |s| synced(s) != first).await;
    wait_for_encode_servers(&fleet.app, |s| synced(s) != synced(&later)).await;
    let log = wait_for_recoveries(&fleet.app, &id, |_| true).await;
    assert_eq!(log.len(), 1, "restarted once only: {log:?}");
    assert_eq!(fleet.simulator.fleet.lock().encode_servers[0].restarts, 1);
    let abnormal = "cphub_encode_servers{state=\"abnormal\"}";
    wait_for_metric(&fleet.app, abnormal, 1.0).await;
    fleet.simulator.stop().await;
}

async fn the_encode_servers_are_listed_with_their_state_4_6_1(backend: Backend) {
    let fleet = start(backend, 20, WATCHDOG, |_| {}).await;
    let ids: Vec<String> = (fleet.simulator.fleet.lock().encode_servers.iter())
        .map(|e| e.encode_server_id.clone())
        .collect();
    assert_eq!(ids.len(), 2, "one per server of 16 phones");

    let servers = wait_for_encode_servers(&fleet.app, |s| s.len() == 2).await;

    for id in &ids {
        assert_eq!(state_of(&servers, id), Some(&Value::from("running")));
    }
    assert_eq!(servers[0]["status"], 1);
    let running = "cphub_encode_servers{state=\"running\"}";
    wait_for_metric(&fleet.app, running, 2.0).await;
    let abnormal = "cphub_encode_servers{state=\"abnormal\"}";
    assert_eq!(metric_value(&fleet.app, abnormal).await, Some(0.0));
    fleet.simulator.stop().await;
}
