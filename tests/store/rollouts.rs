//! Rollouts in the book (`store/rollout.rs`, migration 0016): a phone drained by a rollout
//! is skipped by a mint and by the wait queue, and returned when the rollout pauses or is
//! aborted; one rollout per app at a time; a phone moves only from the step it is at, so two
//! writers never both send its update (chapter 5.3.7).

use cphub::domain::WebhookEventType;
use cphub::domain::{Action, Outcome, PhoneStep, Priority, QueueId, Reason, RecoveryMark};
use cphub::domain::{PhoneId, RolloutPlan, RolloutState, UserId};
use cphub::store::{Allocation, NewQueueEntry, NewRecovery, NewRollout};
use cphub::store::{StateChange, StepChange, StoreError};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    a_drained_phone_is_neither_minted_nor_given_to_the_queue,
    a_pause_or_an_abort_returns_draining_phones_to_the_pool,
    one_rollout_per_app_at_a_time,
    a_phone_moves_only_from_the_step_it_is_at_so_its_update_is_sent_once_5_3_7,
    the_watchdog_does_not_see_a_phone_the_rollout_is_updating,
    the_rollout_sees_a_phone_the_watchdog_is_recovering,
    an_update_is_not_sent_to_a_phone_given_out_before_its_drain_unless_forced_5_3_7,
    a_phone_returned_done_failed_or_skipped_is_allocatable_again_never_while_drained,
    a_phone_held_by_two_rollouts_is_returned_only_when_both_let_go,
    a_phone_in_two_rollouts_is_updated_by_one_at_a_time_5_3_7,
    a_phone_drained_again_after_an_abort_goes_back_to_the_pool,
    a_phone_refused_its_send_rests_in_the_pool_before_a_batch_takes_it_again,
    an_abort_returns_draining_phones_and_updating_ones_once_their_job_ends,
    each_state_change_writes_one_fleet_rollout_event_with_the_phones_per_step,
    a_phone_takes_one_recovery_or_update_at_a_time_however_they_interleave,
    a_silent_phones_recovery_is_refused_once_it_is_heard_again,
    recoveries_and_updates_written_at_once_never_run_more_jobs_than_the_cap,
);

/// A drained phone about to be sent its update (5.3.7), at 19:00.
pub(crate) fn send_update(rollout_id: i64, phone_id: &PhoneId) -> StepChange<'_> {
    StepChange {
        rollout_id,
        phone_id,
        from: PhoneStep::Draining,
        to: PhoneStep::Updating,
        attempt: true,
        not_serving: false,
        in_flight_cap: None,
        only_if_free: true,
        request_id: None,
        job_id: None,
        error: None,
        now: at("19:00:00"),
    }
}

pub(crate) fn new_rollout(phones: &[&str]) -> NewRollout {
    NewRollout {
        app_id: aid(APP),
        app_version_ids: vec!["v2".to_owned()],
        target: serde_json::json!("all"),
        plan: RolloutPlan::new(0, 10, 0, 60, false).unwrap(),
        phones: phones.iter().map(|p| pid(p)).collect(),
        now: at("18:59:30"),
    }
}

/// Creates the rollout and drains its first batch (every phone).
async fn drain_all(store: &TestStore, phones: &[&str]) -> i64 {
    let rollout = store
        .create_rollout(&new_rollout(phones))
        .await
        .unwrap()
        .expect("created");
    let taken = store
        .take_rollout_batch(rollout.id, 1, 10, at("18:59:40"), at("18:59:40"))
        .await
        .unwrap();
    assert_eq!(taken, phones.len() as u64);
    rollout.id
}

async fn a_drained_phone_is_neither_minted_nor_given_to_the_queue(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    drain_all(&store, &["p-1"]).await;

    let first = mint(&store, at_seven("s-1")).await;
    let second = mint(&store, at_seven("s-2")).await;

    assert_eq!(allocated(&first).as_deref(), Some("p-2"));
    assert_eq!(second, Allocation::NoFreePhone, "p-1 is drained");
    let entry = NewQueueEntry {
        queue_id: QueueId::parse("queue_id", "q-1".to_owned()).unwrap(),
        app_id: aid(APP),
        user_id: UserId::parse("user_id", "u-1".to_owned()).unwrap(),
        token_name: "platform".to_owned(),
        priority: Priority::parse("priority", 0).unwrap(),
        now: at("19:00:00"),
        expires_at: at("19:10:00"),
    };
    store.join_queue(&entry, &mint_times()).await.unwrap();
    let pass = store.serve_queue(&mint_times()).await.unwrap();
    assert_eq!(pass.assigned, 0, "the queue skips the drained phone too");
}

