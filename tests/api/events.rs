//! Enter and quit events (chapter 6.2, 6.3): recorded once, whatever the delivery order or
//! the number of deliveries.

use std::time::Duration;

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{
    Backend, TestApp, WriteLock, assert_acknowledged, assert_error, enter, heartbeat, quit,
};
use crate::metrics::{scrape, value};

const PHONE: &str = "a7f3a1c5258347d6b6f1def79e11f2bc";
const SESSION: &str = "856f5555806443e98b7ed04c5a9d6a9a";

/// Chapter 6.2's example request, verbatim.
fn reference_enter() -> Value {
    serde_json::from_str(
        r#"{
          "event_type": "app",
          "event": {
            "phone_id": "a7f3a1c5258347d6b6f1def79e11f2bc",
            "status": 0,
            "session_id": "856f5555806443e98b7ed04c5a9d6a9a",
            "ticket": "5558064856f5555806443e98b7ed04c5a9d6a9ab7ed04c5a9d6a806443e98",
            "time": "2019-11-14T19:38:49Z",
            "app_id": "856f5555806443e98b7ed04c5a9d6a9a",
            "error_msg": null
          }
        }"#,
    )
    .unwrap()
}

/// Chapter 6.3's example request, verbatim (same time as the enter, run_time 41000).
fn reference_quit() -> Value {
    serde_json::from_str(
        r#"{
          "event_type": "app",
          "event": {
            "phone_id": "a7f3a1c5258347d6b6f1def79e11f2bc",
            "status": 1,
            "session_id": "856f5555806443e98b7ed04c5a9d6a9a",
            "ticket": "5558064856f5555806443e98b7ed04c5a9d6a9ab7ed04c5a9d6a806443e98",
            "time": "2019-11-14T19:38:49Z",
            "run_time": 41000,
            "app_id": "856f5555806443e98b7ed04c5a9d6a9a",
            "error_msg": null
          }
        }"#,
    )
    .unwrap()
}

async fn reference_enter_example_starts_a_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    app.send_event(&reference_enter()).await;

    let session = app.session(SESSION).await.expect("session recorded");
    assert_eq!(session["state"], "playing");
    assert_eq!(session["phone_id"], PHONE);
    assert_eq!(session["app_id"], "856f5555806443e98b7ed04c5a9d6a9a");
    assert_eq!(session["started_at"], "2019-11-14T19:38:49Z");
    assert_eq!(session["ended_at"], Value::Null);
    assert_eq!(session["missing_start"], false);
    let events = session["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "enter");
    assert_eq!(events[0]["outcome"], "accepted");
    assert!(events[0]["received_at"].is_string());
    assert_eq!(
        app.phone(PHONE).await.unwrap()["current_session_id"],
        SESSION
    );
}

async fn reference_quit_example_ends_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    app.send_event(&reference_enter()).await;
    app.send_event(&reference_quit()).await;

    let session = app.session(SESSION).await.unwrap();
    assert_eq!(session["state"], "ended");
    assert_eq!(session["end_reason"], "quit");
    assert_eq!(session["ended_at"], "2019-11-14T19:38:49Z");
    // Stored as reported; billing uses the measured duration, and the gap is flagged.
    assert_eq!(session["reported_run_time"], 41000);
    assert_eq!(session["duration_seconds"], 0);
    assert_eq!(session["run_time_mismatch"], true);
    assert_eq!(
        app.phone(PHONE).await.unwrap()["current_session_id"],
        Value::Null
    );
}

async fn a_played_session_measures_its_duration(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    app.send_event(&quit("s-1", "p-1", "2026-11-28T10:20:30.500+00:00", 1230))
        .await;

    let session = app.session("s-1").await.unwrap();
    assert_eq!(session["duration_seconds"], 1230);
    assert_eq!(session["run_time_mismatch"], false);
    assert_eq!(session["ended_at"], "2026-11-28T10:20:30.500Z");
}

/// 6.2 and 6.3: "The value is a UTC time". An engine sending it without the `Z` is read
/// as UTC, not refused at every retry (its sessions never billed); a date alone is still
/// a 400 (tests/api/bad_input.rs).
async fn times_without_a_zone_are_utc_as_6_2_and_6_3_say(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00"))
        .await;
    app.send_event(&quit("s-1", "p-1", "2026-11-28T10:20:30.5", 1230))
        .await;

    let session = app.session("s-1").await.unwrap();
    assert_eq!(session["started_at"], "2026-11-28T10:00:00Z");
    assert_eq!(session["ended_at"], "2026-11-28T10:20:30.500Z");
    assert_eq!(session["duration_seconds"], 1230);
}

