//! `Store::apply_events`: what each delivery of an enter/quit event does to the book.
//!
//! Rests on chapter 6.2/6.3 of the reference: enter is status 0, quit is status 1; events
//! arrive at least once and possibly out of order, so a redelivery must change nothing, a
//! quit may overtake its enter, and the same session and status with other facts is a
//! contradiction that is logged, not applied.

use cphub::domain::{EndReason, SessionState};
use cphub::store::EventOutcome::{Accepted, Conflict, Duplicate, Ignored};

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    first_enter_is_accepted_and_the_session_plays,
    first_quit_is_accepted_and_ends_the_session_measured_from_event_times,
    a_redelivery_is_a_duplicate_and_changes_nothing,
    a_redelivery_with_sub_millisecond_time_is_a_duplicate,
    same_session_and_status_with_other_facts_is_a_conflict_not_applied,
    quit_may_overtake_enter_and_the_session_still_ends_right,
    quit_timed_before_enter_measures_zero_never_negative,
    enter_and_quit_in_one_batch_apply_in_arrival_order,
    quit_then_enter_in_one_batch_agree_with_enter_then_quit,
    a_redelivery_or_contradiction_in_the_same_batch_is_decided_as_if_alone,
    duplicates_across_batches_apply_once,
    unknown_session_is_ignored_unless_unknown_sessions_are_recorded,
    events_of_a_minted_session_apply_even_when_unknown_ones_are_ignored,
    the_event_log_records_each_accepted_or_conflicting_delivery,
    a_late_enter_of_an_older_session_does_not_take_the_phone,
    one_batch_of_random_deliveries_leaves_what_one_by_one_leaves,
);

/// 6.2: enter (status 0) starts the session; the first delivery is accepted.
async fn first_enter_is_accepted_and_the_session_plays(backend: Backend) {
    let store = open(backend).await;

    let applied = apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;

    assert_eq!(outcomes(&applied), [Accepted]);
    let carried = applied[0]
        .session
        .clone()
        .expect("an accepted delivery carries the session after it");
    let stored = session(&store, "s-1").await.expect("session recorded");
    // What the delivery reports is what the book now holds.
    assert_eq!(carried, stored);
    assert_eq!(stored.state, SessionState::Playing);
    assert_eq!(stored.started_at, Some(at("19:00:00")));
    assert_eq!(stored.ended_at, None);
    assert_eq!(stored.duration_seconds, None);
    assert_eq!(stored.phone_id.to_string(), "p-1");
    assert_eq!(stored.app_id.to_string(), APP);
    assert!(
        !stored.issued,
        "first heard of through an event: direct mode"
    );
    let p = phone(&store, "p-1", at("19:00:00")).await.expect("phone");
    assert_eq!(text(&p.current_session_id).as_deref(), Some("s-1"));
}

/// 6.3: quit (status 1) ends the session; cphub measures the duration from the enter and
/// quit times, and keeps the reported run_time beside it.
async fn first_quit_is_accepted_and_ends_the_session_measured_from_event_times(backend: Backend) {
    let store = open(backend).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;

    let applied = apply(&store, &[quit("s-1", "p-1", "19:10:00", 600)]).await;

    assert_eq!(outcomes(&applied), [Accepted]);
    let carried = applied[0].session.clone().expect("session after the quit");
    let stored = session(&store, "s-1").await.unwrap();
    assert_eq!(carried, stored);
    assert_eq!(stored.state, SessionState::Ended);
    assert_eq!(stored.end_reason, Some(EndReason::Quit));
    assert_eq!(stored.started_at, Some(at("19:00:00")));
    assert_eq!(stored.ended_at, Some(at("19:10:00")));
    assert_eq!(stored.duration_seconds, Some(600));
    assert_eq!(stored.reported_run_time, Some(600));
    assert!(!stored.run_time_mismatch);
    let p = phone(&store, "p-1", at("19:00:00")).await.unwrap();
    assert_eq!(
        p.current_session_id, None,
        "an ended session is no longer current"
    );
}

/// 6.3 at-least-once: the same delivery again is a duplicate, carries no session, and
/// changes neither the session nor its log.
async fn a_redelivery_is_a_duplicate_and_changes_nothing(backend: Backend) {
    let store = open(backend).await;
    let enter = enter("s-1", "p-1", "19:00:00");
    let quit = quit("s-1", "p-1", "19:10:00", 600);
    apply(&store, std::slice::from_ref(&enter)).await;
    apply(&store, std::slice::from_ref(&quit)).await;
    let before = session(&store, "s-1").await.unwrap();
    let log_before = event_log(&store, "s-1").await;

    let applied = apply(
        &store,
        &[
            redelivered(&quit, "19:30:00"),
            redelivered(&enter, "19:30:01"),
        ],
    )
    .await;

    assert_eq!(outcomes(&applied), [Duplicate, Duplicate]);
    assert!(applied.iter().all(|a| a.session.is_none()));
    assert_eq!(session(&store, "s-1").await.unwrap(), before);
    assert_eq!(event_log(&store, "s-1").await, log_before);
}

