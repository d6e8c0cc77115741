//! Retention of the session book (`Store::remove_old_sessions`, migration 0014): closed
//! sessions past the cut-off go with their event logs, and the usage report by day and app
//! over their period does not change, since the rollups (0011) keep it. Never removed: a
//! live session, one the rollups left out (longer than 31 days), one waiting for its enter
//! (a quit of 6.3 that overtook its 6.2), one whose webhook events are not delivered.

use cphub::domain::WebhookEventType;
use cphub::store::{AttemptRecord, Claim, EndpointFilter, NextStep, Retention};
use cphub::usage::{self, Rounding, UsageParams, UsageRow, UsageSettings};

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    closed_sessions_go_with_their_events_and_the_usage_report_stays,
    live_quit_only_and_unrolled_sessions_stay,
    expired_unplayed_sessions_go_by_their_creation,
    a_session_stays_until_its_webhook_events_are_delivered,
    removal_goes_a_batch_per_call,
);

/// Cut-off well after the suite's day: everything closed on it is old enough.
fn retention(batch: i64, webhooks_enabled: bool) -> Retention {
    Retention {
        before: at("2024-05-10T00:00:00Z"),
        batch,
        webhooks_enabled,
    }
}

async fn remove(store: &impl Book, r: Retention) -> u64 {
    store.remove_old_sessions(&r).await.expect("retention runs")
}

/// The report by day and app over a window of whole days around the suite's day.
async fn report(store: &impl Book) -> Vec<UsageRow> {
    let params = UsageParams {
        from: "2024-04-01".to_owned(),
        to: "2024-06-01".to_owned(),
        group_by: "day,app".to_owned(),
        time_zone: None,
    };
    let settings = UsageSettings {
        time_zone: chrono_tz::Tz::UTC,
        billing_rounding: Rounding::StartedMinute,
    };
    let query = usage::plan(&settings, &params).unwrap().query;
    store.usage(&query).await.expect("usage")
}

async fn play(store: &impl Book, session: &str, phone: &str, from: &str, to: &str, run: i64) {
    apply(store, &[enter(session, phone, from)]).await;
    apply(store, &[quit(session, phone, to, run)]).await;
}

async fn closed_sessions_go_with_their_events_and_the_usage_report_stays(backend: Backend) {
    let store = open(backend).await;
    play(&store, "s-1", "p-1", "19:00:00", "19:10:00", 600).await;
    play(&store, "s-2", "p-2", "19:05:00", "19:35:30", 1830).await;
    idle_phones(&store, &["p-3"], "19:00:00").await;
    apply(&store, &[enter("s-3", "p-3", "19:00:00")]).await;
    let abandoned = store.abandon_sessions(at("20:00:00"), GAME_GONE_AFTER, at("20:00:00"));
    assert_eq!(abandoned.await.unwrap().len(), 1, "s-3 abandoned");
    let before = report(&store).await;

    let removed = remove(&store, retention(100, false)).await;

    assert_eq!(removed, 3);
    for id in ["s-1", "s-2", "s-3"] {
        assert!(session(&store, id).await.is_none(), "{id} removed");
        assert!(
            event_log(&store, id).await.is_empty(),
            "{id}'s events removed"
        );
    }
    assert!(before.iter().any(|r| r.counts.sessions == 3), "{before:?}");
    assert_eq!(report(&store).await, before, "the rollups keep the report");
    assert_eq!(
        remove(&store, retention(100, false)).await,
        0,
        "nothing left"
    );

    // A session of 61 days ends (the rollups leave it out, 0011): it is read from the book,
    // and the removed sessions stay in every report beside it.
    play(
        &store,
        "long",
        "p-4",
        "2024-03-01T00:00:00Z",
        "19:00:00",
        60,
    )
    .await;
    let after = report(&store).await;
    let total = |rows: &[UsageRow]| {
        let mut sum = usage::Counts::default();
        rows.iter().for_each(|r| sum.add(&r.counts));
        sum
    };
    let (before, after) = (total(&before), total(&after));
    assert_eq!(
        (after.sessions, after.abandoned),
        (before.sessions, before.abandoned),
        "the long session started before the window: {after:?}"
    );
    let long_in_window =
        (at("19:00:00").epoch_millis() - at("2024-04-01T00:00:00Z").epoch_millis()) / 1000;
    assert_eq!(after.seconds, before.seconds + long_in_window, "{after:?}");
}