/// Chapter 6.2's enter has no `run_time` (6.3's quit does). An engine sending one shape for
/// both may put one in an enter, as a string or a fraction: it is ignored, not a reason to
/// refuse the enter (which the phone would retry for ever, and the session never start).
async fn an_enter_6_2_has_no_run_time_so_one_it_carries_is_ignored_whatever_its_type(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    for (n, run_time) in [json!("0"), json!(1.5), json!(-3), json!({"s": 1})]
        .into_iter()
        .enumerate()
    {
        let session = format!("s-{n}");
        let mut enter = enter(&session, "p-1", "2026-11-28T10:00:00Z");
        enter["event"]["run_time"] = run_time;
        app.send_event(&enter).await;
        let recorded = app.session(&session).await.unwrap();
        assert_eq!(recorded["state"], "playing", "{recorded}");
        assert_eq!(recorded["reported_run_time"], Value::Null, "{recorded}");
    }
}

/// JSON has one number type: `1230.0` is the integer 1230 (schemathesis sends such). A
/// fraction is not.
async fn integers_written_with_a_zero_fraction_are_integers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut enter = enter("s-1", "p-1", "2026-11-28T10:00:00Z");
    enter["event"]["status"] = json!(0.0);
    app.send_event(&enter).await;
    let mut quit = quit("s-1", "p-1", "2026-11-28T10:20:30Z", 0);
    for (status, run_time) in [(json!(1.0), json!(12.5)), (json!("1"), json!(1230))] {
        quit["event"]["status"] = status;
        quit["event"]["run_time"] = run_time;
        assert_error(app.post_event(&quit).await, 400, "CPHUB.INVALID_FIELD").await;
    }
    quit["event"]["status"] = json!(1.0);
    quit["event"]["run_time"] = json!(1230.0);
    app.send_event(&quit).await;

    let session = app.session("s-1").await.unwrap();
    assert_eq!(session["reported_run_time"], 1230);
    assert_eq!(session["duration_seconds"], 1230);
}

async fn a_repeated_event_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    app.send_event(&quit("s-1", "p-1", "2026-11-28T10:05:00Z", 300))
        .await;
    let before = app.session("s-1").await.unwrap();

    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    app.send_event(&quit("s-1", "p-1", "2026-11-28T10:05:00Z", 300))
        .await;

    assert_eq!(app.session("s-1").await.unwrap(), before);
    assert_eq!(before["events"].as_array().unwrap().len(), 2);
}

async fn a_conflicting_repeat_is_logged_but_not_applied(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;

    // Same session and status, different time: answered 200 so the phone stops retrying.
    app.send_event(&enter("s-1", "p-1", "2026-11-28T11:00:00Z"))
        .await;

    let session = app.session("s-1").await.unwrap();
    assert_eq!(session["started_at"], "2026-11-28T10:00:00Z");
    let outcomes: Vec<_> = session["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["outcome"].clone())
        .collect();
    assert_eq!(outcomes, [json!("accepted"), json!("conflict")]);
    assert_eq!(session["events"][1]["time"], "2026-11-28T11:00:00Z");
}

async fn quit_before_enter_still_yields_the_right_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    app.send_event(&quit("s-1", "p-1", "2026-11-28T10:10:00Z", 600))
        .await;
    let half = app.session("s-1").await.unwrap();
    assert_eq!(half["state"], "ended");
    assert_eq!(half["missing_start"], true);
    assert_eq!(half["duration_seconds"], Value::Null);

    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    let whole = app.session("s-1").await.unwrap();
    assert_eq!(whole["state"], "ended");
    assert_eq!(whole["missing_start"], false);
    assert_eq!(whole["duration_seconds"], 600);
    // A late enter of an ended session must not make it the phone's current session.
    assert_eq!(
        app.phone("p-1").await.unwrap()["current_session_id"],
        Value::Null
    );
}

async fn concurrent_redeliveries_apply_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let deliveries = (0..8).flat_map(|_| {
        [
            enter("s-1", "p-1", "2026-11-28T10:00:00Z"),
            quit("s-1", "p-1", "2026-11-28T10:01:00Z", 60),
        ]
    });

    let sends = deliveries.map(|body| {
        let app = &app;
        async move { app.send_event(&body).await }
    });
    futures_util::future::join_all(sends).await;

    let session = app.session("s-1").await.unwrap();
    assert_eq!(session["state"], "ended");
    assert_eq!(session["duration_seconds"], 60);
    let events = session["events"].as_array().unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e["outcome"] == "accepted"));
}

