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

/// An entry's phone goes silent between its assignment and the first poll (p-1, last heard
/// 18:59, stale by the poll at 19:03). The poll hands out nothing: the assignment is
/// undone (its session expired, p-1's hold freed) and the entry waits again at its place,
/// first in line. The next pass gives it p-2, which serves, and the poll after that hands
/// it out. Before, the poll handed out p-1, which the player could not reach; once its
/// hold lapsed the entry was closed, and the player had to join again at the back. Each
/// assignment is its own `queue.assigned`.
async fn an_assigned_phone_silent_before_the_first_poll_is_replaced_and_the_place_kept(
    backend: Backend,
) {
    use cphub::access::MintedAccess;
    use cphub::config::{Cipher, GcmIv, KeySize};
    use cphub::store::{Issue, MintTimes, QueueIssue};
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let assigned_at = MintTimes {
        hold_until: at("19:10:00"),
        ..mint_times()
    };
    store.join_queue(&entry(0, 0), &assigned_at).await.unwrap();
    store.join_queue(&entry(1, 0), &assigned_at).await.unwrap();
    let first = store
        .queue_entry(&entry(0, 0).queue_id, at("19:00:00"))
        .await
        .unwrap();
    let first_session = first.unwrap().session_id.expect("p-1 was free").to_string();
    idle_phones(&store, &["p-2"], "19:02:30").await;
    let poll_at = MintTimes {
        now: at("19:03:00"),
        fresh_since: at("19:01:00"),
        auth_ts: at("19:05:00").epoch_millis(),
        hold_until: at("19:05:05"),
        match_app: false,
    };
    let cipher = Cipher::Gcm {
        key: KeySize::Aes256,
        iv: GcmIv::Twelve,
    };
    let poll = |times: MintTimes| QueueIssue {
        queue_id: entry(0, 0).queue_id,
        access: MintedAccess::mint(cipher),
        times,
    };

    let issued = store.issue_queued_session(&poll(poll_at)).await.unwrap();

    assert_eq!(issued, Issue::Waiting);
    let back = store
        .queue_entry(&entry(0, 0).queue_id, at("19:03:00"))
        .await
        .unwrap();
    let back = back.unwrap();
    assert_eq!(
        (back.session_id.as_ref(), back.position),
        (None, 1),
        "{back:?}"
    );
    let undone = session(&store, &first_session).await.unwrap();
    assert_eq!(undone.state.as_str(), "expired");
    store.serve_queue(&poll_at).await.unwrap();
    let Issue::Issued(seat) = store.issue_queued_session(&poll(poll_at)).await.unwrap() else {
        panic!("the entry's next phone is handed out");
    };
    assert_eq!(seat.phone_id.as_str(), "p-2");
    let second = store
        .queue_entry(&entry(1, 0).queue_id, at("19:03:00"))
        .await
        .unwrap();
    assert_eq!(second.unwrap().position, 1, "still behind the first");
    let assigned: Vec<String> = (store.outbox(0, 1000).await.unwrap().into_iter())
        .filter(|e| e.event_type == cphub::domain::WebhookEventType::QueueAssigned)
        .map(|e| e.id)
        .collect();
    let second_session = seat.session_id.as_str();
    assert_eq!(
        assigned,
        [
            format!("evt_queue.assigned_q-00_{first_session}"),
            format!("evt_queue.assigned_q-00_{second_session}")
        ]
    );
}

/// An entry made before entries had an owner (migration 0039), or by a replica not upgraded
/// yet, has the empty token name: the first token to join as its player adopts it, its
/// place kept, and from then on it is that token's alone.
async fn an_entry_from_before_owners_is_adopted_by_the_first_token_to_claim_it(backend: Backend) {
    let store = open(backend).await;
    let times = mint_times();
    let unowned = NewQueueEntry {
        token_name: String::new(),
        ..entry(0, 0)
    };
    store.join_queue(&unowned, &times).await.unwrap();

    let claimed = store.join_queue(&entry(0, 0), &times).await.unwrap();

    assert_eq!((claimed.queue_id.as_str(), claimed.new), ("q-00", false));
    let queue_id = &claimed.queue_id;
    let now = at("19:00:00");
    assert!(
        !store.leave_queue(queue_id, "another", now).await.unwrap(),
        "adopted"
    );
    assert!(store.leave_queue(queue_id, "platform", now).await.unwrap());
}

backend_tests!(
    an_entry_from_before_owners_is_adopted_by_the_first_token_to_claim_it,
    an_assigned_phone_silent_before_the_first_poll_is_replaced_and_the_place_kept,
    racing_passes_and_mints_serve_the_queue_in_order_once,
    the_queue_is_served_across_apps_by_priority_then_waiting_time,
    a_player_joining_again_gets_their_entry_while_it_is_in_play,
);