/// A mint that took the phone just before the drain (on PostgreSQL, one not yet committed
/// when the engine read the phone free): the step to `updating` reads the phone again under
/// its lock and refuses, so the update (5.3.7, which restarts the game) never lands on the
/// new session; a forced update (`only_if_free` off) still goes.
async fn an_update_is_not_sent_to_a_phone_given_out_before_its_drain_unless_forced_5_3_7(
    backend: Backend,
) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let minted = mint(&store, at_seven("s-1")).await;
    assert_eq!(allocated(&minted).as_deref(), Some("p-1"));
    let id = drain_all(&store, &["p-1"]).await;
    let phone = pid("p-1");

    let sent = store.step_rollout_phone(&send_update(id, &phone)).await;

    assert!(!sent.unwrap(), "the phone is held for s-1");
    let phones = store.rollout_phones(id).await.unwrap();
    assert_eq!(
        (phones[0].state, phones[0].attempts),
        (PhoneStep::Draining, 0)
    );
    let forced = StepChange {
        only_if_free: false,
        ..send_update(id, &phone)
    };
    assert!(store.step_rollout_phone(&forced).await.unwrap());
}

async fn a_pause_or_an_abort_returns_draining_phones_to_the_pool(backend: Backend) {
    for to in [RolloutState::Paused, RolloutState::Aborted] {
        let store = open(backend).await;
        idle_phones(&store, &["p-1"], "18:59:00").await;
        let id = drain_all(&store, &["p-1"]).await;
        assert_eq!(mint(&store, at_seven("s-1")).await, Allocation::NoFreePhone);

        let change = StateChange {
            id,
            from: &[RolloutState::Running],
            to,
            by: Some("operator"),
            why: Some("looks wrong"),
            now: at("18:59:50"),
        };
        let changed = store.set_rollout_state(&change).await.unwrap().unwrap();

        assert_eq!(changed.state, to);
        let phones = store.rollout_phones(id).await.unwrap();
        assert_eq!(phones[0].state, PhoneStep::Pending, "{to}");
        let minted = mint(&store, at_seven("s-1")).await;
        assert_eq!(allocated(&minted).as_deref(), Some("p-1"), "{to}");
        // Only from the states it names.
        assert!(store.set_rollout_state(&change).await.unwrap().is_none());
        // The engine, on a read of the rollout from before the change, takes its next
        // batch: nothing is drained for a rollout no longer running.
        let taken = store
            .take_rollout_batch(id, 2, 10, at("18:59:55"), at("18:59:55"))
            .await;
        assert_eq!(taken.unwrap(), 0, "{to}");
        assert_eq!(
            store.rollout_phones(id).await.unwrap()[0].state,
            PhoneStep::Pending
        );
    }
}

async fn one_rollout_per_app_at_a_time(backend: Backend) {
    let store = open(backend).await;
    let first = store.create_rollout(&new_rollout(&["p-1"])).await.unwrap();
    let id = first.expect("the first is created").id;

    let second = store.create_rollout(&new_rollout(&["p-2"])).await.unwrap();

    assert!(second.is_none(), "the app already has a running rollout");
    let abort = StateChange {
        id,
        from: &[RolloutState::Running, RolloutState::Paused],
        to: RolloutState::Aborted,
        by: None,
        why: None,
        now: at("19:00:00"),
    };
    store.set_rollout_state(&abort).await.unwrap().unwrap();
    let third = store.create_rollout(&new_rollout(&["p-2"])).await.unwrap();
    assert!(third.is_some(), "once it ended, the app takes another");
}

