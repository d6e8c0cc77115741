//! The wait queue's store contract (`store/queue.rs`): concurrent passes and mints hand
//! each free phone to exactly one entry, strictly in serving order, and never to a
//! newcomer's mint while entries wait.

use std::collections::HashSet;

use cphub::domain::{Priority, QueueId, UserId};
use cphub::store::{Allocation, NewQueueEntry};

use crate::backend_tests;
use crate::helpers::*;

fn entry(i: usize, priority: i64) -> NewQueueEntry {
    NewQueueEntry {
        queue_id: QueueId::parse("queue_id", format!("q-{i:02}")).unwrap(),
        app_id: aid(APP),
        user_id: UserId::parse("user_id", format!("u-{i:02}")).unwrap(),
        token_name: "platform".to_owned(),
        priority: Priority::parse("priority", priority).unwrap(),
        now: at("18:59:30"),
        expires_at: at("19:10:00"),
    }
}

/// 30 entries (every third urgent) wait while no phone is known; then 10 phones come up
/// and 8 passes and 8 newcomers' mints race for them. The 10 entries
/// first in serving order get one phone each; no mint gets any.
async fn racing_passes_and_mints_serve_the_queue_in_order_once(backend: Backend) {
    let store = open(backend).await;
    let joined_empty = mint_times();
    for i in 0..30 {
        let priority = if i % 3 == 2 { 7 } else { 0 };
        store
            .join_queue(&entry(i, priority), &joined_empty)
            .await
            .unwrap();
    }
    let phones: Vec<String> = (1..=10).map(|i| format!("p-{i}")).collect();
    idle_phones(
        &store,
        &phones.iter().map(String::as_str).collect::<Vec<_>>(),
        "18:59:00",
    )
    .await;

    // Mints first: without the queue served first, they would win the phones.
    let mut racers = tokio::task::JoinSet::new();
    for i in 0..8 {
        let shared = store.shared();
        racers.spawn(async move {
            let session = format!("newcomer-{i}");
            let request = mint_request(&Mint {
                session: &session,
                pinned: None,
                now: "19:00:00",
                hold_until: "19:01:00",
                fresh_since: "18:58:00",
            });
            Some(shared.mint_session(&request).await.unwrap())
        });
        let shared = store.shared();
        racers.spawn(async move {
            shared.serve_queue(&mint_times()).await.unwrap();
            None
        });
    }
    let mints: Vec<Allocation> = racers.join_all().await.into_iter().flatten().collect();
    assert!(
        mints.iter().all(|a| *a == Allocation::NoFreePhone),
        "{mints:?}"
    );

    let listed = store.queue_entries(at("19:00:00"), 100).await.unwrap();
    let assigned: Vec<&str> = listed
        .iter()
        .filter(|e| e.session_id.is_some())
        .map(|e| e.queue_id.as_str())
        .collect();
    // Serving order: the ten urgent ones (2, 5, …, 29), then none of the others.
    let expected: Vec<String> = (0..30)
        .filter(|i| i % 3 == 2)
        .map(|i| format!("q-{i:02}"))
        .collect();
    let mut sorted = assigned.clone();
    sorted.sort();
    assert_eq!(
        sorted, expected,
        "the first ten in serving order, each once"
    );
    let used: HashSet<String> = listed
        .iter()
        .filter_map(|e| e.phone_id.as_ref())
        .map(|p| p.to_string())
        .collect();
    assert_eq!(used.len(), 10, "one phone per entry: {listed:?}");
    let waiting: Vec<(String, i64)> = listed
        .iter()
        .filter(|e| e.session_id.is_none())
        .map(|e| (e.queue_id.to_string(), e.position))
        .collect();
    let in_order: Vec<(String, i64)> = (0..30)
        .filter(|i| i % 3 != 2)
        .enumerate()
        .map(|(k, i)| (format!("q-{i:02}"), k as i64 + 1))
        .collect();
    assert_eq!(waiting, in_order, "the rest keep their order");
}

/// The queue is served across apps, the highest priority and the longest waiting first:
/// players of `com.b` and `com.a` join in turn, then an urgent one of `com.b`; three phones
/// that take either app come up. Taken app by app in name order, all three went to
/// `com.a`'s first players and the urgent player waited behind them.
async fn the_queue_is_served_across_apps_by_priority_then_waiting_time(backend: Backend) {
    let store = open(backend).await;
    let joined = mint_times();
    let apps = ["com.b", "com.a", "com.b", "com.a", "com.b", "com.a"];
    for (i, app) in apps.iter().enumerate() {
        let entry = NewQueueEntry {
            app_id: aid(app),
            ..entry(i, 0)
        };
        store.join_queue(&entry, &joined).await.unwrap();
    }
    let urgent = NewQueueEntry {
        app_id: aid("com.b"),
        ..entry(6, 5)
    };
    store.join_queue(&urgent, &joined).await.unwrap();
    idle_phones(&store, &["p-1", "p-2", "p-3"], "18:59:00").await;

    store.serve_queue(&mint_times()).await.unwrap();

    let listed = store.queue_entries(at("19:00:00"), 100).await.unwrap();
    let mut assigned: Vec<&str> = (listed.iter())
        .filter(|e| e.session_id.is_some())
        .map(|e| e.queue_id.as_str())
        .collect();
    assigned.sort();
    assert_eq!(assigned, ["q-00", "q-01", "q-06"], "{listed:?}");
}

/// A player's join while their entry is still in play — waiting, or assigned a session not
/// used yet — is that entry (a retried join), its place and priority kept; once the entry's
/// session is gone (its hold lapsed) or the entry expired, a join is a new entry.
async fn a_player_joining_again_gets_their_entry_while_it_is_in_play(backend: Backend) {
    let store = open(backend).await;
    let times = mint_times();
    let first = store.join_queue(&entry(0, 0), &times).await.unwrap();
    let retried = NewQueueEntry {
        queue_id: QueueId::parse("queue_id", "q-retry".to_owned()).unwrap(),
        priority: Priority::parse("priority", 9).unwrap(),
        expires_at: at("19:20:00"),
        ..entry(0, 0)
    };

    let again = store.join_queue(&retried, &times).await.unwrap();
    let other = store.join_queue(&entry(1, 0), &times).await.unwrap();

    assert!(first.new && !again.new && other.new);
    assert_eq!(again.queue_id.as_str(), "q-00");
    let kept = store
        .queue_entry(&again.queue_id, at("19:15:00"))
        .await
        .unwrap();
    let kept = kept.expect("alive past its first expiry: the join moved it on");
    assert_eq!(
        (kept.priority.value(), kept.position),
        (0, 1),
        "its place and priority"
    );

    idle_phones(&store, &["p-1"], "18:59:00").await;
    store.serve_queue(&times).await.unwrap();
    let assigned = store.join_queue(&retried, &times).await.unwrap();
    assert_eq!(
        (assigned.queue_id.as_str(), assigned.new),
        ("q-00", false),
        "assigned"
    );

    // The assigned session's hold lapses unused: the entry is over, a join is new.
    store.release_lapsed_holds(at("19:05:00")).await.unwrap();
    let after = store.join_queue(&retried, &times).await.unwrap();
    assert_eq!((after.queue_id.as_str(), after.new), ("q-retry", true));
}

backend_tests!(
    racing_passes_and_mints_serve_the_queue_in_order_once,
    the_queue_is_served_across_apps_by_priority_then_waiting_time,
    a_player_joining_again_gets_their_entry_while_it_is_in_play,
);
