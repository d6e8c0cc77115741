//! `GET /api/v1/usage` and `cphub usage`: figures equal to ones worked out by hand on a
//! fixture with day crossings, window crossings, an abandoned, an open, a direct-mode and a
//! quit-only session; days add up to the window; JSON, CSV and the CLI agree.

use std::sync::Arc;
use std::time::Duration;

use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error};

const APP_A: &str = "com.example.alpha";
const APP_B: &str = "com.example.bravo";

fn event(session: &str, phone: &str, app: &str, status: i64, time: &str, run_time: i64) -> Value {
    json!({
        "event_type": "app",
        "event": {"phone_id": phone, "status": status, "session_id": session, "time": time,
                  "app_id": app, "run_time": run_time, "error_msg": null}
    })
}

/// Mints a session for `user` on `phone` (so it has a user), returns its id. The phone is
/// made known by an idle heartbeat sent, by its clock, before the fixture's sessions: a
/// later one would say (chapter 6.4) that none of them is running, and the watchdog would
/// close them as abandoned.
async fn minted(app: &TestApp, app_id: &str, user: &str, phone: &str) -> String {
    let idle = crate::helpers::heartbeat(phone, None, "2026-10-31T00:00:00Z");
    app.send_heartbeat(&idle).await;
    app.wait_for_phone(phone, |p| !p["last_seen_at"].is_null())
        .await;
    let body = json!({"app_id": app_id, "user_id": user, "phone_id": phone});
    app.mint_ok(&body).await["session_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn play(app: &TestApp, s: &str, phone: &str, app_id: &str, span: (&str, &str), run: i64) {
    app.send_event(&event(s, phone, app_id, 0, span.0, 0)).await;
    app.send_event(&event(s, phone, app_id, 1, span.1, run))
        .await;
}

/// The fixture. Times are the phones' (event `time`), windows are 2026-11-01..03 UTC.
async fn fixture(backend: Backend) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(
        UtcTime::parse("t", "2026-11-28T00:00:00Z").unwrap(),
    ));
    // Sessions of silent phones are closed as abandoned with no control plane configured
    // (before, only the watchdog closed them, and it needed one).
    let overrides = "[watchdog]\ninterval_ms = 100\nstartup_grace_secs = 0\n";
    let app = TestApp::spawn_with_clock(backend, overrides, Arc::clone(&clock)).await;

    // s1: 20 min on day 1.
    let s1 = minted(&app, APP_A, "u1", "p-1").await;
    play(
        &app,
        &s1,
        "p-1",
        APP_A,
        ("2026-11-01T10:00:00Z", "2026-11-01T10:20:00Z"),
        1200,
    )
    .await;
    // s2: 1230 s across midnight: 600 s / 10 min on day 1, 630 s / 11 min on day 2.
    let s2 = minted(&app, APP_A, "u1", "p-2").await;
    play(
        &app,
        &s2,
        "p-2",
        APP_A,
        ("2026-11-01T23:50:00Z", "2026-11-02T00:10:30Z"),
        1230,
    )
    .await;
    // s3: 59 s, reported 300 s: a run_time mismatch (tolerance 60 s).
    let s3 = minted(&app, APP_B, "u2", "p-3").await;
    play(
        &app,
        &s3,
        "p-3",
        APP_B,
        ("2026-11-02T08:00:00Z", "2026-11-02T08:00:59Z"),
        300,
    )
    .await;
    // s6: began before the window: 60 s / 1 min inside it, not counted as a session.
    let s6 = minted(&app, APP_A, "u3", "p-6").await;
    play(
        &app,
        &s6,
        "p-6",
        APP_A,
        ("2026-10-31T23:59:00Z", "2026-11-01T00:01:00Z"),
        120,
    )
    .await;
    // s8: runs past the window's end: 30 s / 1 min inside it.
    let s8 = minted(&app, APP_B, "u2", "p-8").await;
    play(
        &app,
        &s8,
        "p-8",
        APP_B,
        ("2026-11-02T23:59:30Z", "2026-11-03T00:00:30Z"),
        60,
    )
    .await;
    // s9: direct mode (not minted, so no user): 1 s, billed as 1 minute.
    play(
        &app,
        "s9",
        "p-9",
        APP_B,
        ("2026-11-01T05:00:00Z", "2026-11-01T05:00:01Z"),
        1,
    )
    .await;
    // s7: only the quit arrived: nothing was measured, nothing is counted.
    app.send_event(&event("s7", "p-7", APP_B, 1, "2026-11-01T06:00:00Z", 600))
        .await;

    // s4: its phone goes silent 5 min in: abandoned at its last heartbeat, 300 s.
    let s4 = minted(&app, APP_B, "u2", "p-4").await;
    app.send_event(&event(&s4, "p-4", APP_B, 0, "2026-11-02T12:00:00Z", 0))
        .await;
    let hb = |phone: &str, s: &str, time: &str| {
        json!({"event_type": "heartbeat",
               "event": {"phone_id": phone, "app_id": APP_B, "session_id": s, "time": time}})
    };
    app.send_heartbeat(&hb("p-4", &s4, "2026-11-02T12:05:00Z"))
        .await;
    // s5: still playing: open, not billed yet. Its phone keeps heartbeating while p-4's
    // silence passes the 15 s staleness limit.
    let s5 = minted(&app, APP_A, "u1", "p-5").await;
    app.send_event(&event(&s5, "p-5", APP_A, 0, "2026-11-02T20:00:00Z", 0))
        .await;
    clock.advance(Duration::from_secs(10));
    app.send_heartbeat(&hb("p-5", &s5, "2026-11-02T20:00:10Z"))
        .await;
    // Heartbeats are flushed in batches: wait for this one to be in the store.
    app.wait_for_phone("p-5", |p| p["last_seen_at"] == "2026-11-28T00:00:10Z")
        .await;
    clock.advance(Duration::from_secs(10));
    app.wait_for_session(&s4, |s| s["state"] == "abandoned")
        .await;
    (app, clock)
}

