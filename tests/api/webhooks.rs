//! Signed webhooks (docs/webhooks.md): sessions played through the callbacks (chapter 6.2
//! enter, 6.3 quit) reach a receiver in the suite, a wiremock server recording every
//! request, and every delivery is verified by the Standard Webhooks reference library
//! (`standardwebhooks`, pinned in tools/standardwebhooks/requirements.txt), a verifier
//! nobody here wrote.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::backend_tests;
use crate::helpers::*;
use crate::metrics::{scrape, value};

backend_tests!(
    played_sessions_6_2_6_3_reach_the_endpoint_in_order_verified_with_either_secret,
    an_endpoint_failing_its_first_attempts_gets_the_same_ids_again,
    a_dead_endpoint_does_not_delay_a_live_one,
    faulty_endpoints_end_failed_with_their_reason_and_no_worker_sticks,
    a_payload_over_the_bound_fails_at_once_unsent,
    a_disabled_endpoint_keeps_its_deliveries_without_a_backlog_to_alert_on,
    a_playing_session_sends_its_ticks_and_none_after_its_quit,
);

// Replicas share one database on PostgreSQL only (SQLite serves one process).
#[test]
fn two_replicas_on_postgres_deliver_each_event_once() {
    crate::helpers::run_scenario("two_replicas_on_postgres_deliver_each_event_once", async {
        if postgres_available() {
            two_replicas_deliver_each_event_once(Backend::Postgres).await
        }
    })
}

/// Migration 0036, through two replicas on one PostgreSQL database.
#[test]
fn an_endpoint_one_replica_lacks_still_gets_every_event_on_postgres() {
    crate::helpers::run_scenario(
        "an_endpoint_one_replica_lacks_still_gets_every_event_on_postgres",
        async {
            if postgres_available() {
                an_endpoint_one_replica_lacks_still_gets_every_event().await
            }
        },
    )
}

pub(crate) const OLD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Unpadded base64 (the key is 26 bytes: `=` would end it). The reference library pads what
/// it is given, so such secrets are handed out; cphub used to refuse to start on one.
pub(crate) const NEW_SECRET: &str = "whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24";

/// `[webhooks]` with one endpoint per `(name, url)`, both secrets signing side by side,
/// immediate retries and a quick poll.
pub(crate) fn webhooks(endpoints: &[(&str, String)], extra: &str) -> String {
    let tables: Vec<String> = endpoints
        .iter()
        .map(|(name, url)| {
            format!(
                "{{ name = \"{name}\", url = \"{url}\", \
                 secrets = [\"{OLD_SECRET}\", \"{NEW_SECRET}\"] }}"
            )
        })
        .collect();
    format!(
        "[webhooks]\nendpoints = [{}]\npoll_interval_ms = 50\n{extra}",
        tables.join(", ")
    )
}

pub(crate) async fn receiver(answer: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(answer)
        .mount(&server)
        .await;
    server
}

pub(crate) fn hook_url(server: &MockServer) -> String {
    format!("{}/hook", server.uri())
}

/// Plays `sessions` on their own phones: enter at 19:00:00, quit ten minutes later.
pub(crate) async fn play(app: &TestApp, sessions: &[&str]) {
    for (i, session) in sessions.iter().enumerate() {
        let phone = format!("phone-{i}");
        app.send_event(&enter(session, &phone, "2026-12-01T19:00:00Z"))
            .await;
        app.send_event(&quit(session, &phone, "2026-12-01T19:10:00Z", 600))
            .await;
    }
}

