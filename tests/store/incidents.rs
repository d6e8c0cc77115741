//! Server incidents in the recovery log (migration 0005): the store counts each server's
//! phones (chapter 4.3.1 `server_id`), hands the watchdog each unhealthy phone's server,
//! keeps an incident `open` apart from the `pending` jobs, and closes it once.

use cphub::store::Allocation;

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    phones_are_counted_per_server_and_unhealthy_ones_carry_theirs,
    only_phones_in_service_count_towards_a_server_4_3_1,
    an_incident_stays_open_apart_from_pending_jobs_until_closed_once,
    a_phone_left_out_of_two_complete_listings_in_a_row_is_unlisted_4_3_1,
    a_phone_the_control_plane_does_not_know_is_unlisted_at_once_4_3_2,
);

async fn phones_are_counted_per_server_and_unhealthy_ones_carry_theirs(backend: Backend) {
    let store = open(backend).await;
    sync(
        &store,
        &[("p-1", "s-1"), ("p-2", "s-1"), ("p-3", "s-2")],
        "19:00:00",
    )
    .await;
    record(&store, &[heartbeat("p-1", "19:00:00", None, "19:00:00")]).await;

    let mut counts = store.phones_per_server().await.unwrap();
    counts.sort();

    assert_eq!(counts, [("s-1".to_owned(), 2), ("s-2".to_owned(), 1)]);
    let unhealthy = store.unhealthy_phones(at("19:01:00")).await.unwrap();
    assert_eq!(
        unhealthy.len(),
        1,
        "only p-1 was heard from, and is silent since"
    );
    assert_eq!(unhealthy[0].server_id.as_deref(), Some("s-1"));
}

/// Chapter 4.3.1 statuses: a server's share of silent phones is taken of the phones whose
/// silence would be a fault (running 2, failed -5/-6/-7, not reported yet), the same ones
/// counted silent. A phone stopped (8), frozen (6) or restarting (4) never heartbeats: were
/// it counted, a server with most of its phones stopped could die without an incident.
async fn only_phones_in_service_count_towards_a_server_4_3_1(backend: Backend) {
    let phones = [
        ("p-1", "s-1"),
        ("p-2", "s-1"),
        ("p-3", "s-1"),
        ("p-4", "s-1"),
        ("p-5", "s-1"),
        ("p-6", "s-1"),
        ("p-7", "s-1"),
    ];
    let store = open(backend).await;
    sync(&store, &phones, "19:00:00").await;
    for (phone, status) in [("p-2", -7), ("p-3", -6), ("p-4", -5)] {
        record_status(&store, phone, status).await;
    }
    for (phone, status) in [("p-5", 8), ("p-6", 6), ("p-7", 4)] {
        record_status(&store, phone, status).await;
    }

    let counts = store.phones_per_server().await.unwrap();

    assert_eq!(counts, [("s-1".to_owned(), 4)], "p-1 to p-4 of the seven");
}

async fn record_status(store: &impl Book, phone: &str, status: i32) {
    store
        .record_cph_status(&pid(phone), status, at("19:00:01"))
        .await
        .unwrap();
}

async fn an_incident_stays_open_apart_from_pending_jobs_until_closed_once(backend: Backend) {
    let store = open(backend).await;
    let opened = store
        .start_recovery(&server_incident("s-1", "19:00:00"))
        .await
        .unwrap();

    assert!(store.pending_recoveries().await.unwrap().is_empty());
    let open = store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].id, open[0].phone_id.as_str()), (opened.id, "s-1"));

    store
        .close_incident(opened.id, at("19:05:00"), "closed: 0 of 4 phones silent")
        .await
        .unwrap();
    store
        .close_incident(opened.id, at("19:09:00"), "again")
        .await
        .unwrap();

    assert!(store.open_incidents().await.unwrap().is_empty());
    let log = store.recoveries(None, None, 10).await.unwrap();
    assert_eq!(log[0].outcome.as_str(), "closed");
    assert_eq!(log[0].ended_at, Some(at("19:05:00")), "closed once");
    assert_eq!(
        log[0].detail.as_deref(),
        Some("s-1 went dark; closed: 0 of 4 phones silent")
    );
}