/// 6.3 at-least-once, with a time more precise than the backend stores (SQLite keeps
/// milliseconds, PostgreSQL microseconds; RFC 3339 allows any fraction and
/// `UtcTime::parse` keeps it): the redelivery is still the same event.
async fn a_redelivery_with_sub_millisecond_time_is_a_duplicate(backend: Backend) {
    let store = open(backend).await;
    let precise = enter("s-1", "p-1", "2024-05-01T19:00:00.123456789Z");
    apply(&store, std::slice::from_ref(&precise)).await;
    let before = session(&store, "s-1").await.unwrap();

    let applied = apply(&store, &[redelivered(&precise, "19:05:00")]).await;

    assert_eq!(outcomes(&applied), [Duplicate]);
    assert_eq!(session(&store, "s-1").await.unwrap(), before);
    assert_eq!(event_log(&store, "s-1").await.len(), 1, "no conflict line");

    // The same within one batch.
    let precise = quit("s-2", "p-2", "2024-05-01T19:10:00.123456789Z", 600);
    let applied = apply(
        &store,
        &[precise.clone(), redelivered(&precise, "19:10:05")],
    )
    .await;
    assert_eq!(outcomes(&applied), [Accepted, Duplicate]);
}

/// Same session and status but other facts (another time, another run_time): a
/// contradiction, logged as a conflict, never applied. The first accepted delivery wins.
async fn same_session_and_status_with_other_facts_is_a_conflict_not_applied(backend: Backend) {
    let store = open(backend).await;
    apply(
        &store,
        &[
            enter("s-1", "p-1", "19:00:00"),
            quit("s-1", "p-1", "19:10:00", 600),
        ],
    )
    .await;
    let before = session(&store, "s-1").await.unwrap();

    let applied = apply(
        &store,
        &[
            enter("s-1", "p-1", "19:01:00"),     // other enter time
            quit("s-1", "p-1", "19:20:00", 600), // other quit time
            quit("s-1", "p-1", "19:10:00", 601), // other run_time
        ],
    )
    .await;

    assert_eq!(outcomes(&applied), [Conflict, Conflict, Conflict]);
    assert!(applied.iter().all(|a| a.session.is_none()));
    let after = session(&store, "s-1").await.unwrap();
    assert_eq!(after, before);
    assert_eq!(after.started_at, Some(at("19:00:00")));
    assert_eq!(after.ended_at, Some(at("19:10:00")));
    assert_eq!(after.reported_run_time, Some(600));
    assert_eq!(after.duration_seconds, Some(600));
}

/// 6.3 out of order: the quit may overtake the enter. The session ends at once, missing its
/// start; when the enter arrives it stays ended and its duration is measured from the enter
/// and quit times.
async fn quit_may_overtake_enter_and_the_session_still_ends_right(backend: Backend) {
    let store = open(backend).await;

    let first = apply(&store, &[quit("s-1", "p-1", "19:10:00", 600)]).await;
    assert_eq!(outcomes(&first), [Accepted]);
    let ended = session(&store, "s-1").await.unwrap();
    assert_eq!(ended.state, SessionState::Ended);
    assert_eq!(ended.started_at, None);
    assert_eq!(
        ended.duration_seconds, None,
        "no start yet: nothing to measure"
    );

    let late = apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;

    assert_eq!(outcomes(&late), [Accepted]);
    let after = session(&store, "s-1").await.unwrap();
    assert_eq!(late[0].session.as_ref(), Some(&after));
    assert_eq!(
        after.state,
        SessionState::Ended,
        "a late enter does not reopen it"
    );
    assert_eq!(after.end_reason, Some(EndReason::Quit));
    assert_eq!(after.started_at, Some(at("19:00:00")));
    assert_eq!(after.ended_at, Some(at("19:10:00")));
    assert_eq!(after.duration_seconds, Some(600));
    let p = phone(&store, "p-1", at("19:00:00")).await.unwrap();
    assert_eq!(
        p.current_session_id, None,
        "the late enter of an ended session does not take the phone"
    );
}