async fn live_quit_only_and_unrolled_sessions_stay(backend: Backend) {
    let store = open(backend).await;
    apply(&store, &[enter("playing", "p-1", "19:00:00")]).await;
    // A quit that overtook its enter: the session waits for the enter to be billed.
    apply(&store, &[quit("quit-only", "p-2", "19:10:00", 600)]).await;
    // 40 days long: the rollups leave it out (0011), reports read it from the book.
    play(
        &store,
        "long",
        "p-3",
        "2024-03-01T00:00:00Z",
        "19:00:00",
        60,
    )
    .await;
    let minted = Mint {
        session: "minted",
        pinned: None,
        now: "19:00:00",
        hold_until: "23:59:00",
        fresh_since: "18:59:00",
    };
    idle_phones(&store, &["p-4"], "19:00:00").await;
    assert!(allocated(&mint(&store, minted).await).is_some());

    let removed = remove(&store, retention(100, false)).await;

    assert_eq!(removed, 0);
    for id in ["playing", "quit-only", "long", "minted"] {
        assert!(session(&store, id).await.is_some(), "{id} kept");
    }
    assert_eq!(event_log(&store, "quit-only").await.len(), 1);
}

async fn expired_unplayed_sessions_go_by_their_creation(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "19:00:00").await;
    let m = Mint {
        session: "m-1",
        pinned: None,
        now: "19:00:00",
        hold_until: "19:01:00",
        fresh_since: "18:59:00",
    };
    assert!(allocated(&mint(&store, m).await).is_some());
    assert_eq!(release_lapsed_holds(&store, "19:02:00").await, 1);
    let too_soon = Retention {
        before: at("19:00:00"),
        ..retention(100, false)
    };

    assert_eq!(remove(&store, too_soon).await, 0, "created at the cut-off");
    assert_eq!(remove(&store, retention(100, false)).await, 1);
    assert!(session(&store, "m-1").await.is_none());
}

fn billing() -> EndpointFilter {
    EndpointFilter {
        name: "billing".to_owned(),
        events: vec![
            WebhookEventType::SessionStarted,
            WebhookEventType::SessionEnded,
        ],
    }
}

async fn a_session_stays_until_its_webhook_events_are_delivered(backend: Backend) {
    let store = open(backend).await;
    play(&store, "s-1", "p-1", "19:00:00", "19:10:00", 600).await;

    // Not fanned out: kept while the dispatcher runs, removable when none does (no endpoint
    // would ever take the event).
    assert_eq!(
        remove(&store, retention(100, true)).await,
        0,
        "not fanned out"
    );
    let endpoints = [billing()];
    let fanned = store.fan_out_webhooks(&endpoints, at("19:11:00"), at("19:11:00"), 100);
    assert_eq!(fanned.await.unwrap(), 2);
    assert_eq!(remove(&store, retention(100, true)).await, 0, "pending");
    assert_eq!(remove(&store, retention(100, false)).await, 0, "pending");

    let claim = |now: &str| Claim {
        endpoint: "billing",
        now: at(now),
        lease_until: at(now).plus(std::time::Duration::from_secs(60)),
        by: "test",
        limit: 10,
        recording: &[],
    };
    // One delivered, one failed for good: still not delivered, so still kept.
    let first = store
        .claim_webhook_deliveries(&claim("19:12:00"))
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "one at a time per subject: {first:?}");
    attempt(&store, first[0].event.seq, "19:12:01", NextStep::Delivered).await;
    let second = store
        .claim_webhook_deliveries(&claim("19:12:02"))
        .await
        .unwrap();
    attempt(&store, second[0].event.seq, "19:12:03", NextStep::Failed).await;
    assert_eq!(remove(&store, retention(100, true)).await, 0, "failed");
    assert!(session(&store, "s-1").await.is_some());

    let id = cphub::domain::WebhookEventId::parse("event_id", second[0].event.id.clone()).unwrap();
    let retried = store.retry_webhook_delivery("billing", &id, at("19:13:00"));
    assert!(retried.await.unwrap());
    let again = store
        .claim_webhook_deliveries(&claim("19:13:00"))
        .await
        .unwrap();
    attempt(&store, again[0].event.seq, "19:13:01", NextStep::Delivered).await;

    assert_eq!(
        remove(&store, retention(100, true)).await,
        1,
        "all delivered"
    );
    assert!(session(&store, "s-1").await.is_none());
}

async fn attempt(store: &impl Book, seq: i64, now: &str, next: NextStep) {
    let record = AttemptRecord {
        endpoint: "billing".to_owned(),
        event_seq: seq,
        attempted_at: at(now),
        status: Some(if matches!(next, NextStep::Delivered) {
            204
        } else {
            500
        }),
        latency_ms: 3,
        response: Some(String::new()),
        error: None,
        next,
        lease: "test".to_owned(),
    };
    record_attempts(store, &[record], now).await;
}

async fn removal_goes_a_batch_per_call(backend: Backend) {
    let store = open(backend).await;
    for n in 1..=5 {
        let (s, p) = (format!("s-{n}"), format!("p-{n}"));
        play(&store, &s, &p, "19:00:00", "19:01:00", 60).await;
    }

    let batches = [
        remove(&store, retention(2, false)).await,
        remove(&store, retention(2, false)).await,
        remove(&store, retention(2, false)).await,
        remove(&store, retention(2, false)).await,
    ];

    assert_eq!(batches, [2, 2, 1, 0]);
}
