//! The operator API over the webhook deliveries (docs/webhooks.md "Operating"): sessions
//! played through the callbacks (6.2 enter, 6.3 quit) are delivered to two receivers, then
//! listed, shown, retried and replayed through `/api/v1/webhooks`.

use std::sync::Arc;
use std::time::Duration;

use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use serde_json::{Value, json};
use wiremock::{MockServer, ResponseTemplate};

use crate::backend_tests;
use crate::helpers::*;
use crate::webhooks::{
    NEW_SECRET, OLD_SECRET, envelope, hook_url, play, receiver, wait_for_requests, webhooks,
};

backend_tests!(
    deliveries_page_newest_first_and_filter_by_endpoint_and_state,
    one_delivery_shows_its_attempts_and_no_secret,
    a_retried_delivery_is_sent_again_under_its_id,
    a_replay_sends_the_events_since_a_time_again,
    bad_filters_ids_and_times_get_their_codes,
    delivered_rows_past_the_retention_are_pruned_and_nothing_else,
    a_retry_while_an_attempt_is_in_flight_is_not_undone_by_its_failure,
);

/// Two receivers answering 204, `billing` and `crm`, each with every event of two played
/// sessions (2 × started + ended) delivered: four deliveries each.
async fn delivered(backend: Backend) -> (TestApp, MockServer, MockServer) {
    let billing = receiver(ResponseTemplate::new(204)).await;
    let crm = receiver(ResponseTemplate::new(204)).await;
    let config = webhooks(
        &[("billing", hook_url(&billing)), ("crm", hook_url(&crm))],
        "",
    );
    let app = TestApp::spawn_with(backend, &config).await;
    play(&app, &["s-1", "s-2"]).await;
    wait_for_requests(&billing, 4).await;
    wait_for_requests(&crm, 4).await;
    wait_until_all_delivered(&app, 8).await;
    (app, billing, crm)
}

/// The attempt is recorded after the answer: wait for the rows to say so.
async fn wait_until_all_delivered(app: &TestApp, n: usize) {
    for _ in 0..200 {
        let page = list(app, "/webhooks/deliveries?state=delivered").await;
        if page["deliveries"].as_array().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the deliveries were never all delivered");
}

async fn list(app: &TestApp, path: &str) -> Value {
    let res = app.get(&format!("/api/v1{path}"), Some(TOKEN)).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn post(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    let url = format!("{}/api/v1{path}", app.address);
    let req = app.client.post(url).bearer_auth(TOKEN).json(body);
    req.send().await.expect("request sent")
}

/// (event_seq, endpoint) of each delivery of a page.
fn positions(page: &Value) -> Vec<(i64, String)> {
    (page["deliveries"].as_array().unwrap().iter())
        .map(|d| {
            let endpoint = d["endpoint"].as_str().unwrap().to_owned();
            (d["event_seq"].as_i64().unwrap(), endpoint)
        })
        .collect()
}

async fn deliveries_page_newest_first_and_filter_by_endpoint_and_state(backend: Backend) {
    let (app, _billing, _crm) = delivered(backend).await;

    // Pages of 3 over 8 deliveries: 3, 3, 2, each continuing where the last ended.
    let mut seen = Vec::new();
    let mut path = "/webhooks/deliveries?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page = list(&app, &path).await;
        pages += 1;
        seen.extend(positions(&page));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/webhooks/deliveries?limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 8), "{seen:?}");
    let mut ordered = seen.clone();
    ordered.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(
        seen, ordered,
        "newest event first, then endpoint; none twice"
    );
    ordered.dedup();
    assert_eq!(ordered.len(), 8);

    let crm = list(&app, "/webhooks/deliveries?endpoint=crm").await;
    let crm = positions(&crm);
    assert_eq!(crm.len(), 4);
    assert!(crm.iter().all(|(_, e)| e == "crm"), "{crm:?}");
    let failed = list(&app, "/webhooks/deliveries?state=failed").await;
    assert_eq!(failed["deliveries"], json!([]));
    assert_eq!(failed["next_cursor"], Value::Null);
}