/// Chapter 4.3.1 lists the phones the control plane has; a server released outside cphub
/// takes its phones off the list. One listing that leaves a phone out does not unlist it
/// (offset paging can skip a phone while another is deleted), nor does a second that began
/// before the first was written (two replicas' listings overlap), nor an empty listing (more
/// likely the wrong project), nor two misses with a listing between them. A second listing
/// begun after the first miss does: the phone is then neither a recovery candidate, nor
/// counted in its server, nor allocated. Listed again, it is back. A phone known only from
/// its callbacks (never listed) is never unlisted.
async fn a_phone_left_out_of_two_complete_listings_in_a_row_is_unlisted_4_3_1(backend: Backend) {
    let store = open(backend).await;
    let all = [("p-1", "s-1"), ("p-2", "s-1"), ("p-3", "s-2")];
    let without_p3 = &all[..2];
    sync(&store, &all, "19:00:00").await;
    let heard = ["p-1", "p-2", "p-3", "p-cb"].map(|p| heartbeat(p, "19:00:00", None, "19:00:00"));
    record(&store, &heard).await;
    let state = |phone| phone_state(&store, phone, at("18:59:00"));
    let silent_ones = async || {
        let unhealthy = store.unhealthy_phones(at("19:10:00")).await.unwrap();
        unhealthy
            .into_iter()
            .map(|p| p.phone_id.to_string())
            .collect::<Vec<_>>()
    };

    sync(&store, without_p3, "19:01:00").await;
    sync(&store, &all, "19:01:10").await;
    sync(&store, without_p3, "19:01:20").await;
    sync_begun(&store, without_p3, "19:01:15", "19:01:30").await;
    sync(&store, &[], "19:01:40").await;

    assert_eq!(
        state("p-3").await,
        "idle",
        "missed, listed, missed; an overlapping listing; an empty one"
    );
    assert_eq!(silent_ones().await, ["p-1", "p-2", "p-3", "p-cb"]);

    sync(&store, without_p3, "19:02:00").await;

    assert_eq!(state("p-3").await, "unlisted");
    assert_eq!(state("p-1").await, "idle");
    assert_eq!(
        state("p-cb").await,
        "idle",
        "never listed, so never unlisted"
    );
    assert_eq!(silent_ones().await, ["p-1", "p-2", "p-cb"]);
    let counts = store.phones_per_server().await.unwrap();
    assert_eq!(counts, [("s-1".to_owned(), 2)], "s-2 has no phone left");
    let pinned = Mint {
        session: "s-1",
        pinned: Some("p-3"),
        now: "19:02:01",
        hold_until: "19:03:00",
        fresh_since: "18:59:00",
    };
    assert_eq!(mint(&store, pinned).await, Allocation::PhoneBusy);

    sync(&store, &all, "19:03:00").await;

    assert_eq!(state("p-3").await, "idle", "listed again");
    assert_eq!(silent_ones().await, ["p-1", "p-2", "p-3", "p-cb"]);
}

/// 4.3.2 answered `CPS.0005` (7.2) for a phone the control plane listed before: the
/// watchdog unlists it at once. One it never listed is left as it is.
async fn a_phone_the_control_plane_does_not_know_is_unlisted_at_once_4_3_2(backend: Backend) {
    let store = open(backend).await;
    sync(&store, &[("p-1", "s-1")], "19:00:00").await;
    idle_phones(&store, &["p-1", "p-cb"], "19:00:00").await;

    for phone in ["p-1", "p-cb"] {
        store
            .record_unlisted(&pid(phone), at("19:00:30"))
            .await
            .unwrap();
    }

    assert_eq!(phone_state(&store, "p-1", at("18:59:00")).await, "unlisted");
    assert_eq!(phone_state(&store, "p-cb", at("18:59:00")).await, "idle");
}
