//! `fleet.rollout` webhooks (docs/webhooks.md "Event types") against the simulator and a
//! receiving endpoint: one event per change of a rollout's state, in order, with ids a
//! receiver deduplicates on, each verified by the Standard Webhooks reference library. The
//! updates are 5.3.7 (job type 32, followed by 4.4.1); the simulator fails a phone's job when
//! told to.

use serde_json::{Value, json};
use wiremock::{MockServer, ResponseTemplate};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN};
use crate::rollouts::{Rig, start_with};
use crate::webhooks::{OLD_SECRET, envelope, hook_url, receiver, verify_with_reference_library};

backend_tests!(
    a_rollout_through_canary_and_batch_to_done_sends_started_then_done_5_3_7,
    a_pause_by_the_failure_threshold_then_resume_pause_and_abort_each_send_theirs_4_4_1,
    a_cphub_restarted_mid_rollout_sends_no_transition_twice_7_1_2,
);

/// Appended to the test fleet's settings: one endpoint taking only `fleet.rollout`, which
/// also proves the type can be subscribed to.
fn webhooks(server: &MockServer) -> String {
    format!(
        "\n[webhooks]\npoll_interval_ms = 50\n\
         endpoints = [{{ name = \"ops\", url = \"{}\", secrets = [\"{OLD_SECRET}\"], \
         events = [\"fleet.rollout\"] }}]\n",
        hook_url(server)
    )
}

async fn rig(
    backend: Backend,
    server: &MockServer,
    phones: usize,
    tune: impl FnOnce(&mut cphub::simulator::SimOptions),
) -> Rig {
    start_with(backend, phones, &webhooks(server), tune).await
}

/// Waits until the endpoint received `id` (deliveries of one rollout arrive in order, so
/// every earlier event of it arrived before), then returns every event received, verified
/// with the reference library, and each distinct id in arrival order (a delivery cut short
/// by a restart may be sent again: the id is what a receiver deduplicates on).
async fn received_through(server: &MockServer, id: &str) -> (Vec<Value>, Vec<String>) {
    for _ in 0..600 {
        let requests = server.received_requests().await.unwrap();
        let events: Vec<Value> = requests.iter().map(envelope).collect();
        if events.iter().any(|e| e["id"] == id) {
            verify_with_reference_library(&requests, OLD_SECRET).await;
            let mut ids: Vec<String> = Vec::new();
            for event in &events {
                let event_id = event["id"].as_str().unwrap().to_owned();
                if !ids.contains(&event_id) {
                    ids.push(event_id);
                }
            }
            return (events, ids);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{id} never received");
}

fn ids(rollout: &Value, transitions: &[&str]) -> Vec<String> {
    (transitions.iter())
        .map(|t| format!("evt_fleet.rollout_{rollout}_{t}"))
        .collect()
}

fn event<'a>(events: &'a [Value], id: &str) -> &'a Value {
    events.iter().find(|e| e["id"] == id).unwrap()
}

/// 4 phones, a canary of 1 then a batch of 3: two state changes, so two events, and the
/// batches in between are none.
async fn a_rollout_through_canary_and_batch_to_done_sends_started_then_done_5_3_7(
    backend: Backend,
) {
    let server = receiver(ResponseTemplate::new(204)).await;
    let rig = rig(backend, &server, 4, |_| {}).await;
    let version = rig.new_version();

    let rollout = rig
        .start_rollout(&json!({
            "app_id": crate::rollouts::APP, "app_version_ids": [version], "canary": 1,
            "batch_size": 3, "push_first": true,
        }))
        .await;
    let id = &rollout["id"];
    rig.wait_for_rollout(id, "done").await;

    let expected = ids(id, &["started_0", "done_1"]);
    let (events, received) = received_through(&server, &expected[1]).await;
    assert_eq!(received, expected);
    let started = event(&events, &expected[0]);
    assert_eq!(started["type"], "fleet.rollout");
    let data = &started["data"];
    assert_eq!(
        (&data["rollout_id"], &data["transition"], &data["state"]),
        (id, &json!("started"), &json!("running"))
    );
    assert_eq!(data["app_id"], crate::rollouts::APP);
    assert_eq!(data["app_version_ids"], json!([version]));
    assert_eq!(data["phones"]["pending"], 4, "{started}");
    assert_eq!(data["reason"], Value::Null);
    assert!(data["changed_at"].is_string(), "RFC 3339: {started}");
    let done = &event(&events, &expected[1])["data"];
    assert_eq!(
        (&done["state"], &done["batch"]),
        (&json!("done"), &json!(2))
    );
    assert_eq!(done["phones"]["done"], 4, "{done}");
    rig.simulator.stop().await;
}