async fn one_delivery_shows_its_attempts_and_no_secret(backend: Backend) {
    let (app, billing, _crm) = delivered(backend).await;

    let path = "/api/v1/webhooks/billing/deliveries/evt_session.ended_s-1";
    let res = app.get(path, Some(TOKEN)).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    for secret in [OLD_SECRET, NEW_SECRET, "whsec_", &billing.uri()] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    let shown: Value = serde_json::from_str(&text).unwrap();
    let delivery = &shown["delivery"];
    assert_eq!(delivery["event_id"], "evt_session.ended_s-1");
    assert_eq!(delivery["type"], "session.ended");
    assert_eq!(delivery["subject"], "s-1");
    assert_eq!(delivery["state"], "delivered");
    assert_eq!(delivery["attempts"], 1);
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{shown}");
    assert_eq!(attempts[0]["status"], 204);
    assert_eq!(attempts[0]["error"], Value::Null);
    assert!(attempts[0]["latency_ms"].as_i64().unwrap() >= 0);
}

async fn a_retried_delivery_is_sent_again_under_its_id(backend: Backend) {
    let (app, billing, crm) = delivered(backend).await;

    let path = "/webhooks/billing/deliveries/evt_session.started_s-2/retry";
    let res = post(&app, path, &json!({})).await;
    assert_eq!(res.status(), 200);
    let retried: Value = res.json().await.unwrap();
    assert_eq!(retried["delivery"]["event_id"], "evt_session.started_s-2");

    let again = wait_for_requests(&billing, 5).await;
    assert_eq!(envelope(&again[4])["id"], "evt_session.started_s-2");
    assert_eq!(
        envelope(&again[4]),
        envelope_of(&again, "evt_session.started_s-2")
    );
    wait_until_all_delivered(&app, 8).await;
    let crm_requests = crm.received_requests().await.unwrap();
    assert_eq!(crm_requests.len(), 4, "the other endpoint is not retried");
}

/// The first request that carried `id`.
fn envelope_of(requests: &[wiremock::Request], id: &str) -> Value {
    let found = requests.iter().map(envelope).find(|e| e["id"] == id);
    found.expect("sent")
}

async fn a_replay_sends_the_events_since_a_time_again(backend: Backend) {
    let (app, billing, crm) = delivered(backend).await;

    // Both sessions started at 19:00 and ended at 19:10: since 19:05 is both ends only.
    let since = json!({"since": "2026-12-01T19:05:00Z"});
    let res = post(&app, "/webhooks/billing/replay", &since).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"replayed": 2}));

    let requests = wait_for_requests(&billing, 6).await;
    let mut replayed: Vec<Value> = requests[4..]
        .iter()
        .map(|r| envelope(r)["id"].clone())
        .collect();
    replayed.sort_by_key(|id| id.to_string());
    assert_eq!(
        replayed,
        [
            json!("evt_session.ended_s-1"),
            json!("evt_session.ended_s-2")
        ]
    );
    wait_until_all_delivered(&app, 8).await;
    assert_eq!(crm.received_requests().await.unwrap().len(), 4);
}