/// Two sessions entering one phone cphub has not seen yet, released together: on PostgreSQL
/// their sessions may go to different writers (a writer with a job waiting lets the next
/// take new sessions: `writer_room = 1`), and both find no phone row, both create it, and
/// the second's count falls short (`Raced`, nothing of its round committed). The writer
/// decides such a round afresh instead of answering the phone 503: 6.2's enter is a billing
/// event the phone would have to send again. Whichever commits first, the later start holds
/// the phone.
async fn two_writers_entering_one_unseen_phone_are_both_acknowledged(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[database]\nwriter_room = 1\n").await;
    let phones: Vec<String> = (0..12).map(|n| format!("p-{n}")).collect();
    let post = |body: Value| spawn_event(&app, body);
    let mut lock = WriteLock::take(&app.db).await;
    let mut sends = Vec::new();
    for phone in &phones {
        sends.push(post(enter(
            &format!("new-{phone}"),
            phone,
            "2026-11-28T11:00:00Z",
        )));
        sends.push(post(enter(
            &format!("old-{phone}"),
            phone,
            "2026-11-28T10:00:00Z",
        )));
    }
    // Two rounds of different writers waiting at once: released together, they race.
    lock.wait_for_waiters(2).await;
    lock.release().await;
    for send in sends {
        assert_acknowledged(send.await.unwrap()).await;
    }
    for phone in &phones {
        let stored = app.phone(phone).await.unwrap();
        assert_eq!(
            stored["current_session_id"],
            format!("new-{phone}"),
            "{stored}"
        );
        let old = app.session(&format!("old-{phone}")).await.unwrap();
        assert_eq!(old["state"], "playing", "{old}");
    }
}

async fn events_survive_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    let db = app.stop().await;

    let app = TestApp::spawn_on(db, "").await;
    app.send_event(&quit("s-1", "p-1", "2026-11-28T10:02:00Z", 120))
        .await;

    assert_eq!(app.session("s-1").await.unwrap()["duration_seconds"], 120);
}

async fn a_late_enter_of_an_older_session_does_not_take_the_phone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_event(&enter("new", "p-1", "2026-11-28T11:00:00Z"))
        .await;

    app.send_event(&enter("old", "p-1", "2026-11-28T10:00:00Z"))
        .await;

    assert_eq!(app.phone("p-1").await.unwrap()["current_session_id"], "new");
}

/// Phones retry, duplicate and reorder: here every enter and quit of 40 sessions arrives 1
/// to 5 times, all shuffled and sent 16 at a time. Each session is counted once with its
/// true duration, and the usage report equals the one of a single clean delivery.
async fn replays_and_reordering_change_no_count_or_duration(backend: Backend) {
    use futures_util::StreamExt;
    let app = TestApp::spawn(backend).await;
    // A fixed pseudo-random sequence (an LCG): the same deliveries on every run.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: u64| {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (seed >> 33) % bound
    };
    let duration = |i: u64| 30 + i * 7;
    let mut deliveries = Vec::new();
    for i in 0..40 {
        let (session, phone) = (format!("replay-{i}"), format!("replay-phone-{i}"));
        let start = format!("2026-11-28T10:{:02}:00Z", i);
        let end = format!(
            "2026-11-28T10:{:02}:{:02}Z",
            i + duration(i) / 60,
            duration(i) % 60
        );
        for event in [
            enter(&session, &phone, &start),
            quit(&session, &phone, &end, duration(i) as i64),
        ] {
            deliveries.extend(std::iter::repeat_n(event, 1 + next(5) as usize));
        }
    }
    for i in (1..deliveries.len()).rev() {
        deliveries.swap(i, next(i as u64 + 1) as usize);
    }

    futures_util::stream::iter(deliveries)
        .for_each_concurrent(16, |body| {
            let app = &app;
            async move { app.send_event(&body).await }
        })
        .await;

    for i in 0..40 {
        let session = app.session(&format!("replay-{i}")).await.unwrap();
        assert_eq!(session["state"], "ended", "{session}");
        assert_eq!(session["duration_seconds"], duration(i), "{session}");
        let accepted = session["events"].as_array().unwrap().iter();
        assert_eq!(accepted.filter(|e| e["outcome"] == "accepted").count(), 2);
    }
    let res = app
        .get(
            "/api/v1/usage?from=2026-11-28&to=2026-11-29",
            Some(crate::helpers::TOKEN),
        )
        .await;
    let usage: Value = res.json().await.unwrap();
    let seconds: u64 = (0..40).map(duration).sum();
    assert_eq!(usage["totals"]["sessions"], 40);
    assert_eq!(usage["totals"]["seconds"], seconds);
}