async fn a_phone_moves_only_from_the_step_it_is_at_so_its_update_is_sent_once_5_3_7(
    backend: Backend,
) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let id = drain_all(&store, &["p-1"]).await;
    let phone = pid("p-1");
    let send = send_update(id, &phone);

    let first = store.step_rollout_phone(&send).await.unwrap();
    let again = store.step_rollout_phone(&send).await.unwrap();

    assert!(first);
    assert!(!again, "a second writer finds it updating already");
    let noted = StepChange {
        from: PhoneStep::Updating,
        to: PhoneStep::Updating,
        attempt: false,
        not_serving: false,
        in_flight_cap: None,
        only_if_free: false,
        job_id: Some("job-1"),
        ..send.clone()
    };
    assert!(store.step_rollout_phone(&noted).await.unwrap());
    let phones = store.rollout_phones(id).await.unwrap();
    assert_eq!(phones[0].attempts, 1);
    assert_eq!(phones[0].job_id.as_deref(), Some("job-1"));
    assert_eq!(phones[0].submitted_at, Some(at("19:00:00")));
    assert_eq!(store.rollout_jobs_in_flight().await.unwrap(), 1);
    assert!(!store.finish_rollout(id, at("19:01:00")).await.unwrap());
    let done = StepChange {
        from: PhoneStep::Updating,
        to: PhoneStep::Done,
        attempt: false,
        not_serving: false,
        in_flight_cap: None,
        only_if_free: false,
        job_id: None,
        ..send
    };
    assert!(store.step_rollout_phone(&done).await.unwrap());
    assert!(store.finish_rollout(id, at("19:01:00")).await.unwrap());
    let rollout = store.rollout(id).await.unwrap().unwrap();
    assert_eq!(rollout.state, RolloutState::Done);
}

async fn the_watchdog_does_not_see_a_phone_the_rollout_is_updating(backend: Backend) {
    let store = open(backend).await;
    // Both silent since 18:59 (stale at 19:00 with freshness from 18:59:30).
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    let id = drain_all(&store, &["p-1"]).await;
    let phone = pid("p-1");
    let send = send_update(id, &phone);
    let fresh_since = at("18:59:30");
    let before: Vec<String> = (store.unhealthy_phones(fresh_since).await.unwrap())
        .iter()
        .map(|p| p.phone_id.to_string())
        .collect();
    assert_eq!(before, ["p-1", "p-2"], "draining is not updating yet");

    store.step_rollout_phone(&send).await.unwrap();

    let after: Vec<String> = (store.unhealthy_phones(fresh_since).await.unwrap())
        .iter()
        .map(|p| p.phone_id.to_string())
        .collect();
    assert_eq!(after, ["p-2"]);
}

/// The engine waits while `recovering` is true (rollout/engine.rs `drain`): a pending
/// recovery, or the mark it leaves, counts.
async fn the_rollout_sees_a_phone_the_watchdog_is_recovering(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    let id = drain_all(&store, &["p-1", "p-2"]).await;
    store.start_recovery(&pending_restart("p-1")).await.unwrap();

    let phones = store.rollout_phones(id).await.unwrap();
    let recovering: Vec<bool> = phones.iter().map(|p| p.recovering).collect();
    assert_eq!(recovering, [true, false]);
    assert!(phones.iter().all(|p| !p.in_session));
}

/// A restart of `phone` about to be sent, logged at 18:59:45.
fn pending_restart(phone: &str) -> NewRecovery {
    NewRecovery {
        phone_id: pid(phone),
        reason: Reason::Stale,
        action: Action::Restart,
        dry_run: false,
        outcome: Outcome::Pending,
        error: None,
        started_at: at("18:59:45"),
        ended_at: None,
        detail: None,
        phone_state: Some(RecoveryMark::Recovering),
        diagnostics: Default::default(),
        unheard_since: None,
        in_flight_cap: None,
    }
}