async fn bad_filters_ids_and_times_get_their_codes(backend: Backend) {
    let (app, _billing, _crm) = delivered(backend).await;
    let get = |path: &'static str| app.get(path, Some(TOKEN));

    let cases = [
        (
            "/api/v1/webhooks/deliveries?state=leased",
            400,
            "CPHUB.INVALID_FIELD",
        ),
        (
            "/api/v1/webhooks/deliveries?cursor=bm90LWEtY3Vyc29y",
            400,
            "CPHUB.INVALID_FIELD",
        ),
        (
            "/api/v1/webhooks/deliveries?endpoint=nobody",
            404,
            "CPHUB.NOT_FOUND",
        ),
        (
            "/api/v1/webhooks/nobody/deliveries/evt_session.ended_s-1",
            404,
            "CPHUB.NOT_FOUND",
        ),
        (
            "/api/v1/webhooks/billing/deliveries/evt_session.ended_s-9",
            404,
            "CPHUB.NOT_FOUND",
        ),
        (
            "/api/v1/webhooks/deliveries?endpoint=a%00b",
            404,
            "CPHUB.NOT_FOUND",
        ),
        (
            "/api/v1/webhooks/a%00b/deliveries/evt_session.ended_s-1",
            404,
            "CPHUB.NOT_FOUND",
        ),
        (
            "/api/v1/webhooks/billing/deliveries/evt%20x",
            400,
            "CPHUB.INVALID_FIELD",
        ),
    ];
    for (path, status, code) in cases {
        assert_error(get(path).await, status, code).await;
    }
    let posts = [
        (
            "/webhooks/billing/deliveries/evt_session.ended_s-9/retry",
            json!({}),
            404,
            "CPHUB.NOT_FOUND",
        ),
        (
            "/webhooks/a%00b/deliveries/evt_session.ended_s-1/retry",
            json!({}),
            404,
            "CPHUB.NOT_FOUND",
        ),
        (
            "/webhooks/nobody/replay",
            json!({"since": "2026-12-01T00:00:00Z"}),
            404,
            "CPHUB.NOT_FOUND",
        ),
        (
            "/webhooks/billing/replay",
            json!({"since": "yesterday"}),
            400,
            "CPHUB.INVALID_TIME",
        ),
        (
            "/webhooks/billing/replay",
            json!({"since": "0001-01-01T00:00:00Z"}),
            400,
            "CPHUB.INVALID_TIME",
        ),
        (
            "/webhooks/billing/replay",
            json!({}),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        (
            "/webhooks/billing/replay",
            json!({"since": "2026-12-01T00:00:00Z", "to": 1}),
            400,
            "CPHUB.INVALID_FIELD",
        ),
    ];
    for (path, body, status, code) in posts {
        assert_error(post(&app, path, &body).await, status, code).await;
    }
    let all = list(&app, "/webhooks/deliveries?state=pending").await;
    assert_eq!(
        all["deliveries"],
        json!([]),
        "a refused request changes nothing"
    );
}

/// `webhooks.retention_days = 1`: the dispatcher deletes delivered rows older than a day
/// (by when they were delivered, on cphub's clock) with their attempts; failed and pending
/// rows stay whatever their age, and so do recent delivered ones.
async fn delivered_rows_past_the_retention_are_pruned_and_nothing_else(backend: Backend) {
    let live = receiver(ResponseTemplate::new(204)).await;
    let dead = receiver(ResponseTemplate::new(500)).await;
    // Two attempts, the second ten days after the first.
    let config = format!(
        "[webhooks]\npoll_interval_ms = 50\nretention_days = 1\n\
         retry_schedule_secs = [0, 864000]\nendpoints = [\
         {{ name = \"live\", url = \"{}\", secrets = [\"{OLD_SECRET}\"] }},\
         {{ name = \"dead\", url = \"{}\", secrets = [\"{OLD_SECRET}\"] }}]\n",
        hook_url(&live),
        hook_url(&dead),
    );
    let start = UtcTime::parse("start", "2026-12-01T19:20:00Z").unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let app = TestApp::spawn_with_clock(backend, &config, Arc::clone(&clock)).await;
    let day = Duration::from_secs(86_400);

    play(&app, &["a"]).await;
    wait_for_states(&app, "live", &[("delivered", 2)]).await;
    // One subject's events go in order: a's end waits for its start to be settled. Both are
    // pending before the first attempt too: wait for that attempt to be recorded, or the clock
    // moves while it is on its way and it counts as made on day 12.
    wait_for(&app, "dead", |rows| {
        let tried = |d: &Value| d["state"] == "pending" && d["attempts"] == 1;
        rows.len() == 2 && rows.iter().any(tried)
    })
    .await;
    // Day 12 (past the ten days and their jitter of up to 10 %): `dead` fails a's start for
    // good and tries a's end once; `live` loses a's deliveries, twelve days old.
    clock.advance(day * 12);
    wait_for_states(&app, "dead", &[("failed", 1), ("pending", 1)]).await;
    wait_for_states(&app, "live", &[("delivered", 0)]).await;
    play(&app, &["b"]).await;
    wait_for_states(&app, "live", &[("delivered", 2)]).await;
    // Day 14: b's deliveries to `live` are two days old, c's are new; nothing of `dead` is
    // due before day 21.
    clock.advance(day * 2);
    play(&app, &["c"]).await;

    // Until the next pass prunes b's, `live` has four delivered rows.
    let kept = wait_for(&app, "live", |rows| {
        rows.len() == 2 && rows[0]["subject"] == "c"
    })
    .await;
    let subjects: Vec<&str> = (kept.iter())
        .map(|d| d["subject"].as_str().unwrap())
        .collect();
    assert_eq!(subjects, ["c", "c"], "only the recent ones are left");
    let gone = "/api/v1/webhooks/live/deliveries/evt_session.ended_b";
    assert_error(app.get(gone, Some(TOKEN)).await, 404, "CPHUB.NOT_FOUND").await;
    let dead_rows = wait_for_states(&app, "dead", &[("failed", 1), ("pending", 5)]).await;
    let failed: Vec<&Value> = (dead_rows.iter())
        .filter(|d| d["state"] == "failed")
        .map(|d| &d["event_id"])
        .collect();
    assert_eq!(
        failed,
        [&json!("evt_session.started_a")],
        "kept two days on"
    );
    let shown = "/api/v1/webhooks/dead/deliveries/evt_session.started_a";
    let shown: Value = app.get(shown, Some(TOKEN)).await.json().await.unwrap();
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 2, "{shown}");
}