/// Delivers `deliveries` so that they are committed together, in this order, as one
/// batch: while another client holds the write lock, a first event (of a session and phone
/// of its own) keeps the writer waiting, and the deliveries queue behind it one by one.
async fn deliver_in_one_batch(app: &TestApp, deliveries: &[Value]) {
    let post = |body: Value| spawn_event(app, body);
    let mut lock = WriteLock::take(&app.db).await;
    let mut sends = vec![post(enter("blocker", "p-blocker", "2026-11-28T09:00:00Z"))];
    lock.wait_for_a_waiter().await;
    for body in deliveries {
        sends.push(post(body.clone()));
        // Time for the request to reach the writer's queue before the next one is sent.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lock.release().await;
    for send in sends {
        assert_acknowledged(send.await.unwrap()).await;
    }
}

/// Posts `body` to the events route from a task of its own: the answer is awaited later,
/// while the test holds the write lock the request queues behind.
fn spawn_event(app: &TestApp, body: Value) -> tokio::task::JoinHandle<reqwest::Response> {
    let (client, url) = (app.client.clone(), format!("{}/cph/events", app.address));
    tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap() })
}

/// The value of one series in `GET /metrics` (0 when absent).
async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Several deliveries of one session in one batch see each other as they would one by
/// one: each is accepted, a duplicate or a conflict by what came before it, the log keeps
/// their arrival order, and a quit overtaking its enter in the batch still measures.
async fn one_batch_decides_each_event_by_those_before_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    deliver_in_one_batch(
        &app,
        &[
            enter("s-1", "p-1", "2026-11-28T10:00:00Z"),
            enter("s-1", "p-1", "2026-11-28T11:00:00Z"),
            quit("s-1", "p-1", "2026-11-28T10:05:00Z", 300),
            enter("s-1", "p-1", "2026-11-28T10:00:00Z"),
            quit("s-1", "p-1", "2026-11-28T10:05:00Z", 999),
            quit("s-1", "p-1", "2026-11-28T10:05:00Z", 300),
            quit("s-2", "p-2", "2026-11-28T10:10:00Z", 600),
            enter("s-2", "p-2", "2026-11-28T10:00:00Z"),
        ],
    )
    .await;

    let session = app.session("s-1").await.unwrap();
    assert_eq!(session["state"], "ended", "{session}");
    assert_eq!(session["started_at"], "2026-11-28T10:00:00Z");
    assert_eq!(session["duration_seconds"], 300);
    assert_eq!(session["reported_run_time"], 300);
    let log: Vec<_> = session["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].clone(),
                e["outcome"].clone(),
                e["run_time"].clone(),
            )
        })
        .collect();
    let expected = [
        ("enter", "accepted", Value::Null),
        ("enter", "conflict", Value::Null),
        ("quit", "accepted", json!(300)),
        ("quit", "conflict", json!(999)),
    ]
    .map(|(kind, outcome, run_time)| (json!(kind), json!(outcome), run_time));
    assert_eq!(log, expected);
    let session = app.session("s-2").await.unwrap();
    assert_eq!(session["state"], "ended", "{session}");
    assert_eq!(session["missing_start"], false);
    assert_eq!(session["duration_seconds"], 600);
    for phone in ["p-1", "p-2"] {
        let current = &app.phone(phone).await.unwrap()["current_session_id"];
        assert_eq!(*current, Value::Null, "{phone}");
    }
    for (kind, outcome, count) in [
        ("enter", "accepted", 3.0), // with the batch's blocker
        ("enter", "duplicate", 1.0),
        ("enter", "conflict", 1.0),
        ("quit", "accepted", 2.0),
        ("quit", "duplicate", 1.0),
        ("quit", "conflict", 1.0),
    ] {
        let series = format!(r#"cphub_events_total{{outcome="{outcome}",type="{kind}"}}"#);
        assert_eq!(metric(&app, &series).await, count, "{series}");
    }
    let ended = r#"cphub_session_duration_seconds_count{app_id="com.example.game"}"#;
    assert_eq!(metric(&app, ended).await, 2.0);
}

