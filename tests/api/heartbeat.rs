//! Heartbeats (chapter 6.4): answered from memory, written with the next flush.

use std::sync::Arc;
use std::time::Duration;

use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use serde_json::{Value, json};

use crate::backend_tests;
use futures_util::StreamExt;

use crate::helpers::{Backend, TestApp, assert_error, enter, heartbeat, quit};
use crate::metrics::scrape;

async fn reference_heartbeat_example_reaches_phone_and_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_event(&enter(
        "36728337b89f22122af4a6e08bb1e7c0",
        "a7f3a1c5258347d6b6f1def79e11f2bc",
        "2019-11-14T19:30:00Z",
    ))
    .await;

    // Chapter 6.4's example, verbatim but for the comments JSON cannot carry.
    let example: Value = serde_json::from_str(
        r#"{
          "event_type": "heartbeat",
          "event": {
            "phone_id": "a7f3a1c5258347d6b6f1def79e11f2bc",
            "app_id": "282fd613e04651a48225f1b2034de7",
            "session_id": "36728337b89f22122af4a6e08bb1e7c0",
            "time": "2019-11-14T19:38:49Z"
          }
        }"#,
    )
    .unwrap();
    app.send_heartbeat(&example).await;

    let session = app
        .wait_for_session("36728337b89f22122af4a6e08bb1e7c0", |s| {
            !s["last_heartbeat_at"].is_null()
        })
        .await;
    assert_eq!(session["last_heartbeat_at"], "2019-11-14T19:38:49Z");
    let phone = app.phone("a7f3a1c5258347d6b6f1def79e11f2bc").await.unwrap();
    assert_eq!(phone["last_heartbeat_at"], "2019-11-14T19:38:49Z");
    assert_eq!(
        phone["heartbeat_session_id"],
        "36728337b89f22122af4a6e08bb1e7c0"
    );
    assert_eq!(phone["heartbeat_app_id"], "282fd613e04651a48225f1b2034de7");
    assert!(phone["last_seen_at"].is_string());
}

async fn a_blank_heartbeat_means_alive_and_idle(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // The table's spelling of event_type ("app") is accepted on this route too.
    let body = json!({"event_type": "app", "event": {"phone_id": "p-idle", "app_id": "",
                      "session_id": "", "time": "2026-11-28T10:00:00Z"}});
    app.send_heartbeat(&body).await;

    let phone = app.wait_for_phone("p-idle", |_| true).await;
    assert_eq!(phone["last_heartbeat_at"], "2026-11-28T10:00:00Z");
    assert_eq!(phone["heartbeat_session_id"], Value::Null);
    assert_eq!(phone["heartbeat_app_id"], Value::Null);
}

async fn missing_ids_read_as_idle_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let body = json!({"event_type": "heartbeat", "event": {"phone_id": "p-1", "time": "2026-11-28T10:00:00Z", "session_id": null}});
    app.send_heartbeat(&body).await;

    let phone = app.wait_for_phone("p-1", |_| true).await;
    assert_eq!(phone["heartbeat_session_id"], Value::Null);
}

async fn an_older_heartbeat_never_replaces_a_newer_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_heartbeat(&heartbeat("p-1", Some("s-2"), "2026-11-28T10:00:10Z"))
        .await;
    app.wait_for_phone("p-1", |p| p["last_heartbeat_at"] == "2026-11-28T10:00:10Z")
        .await;

    // Delivered late: older than what is stored.
    app.send_heartbeat(&heartbeat("p-1", Some("s-1"), "2026-11-28T10:00:05Z"))
        .await;
    app.send_heartbeat(&heartbeat("p-2", None, "2026-11-28T10:00:06Z"))
        .await;
    app.wait_for_phone("p-2", |_| true).await; // the late one was flushed with it

    let phone = app.phone("p-1").await.unwrap();
    assert_eq!(phone["last_heartbeat_at"], "2026-11-28T10:00:10Z");
    assert_eq!(phone["heartbeat_session_id"], "s-2");
}