/// The watchdog decides on its pass's snapshot, then prepares for seconds (the re-read, a
/// reset's diagnostics): a phone heard at or after `unheard_since` came back meanwhile, and
/// its recovery is refused, nothing written. Heard before, it is recorded.
async fn a_silent_phones_recovery_is_refused_once_it_is_heard_again(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    idle_phones(&store, &["p-1"], "18:59:40").await;
    let silent_since = |phone| NewRecovery {
        unheard_since: Some(at("18:59:30")),
        ..pending_restart(phone)
    };

    let came_back = store.start_recovery(&silent_since("p-1")).await;
    let still_silent = store.start_recovery(&silent_since("p-2")).await;

    assert!(
        matches!(&came_back, Err(StoreError::PhoneHeard(phone)) if phone == "p-1"),
        "{came_back:?}"
    );
    assert!(
        store
            .recoveries(Some(&pid("p-1")), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(still_silent.unwrap().outcome, Outcome::Pending);
}

/// An operator's recovery, the watchdog's pass and the rollout engine each check a phone
/// before reads of the control plane that take seconds, then write their claim: the book
/// takes one claim a phone. Of eight recoveries written at once one is pending, the others
/// refused; an update is not sent to the recovered phone, and a recovery is refused on the
/// phone being updated, naming the rollout. A recovery that sends nothing (skipped) is
/// logged whatever is under way.
async fn a_phone_takes_one_recovery_or_update_at_a_time_however_they_interleave(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    let id = drain_all(&store, &["p-1", "p-2"]).await;
    let restart = pending_restart("p-1");

    let mut racers = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (shared, restart) = (store.shared(), restart.clone());
        racers.spawn(async move { shared.start_recovery(&restart).await });
    }
    let tries = racers.join_all().await;

    let pending = tries.iter().filter(|t| t.is_ok()).count();
    assert_eq!(pending, 1, "{tries:?}");
    for refused in tries.iter().filter_map(|t| t.as_ref().err()) {
        assert!(
            matches!(refused, StoreError::PhoneBusy { rollout: None, .. }),
            "{refused:?}"
        );
    }
    assert_eq!(store.pending_recoveries().await.unwrap().len(), 1);
    let (p1, p2) = (pid("p-1"), pid("p-2"));
    assert!(
        !store
            .step_rollout_phone(&send_update(id, &p1))
            .await
            .unwrap(),
        "an update sent to a phone being restarted"
    );
    assert!(
        store
            .step_rollout_phone(&send_update(id, &p2))
            .await
            .unwrap()
    );
    let refused = store.start_recovery(&pending_restart("p-2")).await;
    assert!(
        matches!(&refused, Err(StoreError::PhoneBusy { rollout: Some(r), .. }) if *r == id),
        "{refused:?}"
    );
    let skipped = NewRecovery {
        outcome: Outcome::Skipped,
        ended_at: Some(at("18:59:45")),
        phone_state: None,
        ..pending_restart("p-2")
    };
    store.start_recovery(&skipped).await.unwrap();
    assert_eq!(store.pending_recoveries().await.unwrap().len(), 1);
}

/// `watchdog.max_in_flight` counted where the jobs are written: each writer (replicas, the
/// watchdog's pass, an operator's request, the rollout engine) read the count seconds
/// before, so eight recoveries of eight phones written at once under a cap of 3 leave 3
/// pending and refuse 5, and an update is sent only once a place is free again.
async fn recoveries_and_updates_written_at_once_never_run_more_jobs_than_the_cap(backend: Backend) {
    let store = open(backend).await;
    let phones: Vec<String> = (1..=10).map(|n| format!("p-{n}")).collect();
    let names: Vec<&str> = phones.iter().map(String::as_str).collect();
    idle_phones(&store, &names, "18:59:00").await;
    let id = drain_all(&store, &["p-9"]).await;

    let mut racers = tokio::task::JoinSet::new();
    for phone in &names[..8] {
        let shared = store.shared();
        let restart = NewRecovery {
            in_flight_cap: Some(3),
            ..pending_restart(phone)
        };
        racers.spawn(async move { shared.start_recovery(&restart).await });
    }
    let tries = racers.join_all().await;

    let pending = tries.iter().filter(|t| t.is_ok()).count();
    assert_eq!(pending, 3, "{tries:?}");
    for refused in tries.iter().filter_map(|t| t.as_ref().err()) {
        assert!(matches!(refused, StoreError::InFlightCap(3)), "{refused:?}");
    }
    assert_eq!(store.pending_recoveries().await.unwrap().len(), 3);

    let last = pid("p-9");
    let capped = |cap| StepChange {
        in_flight_cap: Some(cap),
        ..send_update(id, &last)
    };
    let sent = store.step_rollout_phone(&capped(3)).await.unwrap();
    assert!(!sent, "an update sent with 3 jobs running under a cap of 3");
    assert!(store.step_rollout_phone(&capped(4)).await.unwrap());
    let fifth = NewRecovery {
        in_flight_cap: Some(4),
        ..pending_restart("p-10")
    };
    let refused = store.start_recovery(&fifth).await;
    assert!(
        matches!(refused, Err(StoreError::InFlightCap(4))),
        "the update counts: {refused:?}"
    );
}

/// Moves p-1 of rollout `id` from `from` to `to` at 19:00.
async fn step(store: &TestStore, id: i64, from: PhoneStep, to: PhoneStep) {
    let phone = pid("p-1");
    let change = StepChange {
        from,
        to,
        attempt: false,
        not_serving: false,
        in_flight_cap: None,
        only_if_free: false,
        ..send_update(id, &phone)
    };
    assert!(
        store.step_rollout_phone(&change).await.unwrap(),
        "{from} → {to}"
    );
}

/// Whether a mint pinned to p-1 gets it, and whether an unpinned one does: a drained phone
/// is refused both ways (the pinned one as busy).
async fn p1_allocatable(store: &TestStore, session: &str) -> bool {
    let pinned = Mint {
        pinned: Some("p-1"),
        ..at_seven(session)
    };
    let got = allocated(&mint(store, pinned).await).as_deref() == Some("p-1");
    if got {
        // Give it back, so the next look starts from an idle phone again.
        store.release_lapsed_holds(at("19:05:00")).await.unwrap();
    }
    got
}

/// `phones.drained_by_rollout` (migration 0018) is set by the drain and cleared by each way
/// a phone leaves the drained steps: done, failed, skipped.
async fn a_phone_returned_done_failed_or_skipped_is_allocatable_again_never_while_drained(
    backend: Backend,
) {
    use PhoneStep::*;
    let ways: [&[PhoneStep]; 3] = [
        &[Draining, Updating, Verifying, Done],
        &[Draining, Updating, Failed],
        &[Draining, Skipped],
    ];
    for way in ways {
        let store = open(backend).await;
        idle_phones(&store, &["p-1"], "18:59:00").await;
        let id = drain_all(&store, &["p-1"]).await;
        for (n, pair) in way.windows(2).enumerate() {
            let session = format!("s-{n}");
            assert!(
                !p1_allocatable(&store, &session).await,
                "{way:?}: at {}",
                pair[0]
            );
            step(&store, id, pair[0], pair[1]).await;
        }
        assert!(p1_allocatable(&store, "s-back").await, "{way:?}: returned");
    }
}

/// A send of 5.3.7 that fails without anything done (an outage) puts its phone back to
/// draining; an abort that landed during the call had returned only the phones draining
/// then. The engine returns such a stray phone of a rollout no longer running to the pool;
/// a running rollout's draining phones stay drained.
async fn a_phone_drained_again_after_an_abort_goes_back_to_the_pool(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let id = drain_all(&store, &["p-1"]).await;
    let phone = pid("p-1");
    assert!(
        store
            .step_rollout_phone(&send_update(id, &phone))
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .return_drained_rollout_phones(id, at("19:00:01"))
            .await
            .unwrap(),
        0
    );
    let abort = StateChange {
        id,
        from: &[RolloutState::Running],
        to: RolloutState::Aborted,
        by: None,
        why: None,
        now: at("19:00:02"),
    };
    store
        .set_rollout_state(&abort)
        .await
        .unwrap()
        .expect("aborted");
    step(&store, id, PhoneStep::Updating, PhoneStep::Draining).await;
    assert!(!p1_allocatable(&store, "s-1").await, "stray: still drained");

    let returned = store
        .return_drained_rollout_phones(id, at("19:00:03"))
        .await;

    assert_eq!(returned.unwrap(), 1);
    assert_eq!(
        store.rollout_phones(id).await.unwrap()[0].state,
        PhoneStep::Pending
    );
    assert!(p1_allocatable(&store, "s-2").await);
}

/// A phone refused its update without anything done (an outage) is pending again with the
/// refusal as its error, and rests in the pool (a minute here) before a batch
/// takes it again; a skipped phone is taken as before. Taken at once, every batch drained
/// it straight back and held it out of allocation for the whole outage.
async fn a_phone_refused_its_send_rests_in_the_pool_before_a_batch_takes_it_again(
    backend: Backend,
) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    let id = drain_all(&store, &["p-1", "p-2"]).await;
    let (p1, p2) = (pid("p-1"), pid("p-2"));
    assert!(
        store
            .step_rollout_phone(&send_update(id, &p1))
            .await
            .unwrap()
    );
    let refused = StepChange {
        from: PhoneStep::Updating,
        to: PhoneStep::Pending,
        attempt: false,
        not_serving: false,
        in_flight_cap: None,
        only_if_free: false,
        error: Some("not sent (5.3.7), tried again: CPS.0003"),
        ..send_update(id, &p1)
    };
    assert!(store.step_rollout_phone(&refused).await.unwrap());
    let skipped = StepChange {
        from: PhoneStep::Draining,
        to: PhoneStep::Skipped,
        attempt: false,
        not_serving: false,
        in_flight_cap: None,
        only_if_free: false,
        ..send_update(id, &p2)
    };
    assert!(store.step_rollout_phone(&skipped).await.unwrap());

    let resting = store.take_rollout_batch(id, 2, 10, at("19:00:30"), at("18:59:30"));
    let resting = resting.await.unwrap();
    let rested = store.take_rollout_batch(id, 3, 10, at("19:01:01"), at("19:00:01"));
    let rested = rested.await.unwrap();

    assert_eq!((resting, rested), (1, 1), "p-2 at once, p-1 once it rested");
    let phones = store.rollout_phones(id).await.unwrap();
    let batches: Vec<_> = phones
        .iter()
        .map(|p| (p.phone_id.to_string(), p.batch))
        .collect();
    assert_eq!(
        batches,
        [("p-1".to_owned(), Some(3)), ("p-2".to_owned(), Some(2))]
    );
}