async fn usage(app: &TestApp, query: &str) -> reqwest::Response {
    app.get(&format!("/api/v1/usage?{query}"), Some(TOKEN))
        .await
}

async fn usage_json(app: &TestApp, query: &str) -> Value {
    let res = usage(app, query).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn counts(
    sessions: i64,
    seconds: i64,
    minutes: i64,
    abandoned: i64,
    mismatch: i64,
    open: i64,
) -> Value {
    json!({"sessions": sessions, "seconds": seconds, "billable_minutes": minutes,
           "abandoned": abandoned, "run_time_mismatches": mismatch, "open_sessions": open})
}

fn row(keys: Value, figures: Value) -> Value {
    let mut row = keys;
    row.as_object_mut()
        .unwrap()
        .extend(figures.as_object().unwrap().clone());
    row
}

const WINDOW: &str = "from=2026-11-01&to=2026-11-03";

async fn usage_matches_the_hand_computed_fixture(backend: Backend) {
    let (app, _clock) = fixture(backend).await;

    let report = usage_json(&app, &format!("{WINDOW}&group_by=day,app,user")).await;

    let expected = json!([
        row(
            json!({"day": "2026-11-01", "app_id": APP_A, "user_id": "u1"}),
            counts(2, 1800, 30, 0, 0, 0)
        ),
        row(
            json!({"day": "2026-11-01", "app_id": APP_A, "user_id": "u3"}),
            counts(0, 60, 1, 0, 0, 0)
        ),
        row(
            json!({"day": "2026-11-01", "app_id": APP_B, "user_id": null}),
            counts(1, 1, 1, 0, 0, 0)
        ),
        row(
            json!({"day": "2026-11-02", "app_id": APP_A, "user_id": "u1"}),
            counts(0, 630, 11, 0, 0, 1)
        ),
        row(
            json!({"day": "2026-11-02", "app_id": APP_B, "user_id": "u2"}),
            counts(3, 389, 7, 1, 1, 0)
        ),
    ]);
    assert_eq!(report["rows"], expected, "{report:#}");
    assert_eq!(report["totals"], counts(6, 2880, 50, 1, 1, 1));
    assert_eq!(report["from"], "2026-11-01T00:00:00Z");
    assert_eq!(report["group_by"], json!(["day", "app_id", "user_id"]));
    assert_eq!(report["billing_rounding"], "started_minute");

    // Without days the same sessions sum to the same totals: split parts add up.
    let by_app = usage_json(&app, &format!("{WINDOW}&group_by=app")).await;
    assert_eq!(
        by_app["rows"],
        json!([
            row(json!({"app_id": APP_A}), counts(2, 2490, 42, 0, 0, 1)),
            row(json!({"app_id": APP_B}), counts(4, 390, 8, 1, 1, 0)),
        ])
    );
    assert_eq!(by_app["totals"], report["totals"]);

    // Two adjacent windows add up to the window that covers both.
    let day1 = usage_json(&app, "from=2026-11-01&to=2026-11-02").await;
    let day2 = usage_json(&app, "from=2026-11-02&to=2026-11-03").await;
    for figure in ["sessions", "seconds", "billable_minutes", "open_sessions"] {
        let sum =
            day1["totals"][figure].as_i64().unwrap() + day2["totals"][figure].as_i64().unwrap();
        assert_eq!(sum, report["totals"][figure].as_i64().unwrap(), "{figure}");
    }
}

async fn json_csv_and_the_cli_agree(backend: Backend) {
    let (app, _clock) = fixture(backend).await;
    let query = format!("{WINDOW}&group_by=phone,day");
    let report = usage_json(&app, &query).await;

    let res = usage(&app, &format!("{query}&format=csv")).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = res.text().await.unwrap();
    assert_eq!(csv_as_json(&csv), report["rows"], "{csv}");

    let cli = cli_usage(&app, &["--group-by", "phone,day", "--format", "json"]).await;
    let cli: Value = serde_json::from_str(&cli).unwrap();
    assert_eq!(cli, report);
    let cli_csv = cli_usage(&app, &["--group-by", "phone,day", "--format", "csv"]).await;
    assert_eq!(cli_csv, csv);
    // The rollups' answer (by app and day) and the sessions' own agree to the second.
    let by_app_day = usage_json(&app, &format!("{WINDOW}&group_by=app,day")).await;
    let raw = [
        "--group-by",
        "app,day",
        "--format",
        "json",
        "--from-sessions",
    ];
    let raw: Value = serde_json::from_str(&cli_usage(&app, &raw).await).unwrap();
    assert_eq!(raw, by_app_day);
    let table = cli_usage(&app, &["--group-by", "phone,day"]).await;
    let total_line = table.lines().last().unwrap();
    let total: Vec<&str> = total_line.split_whitespace().collect();
    assert_eq!(
        total,
        ["TOTAL", "6", "2880", "50", "1", "1", "1"],
        "{table}"
    );
}

/// CSV rows as JSON rows: numbers as numbers, empty cells as null.
fn csv_as_json(csv: &str) -> Value {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows = lines.map(|line| {
        let cells = header.iter().zip(line.split(',')).map(|(name, cell)| {
            let value = match (cell.parse::<i64>(), cell.is_empty()) {
                (_, true) => Value::Null,
                (Ok(n), _) if !matches!(*name, "day" | "app_id" | "phone_id" | "user_id") => {
                    json!(n)
                }
                _ => json!(cell),
            };
            ((*name).to_owned(), value)
        });
        Value::Object(cells.collect())
    });
    Value::Array(rows.collect())
}

async fn cli_usage(app: &TestApp, args: &[&str]) -> String {
    let window = ["usage", "--from", "2026-11-01", "--to", "2026-11-03"];
    let out = app.cli(&[&window[..], args].concat()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn days_follow_the_time_zone_and_add_up(backend: Backend) {
    let (app, _clock) = fixture(backend).await;
    // Shanghai is UTC+8: its 2026-11-01..03 is 2026-10-31T16:00Z..2026-11-02T16:00Z.
    let zone = "time_zone=Asia/Shanghai";
    let by_day = usage_json(&app, &format!("{WINDOW}&{zone}&group_by=day")).await;
    let whole = usage_json(&app, &format!("{WINDOW}&{zone}")).await;

    assert_eq!(by_day["from"], "2026-10-31T16:00:00Z");
    assert_eq!(by_day["time_zone"], "Asia/Shanghai");
    let days: Vec<&str> = by_day["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["day"].as_str().unwrap())
        .collect();
    assert_eq!(days, ["2026-11-01", "2026-11-02"]);
    assert_eq!(by_day["totals"], whole["totals"]);
    // Shanghai's 1 November holds s1, s6 (from 07:59 local) and s9; its 2 November s2
    // (from 07:50 local), s3 and s4. s5 and s8 start after the window.
    assert_eq!(by_day["rows"][0]["seconds"], 1200 + 120 + 1);
    assert_eq!(by_day["rows"][1]["seconds"], 1230 + 59 + 300);
}

/// Retention of the book (`book.retention_days`) removes the closed sessions, and the
/// report by day and app over long windows is the same before and after: the usage rollups
/// answer it. The open session and the quit-only one stay in the book.
async fn retention_leaves_the_report_by_day_and_app_as_it_was(backend: Backend) {
    let (app, clock) = fixture(backend).await;
    let windows = [
        format!("{WINDOW}&group_by=day,app"),
        "from=2026-10-01&to=2026-12-01&group_by=app".to_owned(),
        "from=2026-01-01&to=2027-01-01&group_by=day".to_owned(),
    ];
    let mut before = Vec::new();
    for query in &windows {
        before.push(usage_json(&app, query).await);
    }
    assert!(app.session("s9").await.is_some());
    let db = app.stop().await;

    // The clock reads 2026-11-28: 20 days back is after every closed session's end.
    let retained = "[book]\nretention_days = 20\nretention_interval_secs = 1\n";
    let app = TestApp::spawn_on_with_clock(db, retained, clock).await;
    for _ in 0..600 {
        if app.session("s9").await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert!(app.session("s9").await.is_none(), "retention removed s9");
    assert!(
        app.session("s7").await.is_some(),
        "the quit-only session waits for its enter"
    );
    for (query, before) in windows.iter().zip(&before) {
        let after = usage_json(&app, query).await;
        assert_eq!(after["rows"], before["rows"], "{query}: {after:#}");
        assert_eq!(after["totals"], before["totals"], "{query}");
    }
    assert!(before[0]["totals"]["sessions"].as_i64().unwrap() > 0);
}

async fn bad_usage_queries_are_400_with_the_field_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (query, field) in [
        ("from=2026-11-01&to=2026-11-03&group_by=month", "group_by"),
        ("from=2026-11-03&to=2026-11-01", "to"),
        ("from=last+week&to=2026-11-01", "from"),
        (
            "from=2026-11-01&to=2026-11-03&time_zone=Mars/Olympus",
            "time_zone",
        ),
        ("from=2000-01-01&to=2026-11-01&group_by=day", "to"),
        ("to=2026-11-01", "from"),
        ("from=2026-11-01&to=2026-11-03&format=xml", "format"),
    ] {
        let body = assert_error(usage(&app, query).await, 400, "CPHUB.INVALID_FIELD").await;
        let message = body["error_msg"].as_str().unwrap();
        assert!(message.contains(field), "{query}: {message}");
    }
    let res = app
        .get("/api/v1/usage?from=2026-11-01&to=2026-11-03", None)
        .await;
    assert_eq!(res.status(), 401);
}

/// SQLite's plan for the usage query (`cphub usage --explain`): whole quarter hours from
/// the rollups' primary key, open sessions from the `sessions_open` index, the ragged edges
/// of the window from one `sessions_by_start` range each; never a scan of a whole table.
/// (PostgreSQL's plan on 10 million sessions is in docs/benchmarks.md: on a tiny table it
/// rightly prefers a sequential scan.)
#[tokio::test]
async fn the_sqlite_usage_query_is_an_index_range_scan() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let plan = cli_usage(&app, &["--group-by", "app,day", "--explain"]).await;
    assert_plan(&plan, &[ROLLUP_RANGE, OPEN_RANGE]);
    assert!(!plan.contains("sessions_by_start"), "{plan}");

    let ragged = [
        "--from",
        "2026-11-01T00:10:00Z",
        "--to",
        "2026-11-02T23:50:00Z",
    ];
    let out = app
        .cli(&[&["usage"][..], &ragged, &["--explain"]].concat())
        .await;
    let plan = String::from_utf8(out.stdout).unwrap();
    assert_plan(&plan, &[ROLLUP_RANGE, OPEN_RANGE, EDGE_RANGE]);

    let by_user = cli_usage(&app, &["--group-by", "user", "--explain"]).await;
    assert_plan(&by_user, &[EDGE_RANGE]);
    assert!(!by_user.contains("usage_rollups"), "{by_user}");
}

const ROLLUP_RANGE: &str = "SEARCH r USING PRIMARY KEY (bucket_start>? AND bucket_start<?)";
const OPEN_RANGE: &str = "SEARCH s USING INDEX sessions_open (started_at>? AND started_at<?)";
const EDGE_RANGE: &str = "SEARCH s USING INDEX sessions_by_start (started_at>? AND started_at<?)";

fn assert_plan(plan: &str, steps: &[&str]) {
    for step in steps {
        assert!(plan.contains(step), "{step} in\n{plan}");
    }
    assert!(
        !plan.contains("SCAN s") && !plan.contains("SCAN r"),
        "{plan}"
    );
}

backend_tests!(
    retention_leaves_the_report_by_day_and_app_as_it_was,
    usage_matches_the_hand_computed_fixture,
    json_csv_and_the_cli_agree,
    days_follow_the_time_zone_and_add_up,
    bad_usage_queries_are_400_with_the_field_named,
);