/// A phone whose clock steps back (an NTP correction) is still alive: cphub's own
/// `last_seen_at` moves on, so the watchdog does not restart a healthy phone.
async fn a_phone_whose_clock_steps_back_stays_fresh(backend: Backend) {
    let clock = Arc::new(ManualClock::new(
        UtcTime::parse("t", "2026-11-28T12:00:00Z").unwrap(),
    ));
    let app = TestApp::spawn_with_clock(backend, "", Arc::clone(&clock)).await;
    app.send_heartbeat(&heartbeat("p-1", None, "2026-11-28T10:00:10Z"))
        .await;
    app.wait_for_phone("p-1", |p| p["last_seen_at"] == "2026-11-28T12:00:00Z")
        .await;

    clock.advance(Duration::from_secs(60));
    app.send_heartbeat(&heartbeat("p-1", None, "2026-11-28T09:00:00Z"))
        .await;
    let phone = app
        .wait_for_phone("p-1", |p| p["last_seen_at"] == "2026-11-28T12:01:00Z")
        .await;

    assert_eq!(phone["last_heartbeat_at"], "2026-11-28T10:00:10Z");
    assert_eq!(phone["state"], "idle");
}

/// A phone's clock may be hours off (a local time sent as UTC, chapter 6.4's `time`), and
/// cphub orders a phone's news by it; a day ahead of cphub's clock is a clock gone wrong.
/// Such a heartbeat, enter or quit is refused (400 `CPHUB.INVALID_TIME`): stored, one
/// heartbeat dated 9999 outranked every later one (the phone's session frozen for good), and
/// a session ended by it would be billed until 9999. Half a day ahead is still taken.
async fn a_callback_time_a_day_ahead_of_cphubs_clock_is_refused_6_4(backend: Backend) {
    let clock = Arc::new(ManualClock::new(
        UtcTime::parse("t", "2026-11-28T12:00:00Z").unwrap(),
    ));
    let app = TestApp::spawn_with_clock(backend, "", Arc::clone(&clock)).await;

    let far = "2026-11-29T12:00:01Z";
    for res in [
        app.post_heartbeat(&heartbeat("p-1", Some("s-1"), far))
            .await,
        app.post_heartbeat(&heartbeat("p-1", None, "9999-01-01T00:00:00Z"))
            .await,
        app.post_event(&enter("s-1", "p-1", far)).await,
        app.post_event(&quit("s-1", "p-1", far, 60)).await,
    ] {
        let body = assert_error(res, 400, "CPHUB.INVALID_TIME").await;
        assert!(
            body["error_msg"].as_str().unwrap().contains("event.time"),
            "{body}"
        );
    }
    app.send_heartbeat(&heartbeat("p-1", None, "2026-11-28T23:59:00Z"))
        .await;
    let phone = app
        .wait_for_phone("p-1", |p| !p["last_heartbeat_at"].is_null())
        .await;
    assert_eq!(phone["last_heartbeat_at"], "2026-11-28T23:59:00Z");
    assert!(app.session("s-1").await.is_none());
}

async fn many_heartbeats_coalesce_to_the_newest_per_phone(backend: Backend) {
    // A long flush interval: everything below lands in one batch.
    let app = TestApp::spawn_with(backend, "[heartbeats]\nflush_interval_ms = 400").await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;

    for second in [3, 1, 5, 2, 4] {
        let time = format!("2026-11-28T10:00:0{second}Z");
        app.send_heartbeat(&heartbeat("p-1", Some("s-1"), &time))
            .await;
    }

    let session = app
        .wait_for_session("s-1", |s| !s["last_heartbeat_at"].is_null())
        .await;
    assert_eq!(session["last_heartbeat_at"], "2026-11-28T10:00:05Z");
}

