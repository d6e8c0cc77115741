//! `GET /metrics`: valid Prometheus text, counters that move with what is sent, route
//! patterns instead of raw paths, and an optional listener of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestDb, WriteLock, enter, heartbeat, poll_until, quit};

/// Parses the text exposition format strictly enough to catch malformed output:
/// `name{label="value",…} number` per sample, `# HELP`/`# TYPE` comments.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                comment.starts_with("HELP ") || comment.starts_with("TYPE "),
                "bad comment: {line}"
            );
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "bad labels: {line}"
            );
        }
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

pub(crate) async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let res = app.get("/metrics", None).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    parse(&res.text().await.unwrap())
}

pub(crate) fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

async fn counters_move_with_what_is_sent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let before = scrape(&app).await;

    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    app.send_event(&enter("s-2", "p-2", "2026-11-28T10:00:00Z"))
        .await;
    app.send_event(&quit("s-1", "p-1", "2026-11-28T10:30:00Z", 1800))
        .await;
    app.send_heartbeat(&heartbeat("p-2", Some("s-2"), "2026-11-28T10:00:05Z"))
        .await;
    app.post("/cph/events", "{").await;
    app.wait_for_phone("p-2", |p| !p["last_seen_at"].is_null())
        .await;
    let after = scrape(&app).await;

    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        delta(r#"cphub_events_total{outcome="accepted",type="enter"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"cphub_events_total{outcome="duplicate",type="enter"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"cphub_events_total{outcome="accepted",type="quit"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"cphub_sessions_started_total{app_id="com.example.game"}"#),
        2.0
    );
    assert_eq!(
        delta(r#"cphub_sessions_ended_total{app_id="com.example.game",reason="quit"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"cphub_session_duration_seconds_count{app_id="com.example.game"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"cphub_session_duration_seconds_bucket{app_id="com.example.game",le="1800"}"#),
        1.0
    );
    assert_eq!(
        delta(r#"cphub_session_duration_seconds_bucket{app_id="com.example.game",le="1200"}"#),
        0.0
    );
    assert_eq!(delta("cphub_heartbeats_total"), 1.0);
    assert_eq!(
        value(
            &after,
            r#"cphub_sessions_active{app_id="com.example.game"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&after, r#"cphub_phones{state="occupied"}"#),
        1.0,
        "p-2 plays s-2"
    );
    assert_eq!(
        value(&after, r#"cphub_phones{state="stale"}"#),
        1.0,
        "p-1 never heartbeated"
    );
    // Routes are patterns with the base path hidden, never raw paths.
    assert!(
        delta(
            r#"cphub_http_requests_total{method="POST",route="{base_path}/events",status="200"}"#
        ) >= 4.0
    );
    assert_eq!(
        delta(
            r#"cphub_http_requests_total{method="POST",route="{base_path}/events",status="400"}"#
        ),
        1.0
    );
    assert!(
        after.keys().all(|series| !series.contains("/cph/")),
        "raw paths leaked into labels"
    );
}

async fn sign_checks_are_counted_by_result(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1"]).await;
    let minted = app
        .mint_ok(&json!({"app_id": "game", "user_id": "u-1"}))
        .await;
    let check = |ticket: &serde_json::Value| json!({"session_id": minted["session_id"], "ticket": ticket, "auth_ts": minted["auth_ts"]});

    app.sign_check(&check(&json!("wrong"))).await;
    app.sign_check(&check(&minted["ticket"])).await;
    app.sign_check(&check(&minted["ticket"])).await;
    let samples = scrape(&app).await;

    assert_eq!(
        value(&samples, r#"cphub_sign_checks_total{result="bad_ticket"}"#),
        1.0
    );
    assert_eq!(
        value(&samples, r#"cphub_sign_checks_total{result="ok"}"#),
        1.0
    );
    assert_eq!(
        value(&samples, r#"cphub_sign_checks_total{result="retry"}"#),
        1.0
    );
    assert_eq!(value(&samples, r#"cphub_phones{state="allocated"}"#), 1.0);
}

async fn per_app_labels_can_be_folded(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[metrics]\nper_app_labels = false").await;

    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;

    let samples = scrape(&app).await;
    assert_eq!(
        value(&samples, r#"cphub_sessions_started_total{app_id="all"}"#),
        1.0
    );
    assert!(samples.keys().all(|s| !s.contains("com.example.game")));
}

async fn metrics_can_have_a_listener_of_their_own(backend: Backend) {
    let port = crate::watchdog::free_port();
    let app = TestApp::spawn_with(
        backend,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\""),
    )
    .await;

    let separate = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap();

    assert_eq!(separate.status(), 200);
    assert!(
        separate
            .text()
            .await
            .unwrap()
            .contains("cphub_heartbeats_total")
    );
    assert_eq!(app.get("/metrics", None).await.status(), 404);
}

/// The metric names of docs/metrics.md's tables (the first column), so the doc and the
/// exporter cannot drift apart.
fn documented_metrics() -> Vec<String> {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
    let names: Vec<String> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_owned())
        .collect();
    assert!(names.len() > 30, "docs/metrics.md lists only {names:?}");
    names
}

/// The metric names of a scrape: histograms by their base name.
fn exported_names(samples: &HashMap<String, f64>) -> std::collections::HashSet<String> {
    let strip = |name: &str| {
        ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name)
            .to_owned()
    };
    samples
        .keys()
        .flat_map(|series| {
            let name = series.split('{').next().unwrap();
            [name.to_owned(), strip(name)]
        })
        .collect()
}

/// Issue #20: a freshly started `cphub serve`, asked nothing yet, already exports every
/// documented series (with a webhook endpoint and the CPH API configured, whose series are
/// labelled by them, and `app_id` folded to "all"). The HTTP request series are the
/// documented exception: a route's status is known only once it answered.
async fn a_fresh_binary_exports_every_documented_series(backend: Backend) {
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cphub.toml");
    std::fs::write(
        &file,
        "[metrics]\nper_app_labels = false\n\
         [cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"p\"\n\
         [cph.auth]\nak = \"AK\"\nsk = \"SK\"\n\
         [[webhooks.endpoints]]\nname = \"billing\"\nurl = \"http://127.0.0.1:9/hook\"\n\
         secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n",
    )
    .unwrap();
    let mut cmd = crate::binary::cphub(&db);
    cmd.arg("--config").arg(&file);
    let served = crate::binary::start_serve(&mut cmd);

    let text = reqwest::get(format!("{}/metrics", served.address))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    crate::binary::stop(served.child).await;

    let exported = exported_names(&parse(&text));
    let missing: Vec<_> = documented_metrics()
        .into_iter()
        .filter(|name| !name.starts_with("cphub_http_request"))
        .filter(|name| !exported.contains(name))
        .collect();
    assert!(missing.is_empty(), "not exported at start: {missing:?}");
    let samples = parse(&text);
    let build = samples
        .iter()
        .find(|(series, _)| series.starts_with("cphub_build_info{"))
        .expect("cphub_build_info");
    assert_eq!(*build.1, 1.0);
    assert!(
        build
            .0
            .contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
    );
}

/// Issue #20: an app's series, once seen, read 0 when its last session ends instead of
/// disappearing (which would leave a dashboard on "no data" and an alert on nothing).
async fn an_apps_series_stay_at_zero_after_its_last_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let active = r#"cphub_sessions_active{app_id="com.example.game"}"#;

    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    assert_eq!(scrape(&app).await.get(active), Some(&1.0));
    app.send_event(&quit("s-1", "p-1", "2026-11-28T10:30:00Z", 1800))
        .await;

    let samples = scrape(&app).await;
    assert_eq!(samples.get(active), Some(&0.0), "{active} absent or not 0");
    assert_eq!(
        samples.get(r#"cphub_queue_length{app_id="com.example.game"}"#),
        Some(&0.0)
    );
}

/// Scrapes until `check` holds (flushes run every 50 ms in the tests; one held back is
/// written 6 s after it arrived), and returns that scrape.
async fn scrape_until(
    app: &TestApp,
    what: &str,
    check: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let every = Duration::from_millis(25);
    let fetch = || scrape(app);
    match poll_until(600, every, Duration::from_secs(60), fetch, check).await {
        Ok(samples) => samples,
        Err(last) => panic!("never {what}; last scrape: {last:?}"),
    }
}

const WRITTEN: &str = "cphub_heartbeats_written_total";
const HELD_BACK: &str = "cphub_heartbeats_held_back";
const FLUSHES: &str = "cphub_heartbeat_flush_seconds_count";
const FAILED: &str = "cphub_heartbeat_flush_failures_total";

/// The flush reports what it wrote and held back: a phone's first heartbeat is written, the
/// next one 5 s later says nothing new and is held back (`store::Unchanged`, 5 s interval,
/// 3 misses), and written once 6 s pass without a newer one. A flush with nothing due is
/// not counted as one.
async fn heartbeat_flushes_are_counted_with_what_they_write_and_hold_back(backend: Backend) {
    let clock = Arc::new(ManualClock::new(
        UtcTime::parse("t", "2026-11-28T12:00:00Z").unwrap(),
    ));
    let app = TestApp::spawn_with_clock(backend, "", Arc::clone(&clock)).await;
    app.send_heartbeat(&heartbeat("p-1", None, "2026-11-28T12:00:00Z"))
        .await;
    let first = scrape_until(&app, "written", |s| value(s, WRITTEN) == 1.0).await;
    assert_eq!(value(&first, FLUSHES), 1.0);
    assert_eq!(value(&first, HELD_BACK), 0.0);

    clock.advance(Duration::from_secs(5));
    app.send_heartbeat(&heartbeat("p-1", None, "2026-11-28T12:00:05Z"))
        .await;
    let held = scrape_until(&app, "held back", |s| value(s, HELD_BACK) == 1.0).await;
    assert_eq!(value(&held, WRITTEN), 1.0, "no news: not written");
    assert_eq!(value(&held, FLUSHES), 1.0, "nothing was due");
    assert_eq!(value(&held, "cphub_heartbeats_total"), 2.0);

    clock.advance(Duration::from_secs(6));
    let quiet = scrape_until(&app, "released", |s| value(s, WRITTEN) == 2.0).await;
    assert_eq!(value(&quiet, HELD_BACK), 0.0);
    assert_eq!(value(&quiet, FLUSHES), 2.0);
    assert_eq!(value(&quiet, FAILED), 0.0);
    let phone = app.phone("p-1").await.expect("p-1");
    assert_eq!(phone["last_seen_at"], "2026-11-28T12:00:05Z");
}

/// A flush the database does not take in time (another client holds the write lock past
/// `database.write_timeout_ms`) is counted as failed, with its duration; its heartbeat
/// waits in memory and is written once the lock is gone.
async fn a_heartbeat_flush_the_database_holds_up_is_counted_and_written_later(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[database]\nwrite_timeout_ms = 300\n").await;
    let lock = WriteLock::take_phones_letting_reads(&app.db).await;
    app.send_heartbeat(&heartbeat("p-1", None, "2026-11-28T12:00:00Z"))
        .await;
    let failed = scrape_until(&app, "failed", |s| value(s, FAILED) >= 1.0).await;
    assert_eq!(value(&failed, WRITTEN), 0.0);
    assert!(app.phone("p-1").await.is_none(), "not written yet");
    // Each failed flush waited the whole 300 ms limit: none is in the 250 ms bucket.
    let within_250ms = r#"cphub_heartbeat_flush_seconds_bucket{le="0.25"}"#;
    assert_eq!(value(&failed, within_250ms), 0.0);

    lock.release().await;
    let after = scrape_until(&app, "written", |s| value(s, WRITTEN) == 1.0).await;
    assert!(value(&after, FLUSHES) >= value(&after, FAILED) + 1.0);
    assert!(app.phone("p-1").await.is_some());
}

backend_tests!(
    a_fresh_binary_exports_every_documented_series,
    an_apps_series_stay_at_zero_after_its_last_session,
    counters_move_with_what_is_sent,
    sign_checks_are_counted_by_result,
    per_app_labels_can_be_folded,
    metrics_can_have_a_listener_of_their_own,
    heartbeat_flushes_are_counted_with_what_they_write_and_hold_back,
    a_heartbeat_flush_the_database_holds_up_is_counted_and_written_later,
);
