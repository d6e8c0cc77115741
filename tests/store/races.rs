//! The watchdog abandoning a session of a silent phone while its quit (6.3) arrives: the
//! session ends exactly once, with one `session.ended`, whichever takes the session first.
//!
//! On PostgreSQL the two run in two transactions, interleaved on purpose: the test holds
//! the session's row lock, starts the first, waits until PostgreSQL shows it waiting for
//! the lock, starts the second, waits until both wait, and lets go. Row-lock waiters are
//! served in the order they queued, so the first started takes the session first and the
//! second runs against what it committed. On SQLite the single writer serialises them: the
//! same two orders run one after the other.

use std::sync::Arc;

use cphub::domain::{EventKind, Session, SessionState, WebhookEventType};
use cphub::store::Store;
use sqlx::{Connection, Executor, PgConnection};

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    a_quit_then_the_watchdog_ends_the_session_once_by_its_quit,
    the_watchdog_then_a_quit_ends_the_session_once_abandoned,
);

/// The harness's own premise: the holder, polling inside its transaction, sees a statement
/// of a connection opened after its first look. PostgreSQL kept the backends it listed at
/// that look, and a store pool that opened a connection for the second statement (a busy
/// machine) left the races above waiting a minute for a waiter they could not see.
#[test]
fn a_lock_waiter_on_a_connection_opened_after_the_first_look_is_seen() {
    crate::helpers::run_scenario(
        "a_lock_waiter_on_a_connection_opened_after_the_first_look_is_seen",
        async {
            if !postgres_available() {
                return;
            }
            let store = playing_on_a_silent_phone(Backend::Postgres).await;
            let mut holder = PgConnection::connect(store.url()).await.unwrap();
            holder.execute("BEGIN").await.unwrap();
            holder.execute(LOCK_S1).await.unwrap();
            assert_eq!(lock_waiters(&mut holder).await, 0, "the first look");

            let mut late = PgConnection::connect(store.url()).await.unwrap();
            let waiter = tokio::spawn(async move { late.execute(LOCK_S1).await.map(drop) });
            wait_for_lock_waiters(&mut holder, 1).await;
            holder.execute("COMMIT").await.unwrap();
            waiter
                .await
                .unwrap()
                .expect("the late statement takes the lock");
        },
    )
}

const LOCK_S1: &str = "SELECT 1 FROM sessions WHERE session_id = 's-1' FOR UPDATE";

#[derive(Debug, Clone, Copy, PartialEq)]
enum First {
    Quit,
    Abandon,
}

/// s-1 playing on p-1, whose last heartbeat (19:00:30) is older than the watchdog's
/// `fresh_since` (19:05:00).
async fn playing_on_a_silent_phone(backend: Backend) -> TestStore {
    let store = open(backend).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;
    record(
        &store,
        &[heartbeat("p-1", "19:00:30", Some("s-1"), "19:00:30")],
    )
    .await;
    store
}

async fn the_quit(store: Arc<dyn Store>) {
    apply(&store, &[quit("s-1", "p-1", "19:02:00", 120)]).await;
}

async fn the_abandonment(store: Arc<dyn Store>) -> Vec<Session> {
    let abandon = store.abandon_sessions(at("19:05:00"), GAME_GONE_AFTER, at("19:05:00"));
    abandon.await.expect("watchdog pass")
}

/// Runs the quit and the abandonment, `first` taking the session first; what the
/// abandonment returned.
async fn race(store: &TestStore, backend: Backend, first: First) -> Vec<Session> {
    if backend == Backend::Sqlite {
        if first == First::Quit {
            the_quit(store.shared()).await;
            return the_abandonment(store.shared()).await;
        }
        let abandoned = the_abandonment(store.shared()).await;
        the_quit(store.shared()).await;
        return abandoned;
    }
    let mut holder = PgConnection::connect(store.url()).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder.execute(LOCK_S1).await.unwrap();
    let quit = || tokio::spawn(the_quit(store.shared()));
    let abandon = || tokio::spawn(the_abandonment(store.shared()));
    let (quit, abandon) = match first {
        First::Quit => {
            let q = quit();
            wait_for_lock_waiters(&mut holder, 1).await;
            (q, abandon())
        }
        First::Abandon => {
            let a = abandon();
            wait_for_lock_waiters(&mut holder, 1).await;
            (quit(), a)
        }
    };
    wait_for_lock_waiters(&mut holder, 2).await;
    holder.execute("COMMIT").await.unwrap();
    quit.await.unwrap();
    abandon.await.unwrap()
}

/// The `session.ended` rows of s-1's outbox.
async fn ends(store: &TestStore) -> Vec<serde_json::Value> {
    let outbox = store.outbox(0, 100).await.expect("outbox reads");
    (outbox.into_iter())
        .filter(|e| e.event_type == WebhookEventType::SessionEnded && e.subject == "s-1")
        .map(|e| e.data)
        .collect()
}

async fn a_quit_then_the_watchdog_ends_the_session_once_by_its_quit(backend: Backend) {
    let store = playing_on_a_silent_phone(backend).await;

    let abandoned = race(&store, backend, First::Quit).await;

    assert!(
        abandoned.is_empty(),
        "ended by its quit, nothing left to abandon"
    );
    let s = session(&store, "s-1").await.unwrap();
    assert_eq!(s.state, SessionState::Ended);
    assert_eq!(s.duration_seconds, Some(120));
    assert_eq!(s.reported_run_time, Some(120), "the acknowledged quit kept");
    let ends = ends(&store).await;
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["end_reason"], "quit");
}

async fn the_watchdog_then_a_quit_ends_the_session_once_abandoned(backend: Backend) {
    let store = playing_on_a_silent_phone(backend).await;

    let abandoned = race(&store, backend, First::Abandon).await;

    assert_eq!(abandoned.len(), 1);
    let s = session(&store, "s-1").await.unwrap();
    assert_eq!(
        s.state,
        SessionState::Abandoned,
        "the verdict stands (6.3 came late)"
    );
    assert_eq!(s.duration_seconds, Some(30), "billed to the last heartbeat");
    let ends = ends(&store).await;
    assert_eq!(ends.len(), 1, "one session.ended: {ends:?}");
    assert_eq!(ends[0]["end_reason"], "abandoned");
    let quits = event_log(&store, "s-1").await;
    let accepted_quits = (quits.iter()).filter(|l| l.kind == EventKind::Quit).count();
    assert!(accepted_quits <= 1, "{quits:?}");
}