/// 6.4, a fleet cphub has never heard of: the flush inserts every new phone, a chunk of
/// `heartbeats.flush_chunk` phones per transaction (25 here, 250 by default), and every
/// one is stored. Written as one transaction, the first flush of 150k new phones held
/// SQLite's one writer for seconds, and the hold sweeper's wait for it timed out on the
/// pool (docs/benchmarks.md, "A flood of new phones").
async fn a_flood_of_new_phones_is_stored_chunk_by_chunk(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[heartbeats]\nflush_chunk = 25").await;
    let phones: Vec<String> = (0..1000).map(|i| format!("new-{i:04}")).collect();

    idle_heartbeats(&app, &phones).await;

    let mut stored = 0.0;
    for _ in 0..400 {
        let samples = scrape(&app).await;
        let by_state = samples
            .iter()
            .filter(|(k, _)| k.starts_with("cphub_phones{"));
        stored = by_state.map(|(_, v)| v).sum::<f64>();
        if stored == 1000.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(stored, 1000.0, "every new phone stored");
    for phone in [&phones[0], &phones[500], &phones[999]] {
        let stored = app.phone(phone).await.expect("stored");
        assert_eq!(stored["last_heartbeat_at"], "2026-11-28T10:00:00Z");
    }
}

backend_tests!(
    reference_heartbeat_example_reaches_phone_and_session,
    a_blank_heartbeat_means_alive_and_idle,
    missing_ids_read_as_idle_too,
    an_older_heartbeat_never_replaces_a_newer_one,
    a_phone_whose_clock_steps_back_stays_fresh,
    a_callback_time_a_day_ahead_of_cphubs_clock_is_refused_6_4,
    many_heartbeats_coalesce_to_the_newest_per_phone,
    a_flood_of_new_phones_is_stored_chunk_by_chunk,
);

/// PostgreSQL: a fleet that fills a new book within one heartbeat interval is planned as
/// the fleet it is, not as the empty book the connections prepared their statements on.
/// cphub analyses a table once it holds more than twice the rows the planner counted
/// (store/postgres_analyze.rs); autovacuum, which would do it a minute or more later, is
/// switched off for the table here, so nothing else can. Once counted, the table is left
/// alone: a book at its size is not analysed again and again.
#[test]
fn a_new_postgres_book_filled_by_a_fleet_is_analysed_at_once_and_then_left_alone() {
    crate::helpers::run_scenario(
        "a_new_postgres_book_filled_by_a_fleet_is_analysed_at_once_and_then_left_alone",
        async {
            if !crate::helpers::postgres_available() {
                return;
            }
            let overrides = "[database]\npostgres_analyze_interval_ms = 100\n";
            let app = TestApp::spawn_with(Backend::Postgres, overrides).await;
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&app.db.url)
                .await
                .unwrap();
            sqlx::query("ALTER TABLE phones SET (autovacuum_enabled = off)")
                .execute(&mut conn)
                .await
                .unwrap();
            assert_eq!(counted(&mut conn).await, (-1.0, 0), "never analysed");

            let fleet: Vec<String> = (0..1500).map(|i| format!("fleet-{i:04}")).collect();
            idle_heartbeats(&app, &fleet).await;

            // The flush's row counts reach PostgreSQL's statistics within seconds, chunk by
            // chunk: the analyser may count 1,000 of the 1,500 phones, and then 1,500 is not
            // twice what it counted.
            let mut seen = (-1.0, 0);
            for _ in 0..600 {
                seen = counted(&mut conn).await;
                if seen.1 > 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(seen.1, 1, "analysed once the fleet arrived");
            assert!((1000.0..=1500.0).contains(&seen.0), "counted {}", seen.0);

            let mut stored = 0;
            for _ in 0..600 {
                stored = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM phones")
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
                if stored == 1500 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(stored, 1500, "the whole fleet stored");
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let later = counted(&mut conn).await;
            assert_eq!(later.1, 1, "ten looks later, not analysed again");
        },
    )
}

/// One idle heartbeat from each of `phones`, 32 at a time.
async fn idle_heartbeats(app: &TestApp, phones: &[String]) {
    let sent = phones.iter().map(|phone| {
        let body = heartbeat(phone, None, "2026-11-28T10:00:00Z");
        async move { app.send_heartbeat(&body).await }
    });
    futures_util::stream::iter(sent)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// `phones`' row count as the planner knows it (`reltuples`, -1 before any `ANALYZE`) and
/// how many times it was analysed by hand (not by autovacuum).
async fn counted(conn: &mut sqlx::PgConnection) -> (f32, i64) {
    sqlx::query_as(
        "SELECT c.reltuples, s.analyze_count FROM pg_class AS c \
         JOIN pg_stat_user_tables AS s ON s.relid = c.oid WHERE c.relname = 'phones'",
    )
    .fetch_one(conn)
    .await
    .unwrap()
}