/// The canary's job fails (4.4.1) with max_failures 0: cphub pauses the rollout and says
/// why. Resumed with every other phone failing too, its next batch (a canary again: the
/// first failed past `max_failures`) pauses it again — an event of its own — and the
/// abort sends the last.
async fn a_pause_by_the_failure_threshold_then_resume_pause_and_abort_each_send_theirs_4_4_1(
    backend: Backend,
) {
    let server = receiver(ResponseTemplate::new(204)).await;
    let rig = rig(backend, &server, 4, |_| {}).await;
    let version = rig.new_version();
    rig.simulator.fleet.lock().phones[0].faults.update_fails = true;
    let rollout = rig
        .start_rollout(&json!({
            "app_id": crate::rollouts::APP, "app_version_ids": [version], "canary": 1,
            "batch_size": 3, "max_failures": 0, "push_first": true,
        }))
        .await;
    let id = &rollout["id"];
    rig.wait_for_rollout(id, "paused").await;
    for phone in rig.simulator.fleet.lock().phones.iter_mut() {
        phone.faults.update_fails = true;
    }

    for (action, state) in [("resume", "paused"), ("abort", "aborted")] {
        let res = rig
            .post(&format!("/api/v1/rollouts/{id}/{action}"), &json!({}))
            .await;
        assert_eq!(res.status(), 200, "{action}");
        rig.wait_for_rollout(id, state).await;
    }

    let expected = ids(
        id,
        &[
            "started_0",
            "paused_1",
            "resumed_2",
            "paused_3",
            "aborted_4",
        ],
    );
    let (events, received) = received_through(&server, &expected[4]).await;
    assert_eq!(received, expected);
    let first = &event(&events, &expected[1])["data"];
    assert_eq!(first["paused_by"], "cphub");
    assert_eq!(
        first["reason"],
        "batch 1 had 1 failed phones, more than max_failures 0"
    );
    assert_eq!(first["phones"]["failed"], 1, "{first}");
    assert_eq!(first["phones"]["pending"], 3, "{first}");
    let resumed = &event(&events, &expected[2])["data"];
    assert_eq!(
        (&resumed["state"], &resumed["reason"]),
        (&json!("running"), &Value::Null)
    );
    let second = &event(&events, &expected[3])["data"];
    assert_eq!(second["phones"]["failed"], 2, "{second}");
    assert_eq!(second["phones"]["pending"], 2, "{second}");
    assert_eq!(
        second["reason"], "batch 3 had 1 failed phones, more than max_failures 0",
        "the batch the resume opened (2) took none; the canary again: {second}"
    );
    let aborted = &event(&events, &expected[4])["data"];
    assert_eq!(
        (&aborted["state"], &aborted["reason"]),
        (&json!("aborted"), &Value::Null)
    );
    rig.simulator.stop().await;
}

/// cphub stops while a batch's updates run (their jobs take 1.5 s) and a new cphub on the
/// same database finishes the rollout: the start is not written again, and the outbox has
/// one delivery per transition.
async fn a_cphub_restarted_mid_rollout_sends_no_transition_twice_7_1_2(backend: Backend) {
    let server = receiver(ResponseTemplate::new(204)).await;
    let rig = rig(backend, &server, 6, |o| o.job_delay_ms = 1500).await;
    let version = rig.new_version();
    let rollout = rig
        .start_rollout(&json!({
            "app_id": crate::rollouts::APP, "app_version_ids": [version], "canary": 0,
            "batch_size": 3, "push_first": true,
        }))
        .await;
    let id = rollout["id"].clone();
    rig.wait(|| async {
        let now = rig.rollout(&id).await;
        let phones = now["phones"].as_array().cloned().unwrap_or_default();
        phones.iter().filter(|p| p["state"] == "updating").count() == 3
    })
    .await;
    let rig = rig.restart().await;

    rig.wait_for_rollout(&id, "done").await;

    let expected = ids(&id, &["started_0", "done_1"]);
    let (_, received) = received_through(&server, &expected[1]).await;
    assert_eq!(received, expected);
    let listed: Value = (rig.app)
        .get("/api/v1/webhooks/deliveries?endpoint=ops", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    let mut listed: Vec<&str> = (listed["deliveries"].as_array().unwrap().iter())
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    listed.sort();
    let mut expected = expected;
    expected.sort();
    assert_eq!(listed, expected, "one outbox row per transition");
    rig.simulator.stop().await;
}
