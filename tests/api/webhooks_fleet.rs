//! Fleet facts as webhooks (docs/webhooks.md "Event types"), against the simulator: a
//! control-plane pause (7.2 CPS.0006 arrears) is a `fleet.incident` when it begins and when
//! it ends, once per pause; a phone cphub learns is out of service (4.3.1 frozen 6,
//! stopped 8) is one `phone.recovery` per transition.

use serde_json::Value;
use wiremock::{MockServer, ResponseTemplate};

use crate::backend_tests;
use crate::watchdog::{start, wait_for_metric};
use crate::webhooks::{OLD_SECRET, envelope, hook_url, receiver};

backend_tests!(
    arrears_7_2_is_one_fleet_incident_when_the_pause_begins_and_one_when_it_ends,
    a_phone_turning_stopped_or_frozen_4_3_1_is_one_phone_recovery_per_transition,
);

/// Appended to the watchdog's section of the test fleet's settings: one endpoint.
fn webhooks(server: &MockServer) -> String {
    format!(
        "\n[webhooks]\npoll_interval_ms = 50\n\
         endpoints = [{{ name = \"ops\", url = \"{}\", secrets = [\"{OLD_SECRET}\"] }}]\n",
        hook_url(server)
    )
}

/// The envelopes received so far whose id starts with `prefix`, in arrival order.
async fn received(server: &MockServer, prefix: &str) -> Vec<Value> {
    let requests = server.received_requests().await.unwrap();
    (requests.iter().map(envelope))
        .filter(|e| e["id"].as_str().unwrap().starts_with(prefix))
        .collect()
}

async fn wait_for_received(server: &MockServer, prefix: &str, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let found = received(server, prefix).await;
        if found.len() >= n {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "fewer than {n} events {prefix}…: {:?}",
        received(server, prefix).await
    );
}

/// Two pauses: the account refused (every call 400 CPS.0006, 7.2), then served again,
/// twice. The silent phone makes the watchdog call the control plane, which starts each
/// pause; its probe re-read ends it.
async fn arrears_7_2_is_one_fleet_incident_when_the_pause_begins_and_one_when_it_ends(
    backend: crate::helpers::Backend,
) {
    let server = receiver(ResponseTemplate::new(204)).await;
    let fleet = start(backend, 2, &webhooks(&server), |o| o.silent = 1).await;
    let faults = &fleet.simulator.faults;
    for _ in 0..2 {
        faults.set_arrears(true);
        wait_for_metric(&fleet.app, "cphub_cph_account_blocked", 1.0).await;
        faults.set_arrears(false);
        wait_for_metric(&fleet.app, "cphub_cph_account_blocked", 0.0).await;
    }

    let prefix = "evt_fleet.incident_account_";
    let events = wait_for_received(&server, prefix, 4).await;
    let ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    // Pause ids are the table's (a refused insert may use one up): read them from the data.
    let pauses: Vec<i64> = (events.iter())
        .map(|e| e["data"]["pause_id"].as_i64().unwrap())
        .collect();
    let (first, second) = (pauses[0], pauses[2]);
    assert_ne!(first, second, "two pauses");
    let expected = [
        format!("{prefix}{first}_open"),
        format!("{prefix}{first}_closed"),
        format!("{prefix}{second}_open"),
        format!("{prefix}{second}_closed"),
    ];
    assert_eq!(ids, expected, "in order, once each");
    for event in &events {
        let data = &event["data"];
        assert_eq!(event["type"], "fleet.incident");
        assert_eq!(
            (&data["subject"], &data["reason"], &data["code"]),
            (
                &Value::from("account"),
                &Value::from("account_refused"),
                &Value::from("CPS.0006")
            ),
            "{event}"
        );
        assert!(data["started_at"].is_string(), "{event}");
    }
    assert_eq!(events[0]["data"]["outcome"], "open");
    assert_eq!(events[0]["data"]["ended_at"], Value::Null);
    assert_eq!(events[1]["data"]["outcome"], "closed");
    assert!(events[1]["data"]["ended_at"].is_string());
    assert_eq!(events[0]["data"]["pause_id"], events[1]["data"]["pause_id"]);
    fleet.simulator.stop().await;
}

/// One phone stopped and one frozen a little after set-up (the simulator's faults); phone
/// sync reads their status (4.3.1) every second, and each turn out of service is told once,
/// however often sync reads the same status again.
async fn a_phone_turning_stopped_or_frozen_4_3_1_is_one_phone_recovery_per_transition(
    backend: crate::helpers::Backend,
) {
    let server = receiver(ResponseTemplate::new(204)).await;
    let fleet = start(backend, 4, &webhooks(&server), |o| {
        o.stopped = 1;
        o.frozen = 1;
    })
    .await;
    let prefix = "evt_phone.recovery_";
    let events = wait_for_received(&server, prefix, 2).await;
    // Two more syncs of every phone after both events: any repeat would be written by now.
    let phone_id = events[0]["data"]["subject"].as_str().unwrap().to_owned();
    wait_for_syncs(&fleet.app, &phone_id, 2).await;
    // The outbox is sent in order per phone and every event is fanned out within a poll:
    // wait for any straggler through the deliveries list.
    let listed = fleet
        .app
        .get(
            "/api/v1/webhooks/deliveries?endpoint=ops",
            Some(crate::helpers::TOKEN),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let listed: Vec<&Value> = (listed["deliveries"].as_array().unwrap().iter())
        .filter(|d| d["type"] == "phone.recovery")
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    let events = received(&server, prefix).await;
    let mut details: Vec<(&str, &str)> = (events.iter())
        .map(|e| {
            assert_eq!(e["data"]["reason"], "out_of_service", "{e}");
            assert_eq!(e["data"]["outcome"], "out_of_service", "{e}");
            assert_eq!(e["type"], "phone.recovery");
            (
                e["data"]["subject"].as_str().unwrap(),
                e["data"]["detail"].as_str().unwrap(),
            )
        })
        .collect();
    details.sort();
    let mut phones: Vec<&str> = details.iter().map(|(p, _)| *p).collect();
    phones.dedup();
    assert_eq!(phones.len(), 2, "one event per phone: {details:?}");
    let mut said: Vec<&str> = details.iter().map(|(_, d)| *d).collect();
    said.sort();
    assert_eq!(said, ["status 6 (frozen)", "status 8 (stopped)"]);
    fleet.simulator.stop().await;
}

/// Waits until phone sync has read `phone_id` `n` more times (its `cph_synced_at` moved).
async fn wait_for_syncs(app: &crate::helpers::TestApp, phone_id: &str, n: usize) {
    let mut last = app.phone(phone_id).await.unwrap()["cph_synced_at"].clone();
    let mut seen = 0;
    for _ in 0..300 {
        let now = app.phone(phone_id).await.unwrap()["cph_synced_at"].clone();
        if now != last {
            (seen, last) = (seen + 1, now);
            if seen >= n {
                return;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("phone sync did not read {phone_id} {n} more times");
}