/// p-1, a phone with two games, drained by a rollout of each: the store and the two ids.
async fn drained_by_two_rollouts(backend: Backend) -> (TestStore, i64, i64) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let first = drain_all(&store, &["p-1"]).await;
    let other = NewRollout {
        app_id: aid("com.example.other"),
        ..new_rollout(&["p-1"])
    };
    let second = store.create_rollout(&other).await.unwrap().unwrap().id;
    let taken = store
        .take_rollout_batch(second, 1, 10, at("18:59:45"), at("18:59:45"))
        .await;
    assert_eq!(taken.unwrap(), 1);
    (store, first, second)
}

/// A phone drained by the rollouts of two of its games is sent one update at a time: the
/// second rollout's step to `updating` waits while the first is updating or verifying it
/// (two 5.3.7 jobs at once on one phone), and goes once the first is done.
async fn a_phone_in_two_rollouts_is_updated_by_one_at_a_time_5_3_7(backend: Backend) {
    let (store, first, second) = drained_by_two_rollouts(backend).await;
    let phone = pid("p-1");
    assert!(
        store
            .step_rollout_phone(&send_update(first, &phone))
            .await
            .unwrap()
    );

    for busy in [PhoneStep::Updating, PhoneStep::Verifying] {
        if busy == PhoneStep::Verifying {
            step(&store, first, PhoneStep::Updating, PhoneStep::Verifying).await;
        }
        let sent = store.step_rollout_phone(&send_update(second, &phone)).await;
        assert!(!sent.unwrap(), "the first rollout is {busy} the phone");
    }
    step(&store, first, PhoneStep::Verifying, PhoneStep::Done).await;

    assert!(
        store
            .step_rollout_phone(&send_update(second, &phone))
            .await
            .unwrap()
    );
}