/// Waits until `endpoint` has exactly the given count of deliveries in each state; answers
/// its deliveries.
async fn wait_for_states(app: &TestApp, endpoint: &str, want: &[(&str, usize)]) -> Vec<Value> {
    wait_for(app, endpoint, |rows| {
        let count = |state: &str| rows.iter().filter(|d| d["state"] == state).count();
        want.iter().all(|(state, n)| count(state) == *n)
    })
    .await
}

/// Waits until `endpoint`'s deliveries, newest first, pass `check`; answers them.
async fn wait_for(app: &TestApp, endpoint: &str, check: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let path = format!("/webhooks/deliveries?endpoint={endpoint}");
    let mut last = Value::Null;
    for _ in 0..200 {
        last = list(app, &path).await;
        let rows = last["deliveries"].as_array().unwrap();
        if check(rows) {
            return rows.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{endpoint} never got there: {last}");
}

/// One attempt allowed, and the endpoint answers 500 after a second and a half: the
/// operator retries a's start while its first attempt is on its way. That attempt's failure
/// (final, by the schedule it was made under) is kept in the history but does not undo the
/// retry: the delivery is sent again, and only its own failure ends it. Before, the
/// in-flight attempt wrote `failed` over the retry and nothing was sent again.
async fn a_retry_while_an_attempt_is_in_flight_is_not_undone_by_its_failure(backend: Backend) {
    let slow = receiver(ResponseTemplate::new(500).set_delay(Duration::from_millis(1500))).await;
    let config = webhooks(
        &[("slow", hook_url(&slow))],
        "retry_schedule_secs = [0]\ntimeout_ms = 5000\n",
    );
    let app = TestApp::spawn_with(backend, &config).await;
    play(&app, &["a"]).await;
    wait_for_requests(&slow, 1).await;

    let path = "/webhooks/slow/deliveries/evt_session.started_a/retry";
    let res = post(&app, path, &json!({})).await;
    assert_eq!(res.status(), 200);

    let sent = wait_for_requests(&slow, 2).await;
    let ids: Vec<Value> = sent.iter().map(|r| envelope(r)["id"].clone()).collect();
    assert_eq!(ids, ["evt_session.started_a", "evt_session.started_a"]);
    // The second failure ends it; then a's end, which waited behind its start, is tried.
    wait_for_requests(&slow, 3).await;
    let shown = "/api/v1/webhooks/slow/deliveries/evt_session.started_a";
    let shown: Value = app.get(shown, Some(TOKEN)).await.json().await.unwrap();
    assert_eq!(shown["delivery"]["state"], "failed", "{shown}");
    assert_eq!(
        shown["delivery"]["attempts"], 1,
        "counted from the retry: {shown}"
    );
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 2, "{shown}");
}
