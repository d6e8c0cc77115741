//! `Store::record_heartbeats`: heartbeats may arrive late and out of order (as events do,
//! 6.3), so what a heartbeat says only replaces older news, while cphub's own receive clock
//! (`last_seen_at`, what staleness is judged by) moves forward on any heartbeat.

use std::time::Duration;

use cphub::domain::SessionState;
use cphub::store::HeartbeatBuffer;

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    a_heartbeat_makes_a_phone_known_and_idle,
    a_delayed_older_heartbeat_does_not_undo_newer_news,
    last_seen_at_never_moves_back,
    a_sessions_last_heartbeat_only_moves_forward,
    an_event_is_written_between_the_chunks_of_a_large_flush,
    a_chunked_flush_writes_every_phone_once,
    a_session_ends_abandoned_once_its_phones_heartbeats_leave_it_for_the_grace_6_4,
);

/// Chapter 6.4: a running game's heartbeats name its session, and "after you exit a cloud
/// game, the value of session_id is left blank". Judged on the phone's clock, from the
/// session's last heartbeat (or its enter), with `GAME_GONE_AFTER` (15 s) of grace for a
/// quit still on its way: blank heartbeats within the grace, or sent before the enter, end
/// nothing; one past it ends the session at its last heartbeat and frees the phone.
async fn a_session_ends_abandoned_once_its_phones_heartbeats_leave_it_for_the_grace_6_4(
    backend: Backend,
) {
    let store = open(backend).await;
    let fresh_since = at("18:59:00");
    let abandon = |now: &'static str| store.abandon_sessions(fresh_since, GAME_GONE_AFTER, at(now));
    idle_phones(&store, &["p-1", "p-2"], "19:00:00").await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;
    apply(&store, &[enter("s-2", "p-2", "19:00:00")]).await;
    record(
        &store,
        &[heartbeat("p-1", "19:00:05", Some("s-1"), "19:00:05")],
    )
    .await;
    record(&store, &[heartbeat("p-2", "19:00:14", None, "19:00:14")]).await;

    assert!(
        abandon("19:00:14").await.unwrap().is_empty(),
        "within the grace"
    );
    // p-1 says no session 15 s after its last heartbeat named s-1; p-2 a delayed blank
    // heartbeat from before its enter, then one at 19:00:15.
    record(&store, &[heartbeat("p-1", "19:00:20", None, "19:00:20")]).await;
    record(&store, &[heartbeat("p-2", "18:59:50", None, "19:00:20")]).await;
    let ended: Vec<String> = (abandon("19:00:20").await.unwrap().iter())
        .map(|s| s.session_id.to_string())
        .collect();
    assert_eq!(ended, ["s-1"]);
    record(&store, &[heartbeat("p-2", "19:00:15", None, "19:00:21")]).await;
    let ended = abandon("19:00:21").await.unwrap();
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].session_id.as_str(), "s-2");

    let s1 = session(&store, "s-1").await.unwrap();
    assert_eq!(s1.state, SessionState::Abandoned);
    assert_eq!(s1.ended_at, Some(at("19:00:05")), "at its last heartbeat");
    let s2 = session(&store, "s-2").await.unwrap();
    assert_eq!(
        s2.ended_at,
        Some(at("19:00:00")),
        "at its enter: no heartbeat named it"
    );
    for p in ["p-1", "p-2"] {
        assert_eq!(phone_state(&store, p, fresh_since).await, "idle", "{p}");
    }
}

async fn a_heartbeat_makes_a_phone_known_and_idle(backend: Backend) {
    let store = open(backend).await;

    record(&store, &[heartbeat("p-1", "19:00:00", None, "19:00:01")]).await;

    let p = phone(&store, "p-1", at("18:59:00")).await.expect("known");
    assert_eq!(p.last_heartbeat_at, Some(at("19:00:00")));
    assert_eq!(p.last_seen_at, Some(at("19:00:01")));
    assert_eq!(phone_state(&store, "p-1", at("18:59:00")).await, "idle");
    assert_eq!(
        phone_state(&store, "p-1", at("19:05:00")).await,
        "stale",
        "not heard from since the freshness cut-off"
    );
}

/// Reordered heartbeats: the phone's newer heartbeat (playing s-1) arrives first, its older
/// one (idle) is delayed. The delayed one must not make the phone look idle again, but it
/// is a sign of life: cphub heard from the phone later.
async fn a_delayed_older_heartbeat_does_not_undo_newer_news(backend: Backend) {
    let store = open(backend).await;
    record(
        &store,
        &[heartbeat("p-1", "19:05:00", Some("s-1"), "19:05:01")],
    )
    .await;

    record(&store, &[heartbeat("p-1", "19:00:00", None, "19:06:00")]).await;

    let p = phone(&store, "p-1", at("19:00:00")).await.unwrap();
    assert_eq!(p.last_heartbeat_at, Some(at("19:05:00")));
    assert_eq!(text(&p.heartbeat_session_id).as_deref(), Some("s-1"));
    assert_eq!(text(&p.heartbeat_app_id).as_deref(), Some(APP));
    assert_eq!(
        p.last_seen_at,
        Some(at("19:06:00")),
        "receive clock moved on"
    );
    assert_eq!(phone_state(&store, "p-1", at("19:05:30")).await, "occupied");

    // A newer heartbeat does replace it.
    record(&store, &[heartbeat("p-1", "19:07:00", None, "19:07:01")]).await;
    let p = phone(&store, "p-1", at("19:00:00")).await.unwrap();
    assert_eq!(p.last_heartbeat_at, Some(at("19:07:00")));
    assert_eq!(p.heartbeat_session_id, None);
    assert_eq!(p.heartbeat_app_id, None);
    assert_eq!(p.last_seen_at, Some(at("19:07:01")));
}