/// 6.3: times are the phone's; a quit stamped before its enter (clock step) measures zero,
/// never a negative duration.
async fn quit_timed_before_enter_measures_zero_never_negative(backend: Backend) {
    let store = open(backend).await;

    apply(&store, &[quit("s-1", "p-1", "19:00:00", 0)]).await;
    apply(&store, &[enter("s-1", "p-1", "19:10:00")]).await;

    let s = session(&store, "s-1").await.unwrap();
    assert_eq!(s.state, SessionState::Ended);
    assert_eq!(s.duration_seconds, Some(0));
}

/// Group commit: several events of one session in one batch have the outcomes of one-by-one
/// application, and each accepted delivery carries the session as it left it.
async fn enter_and_quit_in_one_batch_apply_in_arrival_order(backend: Backend) {
    let store = open(backend).await;

    let applied = apply(
        &store,
        &[
            enter("s-1", "p-1", "19:00:00"),
            quit("s-1", "p-1", "19:10:00", 600),
        ],
    )
    .await;

    assert_eq!(outcomes(&applied), [Accepted, Accepted]);
    let after_enter = applied[0].session.as_ref().unwrap();
    assert_eq!(after_enter.state, SessionState::Playing);
    assert_eq!(after_enter.ended_at, None);
    let after_quit = applied[1].session.as_ref().unwrap();
    assert_eq!(after_quit.state, SessionState::Ended);
    let stored = session(&store, "s-1").await.unwrap();
    assert_eq!(&stored, after_quit);
    assert_eq!(stored.duration_seconds, Some(600));
    let p = phone(&store, "p-1", at("19:00:00")).await.unwrap();
    assert_eq!(p.current_session_id, None);
}

/// 6.3 out of order within one batch: quit then enter ends up as enter then quit does.
async fn quit_then_enter_in_one_batch_agree_with_enter_then_quit(backend: Backend) {
    let store = open(backend).await;

    let forward = apply(
        &store,
        &[
            enter("s-1", "p-1", "19:00:00"),
            quit("s-1", "p-1", "19:10:00", 600),
        ],
    )
    .await;
    let backward = apply(
        &store,
        &[
            quit("s-2", "p-2", "19:10:00", 600),
            enter("s-2", "p-2", "19:00:00"),
        ],
    )
    .await;

    assert_eq!(outcomes(&forward), [Accepted, Accepted]);
    assert_eq!(outcomes(&backward), [Accepted, Accepted]);
    let (s1, s2) = (
        session(&store, "s-1").await.unwrap(),
        session(&store, "s-2").await.unwrap(),
    );
    assert_eq!(s2.state, SessionState::Ended);
    assert_eq!(s2.end_reason, Some(EndReason::Quit));
    assert_eq!(
        (s2.started_at, s2.ended_at, s2.duration_seconds),
        (s1.started_at, s1.ended_at, s1.duration_seconds)
    );
    assert_eq!(s2.duration_seconds, Some(600));
}

/// At-least-once within one batch: enter + the same enter is accepted then duplicate; enter
/// + a contradicting enter is accepted then conflict (the first in arrival order wins).
async fn a_redelivery_or_contradiction_in_the_same_batch_is_decided_as_if_alone(backend: Backend) {
    let store = open(backend).await;
    let e1 = enter("s-1", "p-1", "19:00:00");
    let e2 = enter("s-2", "p-2", "19:00:00");

    let applied = apply(
        &store,
        &[
            e1.clone(),
            redelivered(&e1, "19:00:05"),
            e2.clone(),
            enter("s-2", "p-2", "19:00:30"),
        ],
    )
    .await;

    assert_eq!(
        outcomes(&applied),
        [Accepted, Duplicate, Accepted, Conflict]
    );
    assert!(applied[1].session.is_none() && applied[3].session.is_none());
    assert_eq!(
        session(&store, "s-1").await.unwrap().started_at,
        Some(at("19:00:00"))
    );
    assert_eq!(
        session(&store, "s-2").await.unwrap().started_at,
        Some(at("19:00:00"))
    );
    let log = event_log(&store, "s-1").await;
    assert_eq!(
        log.len(),
        1,
        "one accepted enter, the duplicate adds nothing"
    );
    let log = event_log(&store, "s-2").await;
    let kinds: Vec<_> = log.iter().map(|l| (l.kind, l.outcome)).collect();
    assert_eq!(
        kinds,
        [
            (cphub::domain::EventKind::Enter, Accepted),
            (cphub::domain::EventKind::Enter, Conflict)
        ]
    );
}