/// Phones in one batch move as they would one event at a time: a late enter of an older
/// session does not take the phone, a quit frees it for the next session, and entering a
/// minted session clears the hold minting took.
async fn one_batch_moves_phones_as_one_by_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_heartbeat(&heartbeat("p-1", None, "2026-11-28T10:00:00Z"))
        .await;
    app.wait_for_phone("p-1", |p| p["state"] == "idle").await;
    let minted = app
        .mint_ok(&json!({"app_id": "com.example.game", "user_id": "u-1"}))
        .await;
    let held = minted["session_id"].as_str().unwrap();
    assert_eq!(
        app.phone("p-1").await.unwrap()["allocated_session_id"],
        held
    );

    deliver_in_one_batch(
        &app,
        &[
            enter("new", "p-2", "2026-11-28T11:00:00Z"),
            enter("old", "p-2", "2026-11-28T10:00:00Z"),
            enter(held, "p-1", "2026-11-28T10:00:00Z"),
            quit(held, "p-1", "2026-11-28T10:30:00Z", 1800),
            enter("next", "p-1", "2026-11-28T10:40:00Z"),
        ],
    )
    .await;

    let p2 = app.phone("p-2").await.unwrap();
    assert_eq!(p2["current_session_id"], "new", "{p2}");
    let p1 = app.phone("p-1").await.unwrap();
    assert_eq!(p1["current_session_id"], "next", "{p1}");
    assert_eq!(p1["allocated_session_id"], Value::Null, "{p1}");
    assert_eq!(p1["allocated_until"], Value::Null, "{p1}");
    let minted = app.session(held).await.unwrap();
    assert_eq!(minted["state"], "ended", "{minted}");
    assert_eq!(minted["issued"], true);
    assert_eq!(minted["duration_seconds"], 1800);
    assert_eq!(app.session("old").await.unwrap()["state"], "playing");
}

/// 6.2 and 6.3 set no length on `error_msg`: a long one is cut at a character boundary,
/// flagged and counted, and the event, a billing event, is recorded.
async fn a_5000_character_error_msg_is_recorded_truncated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // The 1023rd and 1024th characters are 3 and 4 bytes long: a byte cut would split one.
    let kept = format!("{}€😀", "e".repeat(1022));
    let long = format!("{kept}ü{}", "x".repeat(3975));
    assert_eq!(long.chars().count(), 5000);
    let mut enter_event = enter(SESSION, PHONE, "2026-11-28T10:00:00Z");
    enter_event["event"]["error_msg"] = json!(long);
    let mut quit_event = quit(SESSION, PHONE, "2026-11-28T10:01:00Z", 60);
    quit_event["event"]["error_msg"] = json!(long);

    assert_acknowledged(app.post_event(&enter_event).await).await;
    assert_acknowledged(app.post_event(&quit_event).await).await;

    let session = app.session(SESSION).await.expect("session recorded");
    assert_eq!(session["state"], "ended");
    assert_eq!(session["duration_seconds"], 60);
    for event in session["events"].as_array().unwrap() {
        assert_eq!(event["error_msg"], kept.as_str(), "{}", event["kind"]);
        assert_eq!(event["truncated"], true, "{}", event["kind"]);
    }
    let samples = scrape(&app).await;
    let truncated = r#"cphub_event_fields_truncated_total{field="error_msg"}"#;
    assert_eq!(value(&samples, truncated), 2.0);
}

/// A description within its bound is kept whole and not flagged.
async fn a_short_error_msg_is_kept_whole(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut enter_event = enter(SESSION, PHONE, "2026-11-28T10:00:00Z");
    enter_event["event"]["error_msg"] = json!("é".repeat(1024));

    assert_acknowledged(app.post_event(&enter_event).await).await;

    let session = app.session(SESSION).await.unwrap();
    let event = &session["events"][0];
    assert_eq!(event["error_msg"], "é".repeat(1024).as_str());
    assert_eq!(event["truncated"], false);
    let samples = scrape(&app).await;
    let truncated = r#"cphub_event_fields_truncated_total{field="error_msg"}"#;
    assert!(samples.contains_key(truncated), "exported at 0");
    assert_eq!(value(&samples, truncated), 0.0);
}

backend_tests!(
    times_without_a_zone_are_utc_as_6_2_and_6_3_say,
    an_enter_6_2_has_no_run_time_so_one_it_carries_is_ignored_whatever_its_type,
    a_5000_character_error_msg_is_recorded_truncated,
    a_short_error_msg_is_kept_whole,
    one_batch_decides_each_event_by_those_before_it,
    one_batch_moves_phones_as_one_by_one,
    replays_and_reordering_change_no_count_or_duration,
    reference_enter_example_starts_a_session,
    reference_quit_example_ends_the_session,
    a_played_session_measures_its_duration,
    integers_written_with_a_zero_fraction_are_integers,
    a_repeated_event_changes_nothing,
    a_conflicting_repeat_is_logged_but_not_applied,
    quit_before_enter_still_yields_the_right_session,
    concurrent_redeliveries_apply_once,
    two_writers_entering_one_unseen_phone_are_both_acknowledged,
    events_survive_a_restart,
    a_late_enter_of_an_older_session_does_not_take_the_phone,
);