/// `last_seen_at` is the latest of cphub's receive times, whatever order flushes come in.
async fn last_seen_at_never_moves_back(backend: Backend) {
    let store = open(backend).await;
    record(&store, &[heartbeat("p-1", "19:05:00", None, "19:05:30")]).await;

    // A flush carrying an earlier receive time (and a newer phone time) comes later.
    record(&store, &[heartbeat("p-1", "19:06:00", None, "19:05:10")]).await;

    let p = phone(&store, "p-1", at("19:00:00")).await.unwrap();
    assert_eq!(p.last_seen_at, Some(at("19:05:30")));
    assert_eq!(p.last_heartbeat_at, Some(at("19:06:00")));
}

/// A session's last heartbeat (what an abandoned session is billed until) only moves
/// forward, in the phone's time.
async fn a_sessions_last_heartbeat_only_moves_forward(backend: Backend) {
    let store = open(backend).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;

    record(
        &store,
        &[heartbeat("p-1", "19:05:00", Some("s-1"), "19:05:01")],
    )
    .await;
    assert_eq!(
        session(&store, "s-1").await.unwrap().last_heartbeat_at,
        Some(at("19:05:00"))
    );

    record(
        &store,
        &[heartbeat("p-1", "19:02:00", Some("s-1"), "19:06:00")],
    )
    .await;
    let s = session(&store, "s-1").await.unwrap();
    assert_eq!(
        s.last_heartbeat_at,
        Some(at("19:05:00")),
        "older one ignored"
    );
    assert_eq!(s.state, SessionState::Playing);

    record(
        &store,
        &[heartbeat("p-1", "19:07:00", Some("s-1"), "19:07:01")],
    )
    .await;
    assert_eq!(
        session(&store, "s-1").await.unwrap().last_heartbeat_at,
        Some(at("19:07:00"))
    );

    // A heartbeat sent before the quit, received after it: the ended session is left as its
    // quit closed it (on PostgreSQL its update would run the rollups' trigger over every
    // bucket it counts in).
    apply(&store, &[quit("s-1", "p-1", "19:08:00", 480)]).await;
    record(
        &store,
        &[heartbeat("p-1", "19:07:59", Some("s-1"), "19:08:02")],
    )
    .await;
    let ended = session(&store, "s-1").await.unwrap();
    assert_eq!(ended.state, SessionState::Ended);
    assert_eq!(ended.last_heartbeat_at, Some(at("19:07:00")));
}

/// The flush and the events share SQLite's one writer. A whole fleet's flush written as one
/// transaction made an enter wait for all of it (the 134 ms event p99 after a heartbeat
/// flood); written in chunks, an event that arrives during the flush is committed before the
/// flush's last chunk. Shown by order, not by time: when the enter's write returns, the phone
/// of the last chunk (highest id, chunks go in key order) has not been written yet.
async fn an_event_is_written_between_the_chunks_of_a_large_flush(backend: Backend) {
    const PHONES: usize = 20_000;
    let store = open(backend).await;
    let buffer = std::sync::Arc::new(HeartbeatBuffer::new(200));
    for n in 0..PHONES {
        buffer.record(heartbeat(
            &format!("p-{n:05}"),
            "19:00:00",
            None,
            "19:00:01",
        ));
    }
    let flush = {
        let (buffer, store) = (std::sync::Arc::clone(&buffer), store.shared());
        tokio::spawn(async move { buffer.flush(&*store, Duration::from_secs(60)).await })
    };
    // Wait for the first chunk: the flush holds (or is about to take) the writer.
    while phone(&store, "p-00000", at("18:00:00")).await.is_none() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    apply(&store, &[enter("s-1", "p-event", "19:00:00")]).await;

    let last = format!("p-{:05}", PHONES - 1);
    let last_written = phone(&store, &last, at("18:00:00")).await.is_some();
    assert!(
        !last_written,
        "the enter waited for the whole flush instead of one chunk"
    );
    assert_eq!(flush.await.unwrap().expect("flush writes"), PHONES);
    assert!(phone(&store, &last, at("18:00:00")).await.is_some());
}

/// Chunks are a detail of the write: every buffered phone is written exactly once, with its
/// newest heartbeat, and the buffer is empty afterwards (a chunk boundary inside the batch,
/// and a last chunk shorter than the others).
async fn a_chunked_flush_writes_every_phone_once(backend: Backend) {
    let store = open(backend).await;
    let buffer = HeartbeatBuffer::new(3);
    for n in 0..10 {
        buffer.record(heartbeat(&format!("p-{n}"), "19:00:00", None, "19:00:01"));
    }
    buffer.record(heartbeat("p-4", "19:00:05", Some("s-1"), "19:00:06"));
    buffer.record(heartbeat("p-4", "19:00:02", None, "19:00:07")); // older: ignored

    let written = buffer.flush(&*store, Duration::from_secs(60)).await;

    assert_eq!(written.expect("flush writes"), 10);
    assert!(buffer.is_empty());
    for n in 0..10 {
        let p = phone(&store, &format!("p-{n}"), at("18:00:00")).await;
        assert!(p.is_some(), "p-{n} written");
    }
    let p4 = phone(&store, "p-4", at("18:00:00")).await.unwrap();
    assert_eq!(p4.last_heartbeat_at, Some(at("19:00:05")));
    assert_eq!(text(&p4.heartbeat_session_id).as_deref(), Some("s-1"));
    assert_eq!(
        buffer
            .flush(&*store, Duration::from_secs(60))
            .await
            .unwrap(),
        0
    );
}