/// 6.3 at-least-once across batches: each event is accepted once, whichever batch carries
/// it again and in whatever order.
async fn duplicates_across_batches_apply_once(backend: Backend) {
    let store = open(backend).await;
    let enter = enter("s-1", "p-1", "19:00:00");
    let quit = quit("s-1", "p-1", "19:10:00", 600);

    let first = apply(&store, std::slice::from_ref(&enter)).await;
    let second = apply(&store, &[redelivered(&enter, "19:10:05"), quit.clone()]).await;
    let third = apply(
        &store,
        &[
            redelivered(&quit, "19:11:00"),
            redelivered(&enter, "19:11:01"),
        ],
    )
    .await;

    assert_eq!(outcomes(&first), [Accepted]);
    assert_eq!(outcomes(&second), [Duplicate, Accepted]);
    assert_eq!(outcomes(&third), [Duplicate, Duplicate]);
    let s = session(&store, "s-1").await.unwrap();
    assert_eq!(s.state, SessionState::Ended);
    assert_eq!(s.duration_seconds, Some(600));
    let accepted = event_log(&store, "s-1")
        .await
        .into_iter()
        .filter(|l| l.outcome == Accepted)
        .count();
    assert_eq!(
        accepted, 2,
        "exactly one accepted enter and one accepted quit"
    );
}

/// `callbacks.record_unknown_sessions`: off, an event of a session cphub did not mint is
/// ignored and leaves no trace; on, the session is recorded from its first event.
async fn unknown_session_is_ignored_unless_unknown_sessions_are_recorded(backend: Backend) {
    let store = open(backend).await;
    let stray = enter("s-x", "p-9", "19:00:00");

    let ignored = apply_minted_only(&store, std::slice::from_ref(&stray)).await;

    assert_eq!(outcomes(&ignored), [Ignored]);
    assert!(ignored[0].session.is_none());
    assert!(session(&store, "s-x").await.is_none());
    assert!(event_log(&store, "s-x").await.is_empty());
    assert!(phone(&store, "p-9", at("19:00:00")).await.is_none());

    let recorded = apply(&store, &[redelivered(&stray, "19:00:10")]).await;

    assert_eq!(outcomes(&recorded), [Accepted]);
    let s = session(&store, "s-x").await.expect("recorded");
    assert_eq!(s.state, SessionState::Playing);
    assert!(!s.issued);
    assert_eq!(s.user_id, None);
    assert_eq!(
        s.created_at,
        at("19:00:10"),
        "cphub's clock: when it first recorded it"
    );
}

/// Issued mode still applies the events of the sessions cphub minted; the enter moves the
/// minted session to playing and ends the hold on its phone.
async fn events_of_a_minted_session_apply_even_when_unknown_ones_are_ignored(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let minted = mint(
        &store,
        Mint {
            session: "s-1",
            pinned: None,
            now: "18:59:30",
            hold_until: "19:05:00",
            fresh_since: "18:58:00",
        },
    )
    .await;
    assert_eq!(allocated(&minted).as_deref(), Some("p-1"));

    let applied = apply_minted_only(&store, &[enter("s-1", "p-1", "19:00:00")]).await;

    assert_eq!(outcomes(&applied), [Accepted]);
    let s = session(&store, "s-1").await.unwrap();
    assert_eq!(s.state, SessionState::Playing);
    assert!(s.issued);
    assert_eq!(text(&s.user_id).as_deref(), Some(USER));
    let p = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(p.allocated_session_id, None, "the hold served its purpose");
    assert_eq!(p.allocated_until, None);
    assert_eq!(text(&p.current_session_id).as_deref(), Some("s-1"));
}

/// The session's event log lists each accepted or conflicting delivery, oldest first, with
/// its outcome, the phone's time and run_time and cphub's receive time. Duplicates add no
/// line (they change nothing; the metrics count them).
async fn the_event_log_records_each_accepted_or_conflicting_delivery(backend: Backend) {
    use cphub::domain::EventKind::{Enter, Quit};
    let store = open(backend).await;
    let first = enter("s-1", "p-1", "19:00:00");

    apply(&store, std::slice::from_ref(&first)).await;
    apply(&store, &[redelivered(&first, "19:00:30")]).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:20")]).await;
    apply(&store, &[quit("s-1", "p-1", "19:10:00", 600)]).await;

    let log = event_log(&store, "s-1").await;
    let line = |kind, outcome, time: &str, run_time, received: &str| LogLine {
        kind,
        outcome,
        time: at(time),
        run_time,
        received_at: at(received),
    };
    assert_eq!(
        log,
        [
            line(Enter, Accepted, "19:00:00", None, "19:00:02"),
            line(Enter, Conflict, "19:00:20", None, "19:00:22"),
            line(Quit, Accepted, "19:10:00", Some(600), "19:10:02"),
        ]
    );
}

