//! `Store::record_heartbeats`: heartbeats may arrive late and out of order (as events do,
//! 6.3), so what a heartbeat says only replaces older news, while cphub's own receive clock
//! (`last_seen_at`, what staleness is judged by) moves forward on any heartbeat.

use cphub::domain::SessionState;

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    a_heartbeat_makes_a_phone_known_and_idle,
    a_delayed_older_heartbeat_does_not_undo_newer_news,
    last_seen_at_never_moves_back,
    a_sessions_last_heartbeat_only_moves_forward,
);

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
}