/// A phone with two games may be in a rollout of each: it stays out of the pool until
/// neither drains it.
async fn a_phone_held_by_two_rollouts_is_returned_only_when_both_let_go(backend: Backend) {
    let (store, first, second) = drained_by_two_rollouts(backend).await;

    step(&store, first, PhoneStep::Draining, PhoneStep::Skipped).await;
    assert!(
        !p1_allocatable(&store, "s-1").await,
        "the second still drains it"
    );
    step(&store, second, PhoneStep::Draining, PhoneStep::Skipped).await;
    assert!(p1_allocatable(&store, "s-2").await);
}

/// An abort puts a draining phone back at once; one being updated stays out of the pool
/// until its job ends (a job cannot be called back), then comes back.
async fn an_abort_returns_draining_phones_and_updating_ones_once_their_job_ends(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    let id = drain_all(&store, &["p-1", "p-2"]).await;
    step(&store, id, PhoneStep::Draining, PhoneStep::Updating).await;
    assert_eq!(mint(&store, at_seven("s-1")).await, Allocation::NoFreePhone);

    store.set_rollout_state(&abort(id)).await.unwrap().unwrap();

    let first = mint(&store, at_seven("s-2")).await;
    assert_eq!(allocated(&first).as_deref(), Some("p-2"), "draining: back");
    assert_eq!(mint(&store, at_seven("s-3")).await, Allocation::NoFreePhone);
    step(&store, id, PhoneStep::Updating, PhoneStep::Failed).await;
    let second = mint(&store, at_seven("s-4")).await;
    assert_eq!(allocated(&second).as_deref(), Some("p-1"), "its job ended");
}