/// 6.3 out of order across sessions: the enter of an older session of the phone arriving
/// after a newer one's does not make the older one the phone's current session; the later
/// start (in the phone's time) wins whatever the arrival order.
async fn a_late_enter_of_an_older_session_does_not_take_the_phone(backend: Backend) {
    let store = open(backend).await;

    apply(&store, &[enter("s-new", "p-1", "19:05:00")]).await;
    let late = apply(&store, &[enter("s-old", "p-1", "19:00:00")]).await;

    assert_eq!(
        outcomes(&late),
        [Accepted],
        "still recorded for its own session"
    );
    let p = phone(&store, "p-1", at("19:00:00")).await.unwrap();
    assert_eq!(text(&p.current_session_id).as_deref(), Some("s-new"));
    assert_eq!(
        session(&store, "s-old").await.unwrap().state,
        SessionState::Playing
    );

    // A still newer session does take it.
    apply(&store, &[enter("s-newest", "p-1", "19:10:00")]).await;
    let p = phone(&store, "p-1", at("19:00:00")).await.unwrap();
    assert_eq!(text(&p.current_session_id).as_deref(), Some("s-newest"));
}

/// 6.2/6.3 at least once and in any order, decided set-wise: a batch of random enters and
/// quits over a few sessions and phones (redeliveries, contradictions, quits before enters,
/// sessions moving between phones) applied in one call answers and leaves the book exactly
/// as each delivery applied alone does, on a second store. The batch's read and write are
/// one statement each, so this is what holds the fold to the one-by-one outcomes.
async fn one_batch_of_random_deliveries_leaves_what_one_by_one_leaves(backend: Backend) {
    for seed in [1_u64, 7, 42, 2024] {
        let deliveries = random_deliveries(seed, 48);
        let together = open(backend).await;
        let alone = open(backend).await;

        let batch = apply(&together, &deliveries).await;
        let mut one_by_one = Vec::new();
        for delivery in &deliveries {
            one_by_one.extend(apply(&alone, std::slice::from_ref(delivery)).await);
        }

        assert_eq!(outcomes(&batch), outcomes(&one_by_one), "seed {seed}");
        let carried = |applied: &[cphub::store::Applied]| -> Vec<_> {
            applied.iter().map(|a| a.session.clone()).collect()
        };
        assert_eq!(carried(&batch), carried(&one_by_one), "seed {seed}");
        for id in (0..RANDOM_SESSIONS).map(|n| format!("s-{n}")) {
            assert_eq!(
                session(&together, &id).await,
                session(&alone, &id).await,
                "{id}"
            );
            assert_eq!(
                event_log(&together, &id).await,
                event_log(&alone, &id).await,
                "{id}"
            );
        }
        for id in (0..RANDOM_PHONES).map(|n| format!("p-{n}")) {
            let [a, b] = [&together, &alone].map(|store| phone(store, &id, at("19:00:00")));
            let (a, b) = (a.await, b.await);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "seed {seed}, {id}");
        }
        assert!(
            batch.iter().any(|a| a.outcome == Accepted)
                && batch.iter().any(|a| a.outcome != Accepted),
            "seed {seed} mixes accepted deliveries with duplicates or conflicts"
        );
    }
}

const RANDOM_SESSIONS: u64 = 6;
const RANDOM_PHONES: u64 = 4;

/// `count` deliveries drawn from `seed` ([`draws`]), a
/// quarter of them an earlier delivery again.
fn random_deliveries(seed: u64, count: usize) -> Vec<cphub::store::ReceivedEvent> {
    let mut next = draws(seed);
    let mut deliveries: Vec<cphub::store::ReceivedEvent> = Vec::new();
    for _ in 0..count {
        if !deliveries.is_empty() && next(4) == 0 {
            let earlier = deliveries[next(deliveries.len() as u64) as usize].clone();
            deliveries.push(earlier);
            continue;
        }
        let session = format!("s-{}", next(RANDOM_SESSIONS));
        let phone = format!("p-{}", next(RANDOM_PHONES));
        let time = format!("19:{:02}:{:02}", next(10), next(60));
        deliveries.push(match next(2) {
            0 => enter(&session, &phone, &time),
            _ => quit(&session, &phone, &time, next(700) as i64),
        });
    }
    deliveries
}