/// Waits until `server` has recorded at least `n` requests (the dispatcher polls).
pub(crate) async fn wait_for_requests(server: &MockServer, n: usize) -> Vec<Request> {
    for _ in 0..600 {
        let received = server.received_requests().await.unwrap();
        if received.len() >= n {
            return received;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the endpoint did not receive {n} requests");
}

fn deliveries(endpoint: &str, result: &str) -> String {
    format!("cphub_webhook_deliveries_total{{endpoint=\"{endpoint}\",result=\"{result}\"}}")
}

/// Scrapes until `series` reaches `at_least` (the counters move after the answer).
async fn wait_for_metric(app: &TestApp, series: &str, at_least: f64) -> HashMap<String, f64> {
    for _ in 0..200 {
        let samples = scrape(app).await;
        if value(&samples, series) >= at_least {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never reached {at_least}");
}

pub(crate) fn envelope(request: &Request) -> Value {
    serde_json::from_slice(&request.body).expect("a JSON envelope")
}

/// Runs tools/standardwebhooks/verify.py on every request with `secret`: panics unless
/// the reference library verifies them all.
pub(crate) async fn verify_with_reference_library(requests: &[Request], secret: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/python-venv creates it from tools/*/requirements.txt",
        python.display()
    );
    let deliveries: Vec<Value> = (requests.iter())
        .map(|r| {
            let header = |name: &str| r.headers.get(name).unwrap().to_str().unwrap().to_owned();
            json!({
                "secret": secret,
                "headers": {"webhook-id": header("webhook-id"),
                            "webhook-timestamp": header("webhook-timestamp"),
                            "webhook-signature": header("webhook-signature")},
                "body": String::from_utf8(r.body.clone()).unwrap(),
            })
        })
        .collect();
    let script = root.join("tools/standardwebhooks/verify.py");
    let output = tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        serde_json::to_writer(stdin, &deliveries).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "standardwebhooks refused: {said}");
}

async fn played_sessions_6_2_6_3_reach_the_endpoint_in_order_verified_with_either_secret(
    backend: Backend,
) {
    let server = receiver(ResponseTemplate::new(204)).await;
    let config = webhooks(&[("billing", hook_url(&server))], "");
    let app = TestApp::spawn_with(backend, &config).await;

    play(&app, &["s-1", "s-2"]).await;
    let requests = wait_for_requests(&server, 4).await;

    verify_with_reference_library(&requests, OLD_SECRET).await;
    verify_with_reference_library(&requests, NEW_SECRET).await;
    let envelopes: Vec<Value> = requests.iter().map(envelope).collect();
    for session in ["s-1", "s-2"] {
        let ids: Vec<&str> = (envelopes.iter())
            .filter(|e| e["data"]["session_id"] == session)
            .map(|e| e["id"].as_str().unwrap())
            .collect();
        let expected = [
            format!("evt_session.started_{session}"),
            format!("evt_session.ended_{session}"),
        ];
        assert_eq!(ids, expected, "exactly these, in this order");
    }
    let ended = (envelopes.iter())
        .find(|e| e["id"] == "evt_session.ended_s-1")
        .unwrap();
    assert_eq!(ended["type"], "session.ended");
    assert_eq!(
        ended["data"]["started_at"], "2026-12-01T19:00:00Z",
        "{ended}"
    );
    assert_eq!(ended["data"]["ended_at"], "2026-12-01T19:10:00Z");
    assert_eq!(
        (
            &ended["data"]["duration_seconds"],
            &ended["data"]["billable_minutes"]
        ),
        (&json!(600), &json!(10))
    );
    assert_eq!(ended["data"]["end_reason"], "quit");
    let header = |r: &Request| {
        r.headers
            .get("webhook-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        header(&requests[0]),
        envelopes[0]["id"],
        "webhook-id is the event id"
    );
    assert_eq!(requests.len(), 4, "nothing else sent");
}

async fn an_endpoint_failing_its_first_attempts_gets_the_same_ids_again(backend: Backend) {
    let server = MockServer::start().await;
    // Two failures for every event before it is taken: a 500, then a 429.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("down"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(2)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(3)
        .mount(&server)
        .await;
    let config = webhooks(
        &[("billing", hook_url(&server))],
        "retry_schedule_secs = [0, 0, 0, 0, 0]\nconcurrency = 1\n",
    );
    let app = TestApp::spawn_with(backend, &config).await;

    play(&app, &["s-1"]).await;
    wait_for_requests(&server, 6).await;
    // Anything sent after the sixth would be a duplicate: give it a poll to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let requests = server.received_requests().await.unwrap();

    let ids: Vec<String> = (requests.iter())
        .map(|r| envelope(r)["id"].as_str().unwrap().to_owned())
        .collect();
    let statuses: Vec<u16> = [500, 500, 429, 429, 200, 200].to_vec();
    let mut expected = vec!["evt_session.started_s-1"; 5];
    expected.push("evt_session.ended_s-1");
    assert_eq!(
        ids, expected,
        "answered {statuses:?}: the start again under its id until taken, then the end"
    );
    let samples = wait_for_metric(&app, &deliveries("billing", "delivered"), 2.0).await;
    assert_eq!(value(&samples, &deliveries("billing", "retried")), 4.0);
    assert!(
        samples.contains_key(&deliveries("billing", "failed")),
        "exported at 0"
    );
    let in_a_row = "cphub_webhook_failures_in_a_row{endpoint=\"billing\"}";
    assert_eq!(value(&samples, in_a_row), 0.0, "reset by the success");

    let shown = app
        .cli(&["webhooks", "show", "billing", "evt_session.started_s-1"])
        .await;
    assert!(shown.status.success(), "{shown:?}");
    let shown: Value = serde_json::from_slice(&shown.stdout).unwrap();
    let statuses_seen: Vec<&Value> = (shown["attempts"].as_array().unwrap().iter())
        .map(|a| &a["status"])
        .collect();
    assert_eq!(
        statuses_seen,
        [500, 500, 429, 429, 200]
            .map(|s| json!(s))
            .iter()
            .collect::<Vec<_>>()
    );
    assert_eq!(
        shown["attempts"][0]["response"], "down",
        "the answer's excerpt"
    );
    assert_eq!(shown["delivery"]["state"], "delivered");
    let retried = app
        .cli(&["webhooks", "retry", "billing", "evt_session.ended_s-1"])
        .await;
    assert!(retried.status.success(), "{retried:?}");
    let again = wait_for_requests(&server, 7).await;
    assert_eq!(
        envelope(&again[6])["id"],
        "evt_session.ended_s-1",
        "the same id"
    );
    let unknown = app.cli(&["webhooks", "retry", "billing", "evt_nope"]).await;
    assert!(!unknown.status.success());
    drop(app);
}

async fn a_dead_endpoint_does_not_delay_a_live_one(backend: Backend) {
    // The dead one accepts the connection and never answers within the test.
    let dead = receiver(ResponseTemplate::new(200).set_delay(Duration::from_secs(600))).await;
    let live = receiver(ResponseTemplate::new(200)).await;
    let config = webhooks(
        &[("dead", hook_url(&dead)), ("live", hook_url(&live))],
        "timeout_ms = 600000\nconcurrency = 1\n",
    );
    let app = TestApp::spawn_with(backend, &config).await;

    play(&app, &["s-1", "s-2", "s-3"]).await;
    let delivered = wait_for_requests(&live, 6).await;

    let at_dead = dead.received_requests().await.unwrap();
    let samples = scrape(&app).await;
    assert!(
        samples.contains_key(&deliveries("dead", "delivered")),
        "a configured endpoint's series exist from start"
    );
    assert_eq!(value(&samples, &deliveries("dead", "delivered")), 0.0);
    assert_eq!(delivered.len(), 6, "every event reached the live endpoint");
    assert!(
        at_dead.len() <= 1,
        "the dead endpoint's one worker is still waiting on its first request: {}",
        at_dead.len()
    );
    drop(app);
}

/// A server that answers every connection with bytes that are not HTTP, then hangs up.
async fn garbage_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket.write_all(b"\x00\x01 not http at all\r\n\r\n").await;
        }
    });
    format!("http://{address}/hook")
}

/// The failed deliveries as `cphub webhooks list --state failed` shows them, once there
/// are `n` (each endpoint's worker went through all of its own).
async fn wait_for_failed(app: &TestApp, n: usize) -> Vec<Value> {
    for _ in 0..300 {
        let out = app
            .cli(&["webhooks", "list", "--state", "failed", "--format", "json"])
            .await;
        assert!(out.status.success(), "{out:?}");
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {n} deliveries failed");
}

async fn faulty_endpoints_end_failed_with_their_reason_and_no_worker_sticks(backend: Backend) {
    let redirect =
        receiver(ResponseTemplate::new(302).insert_header("location", "http://elsewhere/")).await;
    let slow = receiver(ResponseTemplate::new(200).set_delay(Duration::from_secs(30))).await;
    // An answer with NUL bytes (a binary or compressed body): PostgreSQL's text refused the
    // attempt's excerpt, and the claim was sent again for good, never recorded.
    let binary =
        receiver(ResponseTemplate::new(500).set_body_bytes(b"\x1f\x8b\x00\x00 gz".to_vec())).await;
    let endpoints = [
        ("redirect", hook_url(&redirect)),
        ("garbage", garbage_server().await),
        (
            "unresolvable",
            // A credential in the URL never reaches the recorded reason.
            "http://cphub-webhook-test.invalid/hook?token=hook-credential".to_owned(),
        ),
        ("slow", hook_url(&slow)),
        ("binary", hook_url(&binary)),
    ];
    // One attempt each: every fault ends the delivery failed at once.
    let config = webhooks(&endpoints, "retry_schedule_secs = [0]\ntimeout_ms = 300\n");
    let app = TestApp::spawn_with(backend, &config).await;

    play(&app, &["s-1"]).await;
    let failed = wait_for_failed(&app, 10).await;

    let reason = |endpoint: &str| -> Vec<String> {
        (failed.iter())
            .filter(|d| d["endpoint"] == endpoint)
            .map(|d| d["last_error"].as_str().unwrap().to_owned())
            .collect()
    };
    for (endpoint, expected) in [
        ("redirect", "redirect to \"http://elsewhere/\" not followed"),
        ("garbage", "no answer"),
        ("unresolvable", "no answer"),
        ("slow", "no answer"),
        ("binary", "HTTP 500"),
    ] {
        let reasons = reason(endpoint);
        assert_eq!(reasons.len(), 2, "{endpoint}: started and ended both tried");
        assert!(
            reasons.iter().all(|r| r.contains(expected)),
            "{endpoint}: {reasons:?}"
        );
        assert!(
            reasons.iter().all(|r| !r.contains("hook-credential")),
            "{endpoint}: {reasons:?}"
        );
    }
    let slow_reasons = reason("slow");
    assert!(
        slow_reasons[0].contains("timed out") || slow_reasons[0].contains("timeout"),
        "{slow_reasons:?}"
    );
    assert_eq!(
        redirect.received_requests().await.unwrap().len(),
        2,
        "not followed"
    );
}

async fn a_payload_over_the_bound_fails_at_once_unsent(backend: Backend) {
    let server = receiver(ResponseTemplate::new(200)).await;
    // A long schedule: a payload that will not shrink must not wait for it.
    let config = webhooks(
        &[("billing", hook_url(&server))],
        "max_payload_bytes = 100\nretry_schedule_secs = [0, 3600]\n",
    );
    let app = TestApp::spawn_with(backend, &config).await;

    play(&app, &["s-1"]).await;
    let failed = wait_for_failed(&app, 2).await;

    assert!(
        (failed.iter()).all(|d| d["last_error"]
            .as_str()
            .unwrap()
            .contains("over webhooks.max_payload_bytes (100)")),
        "{failed:?}"
    );
    assert!(failed.iter().all(|d| d["attempts"] == 1));
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
}

async fn two_replicas_deliver_each_event_once(backend: Backend) {
    let server = receiver(ResponseTemplate::new(200)).await;
    let config = webhooks(&[("billing", hook_url(&server))], "concurrency = 4\n");
    let a = TestApp::spawn_with(backend, &config).await;
    let b = TestApp::spawn_on(a.db.same_database(), &config).await;
    let sessions: Vec<String> = (0..12).map(|i| format!("s-{i}")).collect();

    for (i, session) in sessions.iter().enumerate() {
        let (app, phone) = (if i % 2 == 0 { &a } else { &b }, format!("phone-{i}"));
        app.send_event(&enter(session, &phone, "2026-12-01T19:00:00Z"))
            .await;
        app.send_event(&quit(session, &phone, "2026-12-01T19:10:00Z", 600))
            .await;
    }
    wait_for_requests(&server, 24).await;
    // A duplicate would come from the other replica's next claims: give them a few polls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests = server.received_requests().await.unwrap();

    let mut ids: Vec<String> = (requests.iter())
        .map(|r| envelope(r)["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 24, "every event");
    assert_eq!(requests.len(), 24, "each once");
}

/// The runbook's advice for a receiver away for long is `enabled = false`: its deliveries
/// wait, kept, and `WebhookBacklog` must not fire for them meanwhile (its gauge reads 0),
/// while an enabled endpoint that does not answer is behind as before.
async fn a_disabled_endpoint_keeps_its_deliveries_without_a_backlog_to_alert_on(backend: Backend) {
    let silent = receiver(ResponseTemplate::new(200).set_delay(Duration::from_secs(600))).await;
    let config = format!(
        "[webhooks]\npoll_interval_ms = 50\ntimeout_ms = 600000\nendpoints = [\
         {{ name = \"away\", url = \"{url}\", secrets = [\"{OLD_SECRET}\"], enabled = false }}, \
         {{ name = \"stuck\", url = \"{url}\", secrets = [\"{OLD_SECRET}\"] }}]\n",
        url = hook_url(&silent)
    );
    let app = TestApp::spawn_with(backend, &config).await;

    play(&app, &["s-1"]).await;
    let behind = "cphub_webhook_oldest_undelivered_seconds{endpoint=\"stuck\"}";
    let samples = wait_for_metric(&app, behind, 2.0).await;

    let away = "cphub_webhook_oldest_undelivered_seconds{endpoint=\"away\"}";
    assert_eq!(samples.get(away), Some(&0.0), "{samples:?}");
    let pending = app
        .get(
            "/api/v1/webhooks/deliveries?endpoint=away&state=pending",
            Some(TOKEN),
        )
        .await;
    let pending: Value = pending.json().await.unwrap();
    let pending = pending["deliveries"].as_array().unwrap();
    assert_eq!(pending.len(), 2, "both events kept for it: {pending:?}");
}

/// A rolling deploy adding an endpoint: the replica with the new configuration ran with
/// `audit` (and went down, as replicas do in a rolling restart) while one still on the old
/// configuration, without it, fans out every event played meanwhile. A fan-out marks a row
/// done for every endpoint at once: `audit` never got those events. It now gets each of
/// them once the replica running with it is back.
async fn an_endpoint_one_replica_lacks_still_gets_every_event() {
    let (billing, audit) = (
        receiver(ResponseTemplate::new(200)).await,
        receiver(ResponseTemplate::new(200)).await,
    );
    let both = webhooks(
        &[("billing", hook_url(&billing)), ("audit", hook_url(&audit))],
        "",
    );
    let old = webhooks(&[("billing", hook_url(&billing))], "");
    let new = TestApp::spawn_with(Backend::Postgres, &both).await;
    let mut conn = sqlx_connect(&new.db.url).await;
    for _ in 0..300 {
        let sql =
            "SELECT count(*) FROM webhook_endpoints WHERE name = 'audit' AND seen_at IS NOT NULL";
        let seen: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = new.stop().await;

    let behind = TestApp::spawn_on(db.same_database(), &old).await;
    play(&behind, &["s-1", "s-2", "s-3"]).await;
    wait_for_requests(&billing, 6).await;
    let _back = TestApp::spawn_on(db, &both).await;

    let received = wait_for_requests(&audit, 6).await;
    let mut ids: Vec<String> = (received.iter())
        .map(|r| envelope(r)["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        6,
        "every event played while the replica was down"
    );
}

/// `session.tick` (docs/webhooks.md), through the dispatcher: every `tick_interval_secs`
/// of a playing session the endpoint gets its latest tick, `n × interval` after the start,
/// and none once the session has ended. No test sent a tick through cphub before.
async fn a_playing_session_sends_its_ticks_and_none_after_its_quit(backend: Backend) {
    let server = receiver(ResponseTemplate::new(200)).await;
    let config = webhooks(
        &[("billing", hook_url(&server))],
        "tick_interval_secs = 1\n",
    );
    let app = TestApp::spawn_with(backend, &config).await;
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    app.send_event(&enter("s-1", "p-1", &now())).await;

    let ticks = async || {
        let received = server.received_requests().await.unwrap();
        let envelopes = received.iter().map(envelope);
        envelopes
            .filter(|e| e["type"] == "session.tick")
            .collect::<Vec<Value>>()
    };
    for _ in 0..300 {
        if ticks()
            .await
            .iter()
            .any(|t| t["data"]["tick"].as_i64() >= Some(2))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let playing = ticks().await;
    let latest = playing.last().expect("a tick while playing");
    assert_eq!(
        latest["id"],
        format!("evt_session.tick_s-1_{}", latest["data"]["tick"])
    );
    let tick = latest["data"]["tick"].as_i64().unwrap();
    assert!(tick >= 2, "{latest}");
    assert_eq!(latest["data"]["seconds_played"], tick);

    app.send_event(&quit("s-1", "p-1", &now(), tick + 1)).await;
    let mut ended_at = None;
    for _ in 0..300 {
        let received = server.received_requests().await.unwrap();
        ended_at = received
            .iter()
            .position(|r| envelope(r)["type"] == "session.ended");
        if ended_at.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ended_at = ended_at.expect("the session ended");
    // Two tick passes later, nothing has followed the end.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let after = server.received_requests().await.unwrap();
    let late = after[ended_at + 1..].iter().map(envelope);
    let late: Vec<Value> = late.filter(|e| e["type"] == "session.tick").collect();
    assert!(late.is_empty(), "ticks after the end: {late:?}");
}