fn abort(id: i64) -> StateChange<'static> {
    StateChange {
        id,
        from: &[RolloutState::Running, RolloutState::Paused],
        to: RolloutState::Aborted,
        by: None,
        why: None,
        now: at("19:00:00"),
    }
}

fn pause(id: i64) -> StateChange<'static> {
    StateChange {
        id,
        from: &[RolloutState::Running],
        to: RolloutState::Paused,
        by: Some("cphub"),
        why: Some("batch 1 had 1 failed phones, more than max_failures 0"),
        now: at("19:00:10"),
    }
}

fn resume(id: i64) -> StateChange<'static> {
    StateChange {
        id,
        from: &[RolloutState::Paused],
        to: RolloutState::Running,
        by: None,
        why: None,
        now: at("19:00:20"),
    }
}

/// The `fleet.rollout` outbox rows (docs/webhooks.md): one per transition, in the
/// transaction of the change, numbered so a second pause is an event of its own, and none
/// for a change refused (a replica doing it again).
async fn each_state_change_writes_one_fleet_rollout_event_with_the_phones_per_step(
    backend: Backend,
) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    let id = drain_all(&store, &["p-1", "p-2"]).await;
    step(&store, id, PhoneStep::Draining, PhoneStep::Updating).await;

    store.set_rollout_state(&pause(id)).await.unwrap().unwrap();
    assert!(store.set_rollout_state(&pause(id)).await.unwrap().is_none());
    store.set_rollout_state(&resume(id)).await.unwrap().unwrap();
    store.set_rollout_state(&pause(id)).await.unwrap().unwrap();
    store.set_rollout_state(&abort(id)).await.unwrap().unwrap();
    assert!(store.set_rollout_state(&abort(id)).await.unwrap().is_none());

    let events = store.outbox(0, 100).await.unwrap();
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let expected = [
        "started_0",
        "paused_1",
        "resumed_2",
        "paused_3",
        "aborted_4",
    ]
    .map(|t| format!("evt_fleet.rollout_{id}_{t}"));
    assert_eq!(ids, expected);
    assert!(
        events
            .iter()
            .all(|e| e.event_type == WebhookEventType::FleetRollout)
    );
    assert!(events.iter().all(|e| e.subject == format!("rollout_{id}")));
    let phones = |i: usize| events[i].data["phones"].clone();
    let counts = |pending: i64, draining: i64, updating: i64| {
        json!({"pending": pending, "draining": draining, "updating": updating,
               "verifying": 0, "done": 0, "failed": 0, "skipped": 0})
    };
    assert_eq!(phones(0), counts(2, 0, 0), "created: every phone pending");
    assert_eq!(
        phones(1),
        counts(1, 0, 1),
        "the pause put p-2 back; p-1 is updating"
    );
    let paused = &events[1].data;
    assert_eq!(
        (
            &paused["transition"],
            &paused["state"],
            &paused["paused_by"]
        ),
        (&json!("paused"), &json!("paused"), &json!("cphub"))
    );
    assert_eq!(
        paused["reason"],
        "batch 1 had 1 failed phones, more than max_failures 0"
    );
    assert_eq!(paused["changed_at"], at("19:00:10").epoch_millis());
    assert_eq!(paused["app_id"], APP);
    assert_eq!(paused["app_version_ids"], json!(["v2"]));
    let resumed = &events[2].data;
    assert_eq!(
        (&resumed["state"], &resumed["reason"]),
        (&json!("running"), &json!(null))
    );
    assert_eq!(events[4].data["state"], "aborted");

    step(&store, id, PhoneStep::Updating, PhoneStep::Done).await;
    let done = store.finish_rollout(id, at("19:01:00")).await.unwrap();
    assert!(!done, "an aborted rollout is not finished again");
    assert_eq!(store.outbox(0, 100).await.unwrap().len(), 5);
}
