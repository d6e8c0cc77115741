//! Issue #20, traces: with `telemetry.otlp_endpoint` set, `cphub serve` exports its spans
//! over OTLP/HTTP (JSON) to a receiver run by the test, and a webhook delivery carries the
//! W3C `traceparent` of the span it was sent in.

use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::backend_tests;
use crate::binary::{cphub, start_serve, stop};
use crate::helpers::{Backend, TestDb, enter, heartbeat};
use crate::webhooks::{OLD_SECRET, hook_url, receiver, wait_for_requests};

/// Every span of every export request, flattened out of resourceSpans/scopeSpans.
fn spans(bodies: &[Vec<u8>]) -> Vec<Value> {
    let mut all = Vec::new();
    for body in bodies {
        let export: Value = serde_json::from_slice(body).expect("OTLP/HTTP JSON");
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                all.extend(scope["spans"].as_array().into_iter().flatten().cloned());
            }
        }
    }
    all
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let attributes = span["attributes"].as_array()?;
    let found = attributes.iter().find(|a| a["key"] == key)?;
    Some(&found["value"]["stringValue"])
}

/// W3C Trace Context: version 00, a 32-hex trace id, a 16-hex parent id, 2-hex flags.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.chars().all(|c| c.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "0".repeat(32)
}

/// An OTLP/HTTP receiver that takes every export.
async fn collector() -> MockServer {
    let collector = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/traces"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    collector
}

async fn a_callbacks_spans_reach_an_otlp_receiver_and_webhooks_carry_traceparent(backend: Backend) {
    let collector = collector().await;
    let hooks = receiver(ResponseTemplate::new(204)).await;
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cphub.toml");
    let config = format!(
        "[telemetry]\notlp_endpoint = \"{}\"\n\
         [webhooks]\npoll_interval_ms = 50\n\
         endpoints = [{{ name = \"hooks\", url = \"{}\", secrets = [\"{OLD_SECRET}\"] }}]\n",
        collector.uri(),
        hook_url(&hooks),
    );
    std::fs::write(&file, config).unwrap();
    let mut cmd = cphub(&db);
    cmd.arg("--config").arg(&file);
    let served = start_serve(&mut cmd);

    let body = enter("s-traced", "p-traced", "2026-12-01T19:00:00Z").to_string();
    let res = reqwest::Client::new()
        .post(format!("{}/cph/events", served.address))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let delivered = wait_for_requests(&hooks, 1).await;
    // Stopping flushes the exporter's batch: every span is at the receiver after it.
    assert!(stop(served.child).await.success());

    let traceparent = delivered[0]
        .headers
        .get("traceparent")
        .map(|v| v.to_str().unwrap());
    assert!(
        traceparent.is_some_and(is_traceparent),
        "webhook traceparent: {traceparent:?}"
    );
    let bodies: Vec<Vec<u8>> = collector
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.body)
        .collect();
    let spans = spans(&bodies);
    let event = spans
        .iter()
        .find(|s| attribute(s, "session_id").is_some_and(|v| v == "s-traced"))
        .unwrap_or_else(|| panic!("no span with the session id among {spans:#?}"));
    assert_eq!(attribute(event, "phone_id").unwrap(), "p-traced");
    // The handler's span is a child of the request's, in the same trace.
    let request = spans
        .iter()
        .find(|s| s["spanId"] == event["parentSpanId"])
        .expect("the request span, parent of the event's");
    assert_eq!(request["name"], "HTTP request");
    assert_eq!(request["traceId"], event["traceId"]);
    assert_eq!(attribute(request, "client.address").unwrap(), "127.0.0.1");
    // And the request's own span names the session and phone (#20: one span per request
    // with the session and phone ids).
    assert_eq!(attribute(request, "session_id").unwrap(), "s-traced");
    assert_eq!(attribute(request, "phone_id").unwrap(), "p-traced");
    // The event's write to the book is a child of the handler's span.
    let write = spans
        .iter()
        .find(|s| s["name"] == "store write" && s["parentSpanId"] == event["spanId"])
        .unwrap_or_else(|| panic!("no store write under the event's span among {spans:#?}"));
    assert_eq!(attribute(write, "op").unwrap(), "event batch");
}

/// The routes of the request spans `serve` exported, with `rust_log` as its filter, after
/// one heartbeat (chapter 6.4) and one enter (6.2).
async fn request_span_routes(db: &TestDb, rust_log: Option<&str>) -> Vec<String> {
    let collector = collector().await;
    let mut cmd = cphub(db);
    cmd.env("CPHUB__TELEMETRY__OTLP_ENDPOINT", collector.uri());
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let served = start_serve(&mut cmd);
    let client = reqwest::Client::new();
    let post = |route: &str, body: Value| {
        let url = format!("{}/cph/{route}", served.address);
        client.post(url).json(&body).send()
    };
    let beat = heartbeat("p-flood", None, "2026-12-01T19:00:00Z");
    assert_eq!(post("heartbeat", beat).await.unwrap().status(), 200);
    let entered = enter("s-flood", "p-flood", "2026-12-01T19:00:01Z");
    assert_eq!(post("events", entered).await.unwrap().status(), 200);
    // Stopping flushes the exporter's batch: every span is at the receiver after it.
    assert!(stop(served.child).await.success());
    let requests = collector.received_requests().await.unwrap();
    let bodies: Vec<Vec<u8>> = requests.into_iter().map(|r| r.body).collect();
    let spans = spans(&bodies);
    let requests = spans.iter().filter(|s| s["name"] == "HTTP request");
    let routes = requests.filter_map(|s| attribute(s, "http.route")?.as_str());
    routes.map(str::to_owned).collect()
}

/// Heartbeats are the flood: at the default `info` their request span is not made (nor
/// exported), while every other request's is; at `debug` theirs is too.
async fn a_heartbeats_request_span_is_made_only_at_debug(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (heartbeats, events) = ("{base_path}/heartbeat", "{base_path}/events");
    let at_info = request_span_routes(&db, None).await;
    assert!(at_info.iter().any(|r| r == events), "{at_info:?}");
    assert!(!at_info.iter().any(|r| r == heartbeats), "{at_info:?}");
    let at_debug = request_span_routes(&db, Some("info,cphub::http::request_id=debug")).await;
    assert!(at_debug.iter().any(|r| r == events), "{at_debug:?}");
    assert!(at_debug.iter().any(|r| r == heartbeats), "{at_debug:?}");
}

backend_tests!(
    a_callbacks_spans_reach_an_otlp_receiver_and_webhooks_carry_traceparent,
    a_heartbeats_request_span_is_made_only_at_debug,
);
