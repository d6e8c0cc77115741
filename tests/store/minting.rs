//! Minting and holds: `mint_session`, `issued_access`, `mark_verified`, `check_signs`,
//! `release_lapsed_holds`. cphub hands a player an idle, fresh phone and holds it for the
//! minted session until the sign check and enter come, or the hold lapses; a phone is never
//! handed to two sessions, and a ticket is consumed once.

use std::collections::HashSet;

use cphub::access::{Refusal, Verdict};
use cphub::domain::{AccessInfo, AppId, IdempotencyKey};
use cphub::domain::{Action, Outcome, Reason, RecoveryMark, SessionState};
use cphub::store::{
    Allocation, ControlPlanePhone, EventOutcome, MintKey, NewRecovery, PhoneApp, PresentedSignCheck,
};

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    phone_sync_keeps_the_properties_it_read_for_a_reset_4_3_2,
    a_phones_connect_information_is_what_sync_read_4_3_2,
    a_mint_allocates_an_idle_fresh_phone_and_holds_it,
    concurrent_mints_never_share_a_phone,
    a_pinned_phone_is_allocated_when_free_refused_when_busy_or_unknown,
    a_stale_phone_is_not_allocated,
    a_phone_being_recovered_or_broken_is_not_allocated,
    a_phone_out_of_service_4_3_1_is_not_allocated_and_reads_out_of_service,
    a_phone_in_a_session_is_not_allocated,
    a_ticket_is_consumed_once,
    a_lapsed_hold_is_released_and_the_phone_is_idle_again,
    a_late_enter_of_an_expired_session_takes_no_phone_held_for_a_newer_one,
    a_mint_releases_lapsed_holds_before_it_picks,
    a_verified_sessions_hold_is_extended_to_its_hold_until,
    a_mint_matching_the_app_takes_only_a_phone_that_has_it_5_1_2,
    a_mint_with_a_key_is_answered_again_and_another_request_refused,
    a_reconnect_is_logged_only_while_the_session_is_live,
    a_reconnect_before_the_enter_holds_the_phone_again,
    reconnects_before_the_enter_hold_the_phone_one_window_past_the_first_use_at_most,
    one_batch_of_sign_checks_is_decided_in_arrival_order_6_1,
);

async fn a_mint_allocates_an_idle_fresh_phone_and_holds_it(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;

    let first = mint(&store, at_seven("s-1")).await;

    assert_eq!(allocated(&first).as_deref(), Some("p-1"));
    let s = session(&store, "s-1")
        .await
        .expect("minted session recorded");
    assert_eq!(s.state, SessionState::Minted);
    assert!(s.issued);
    assert_eq!(s.phone_id.to_string(), "p-1");
    assert_eq!(s.app_id.to_string(), APP);
    assert_eq!(text(&s.user_id).as_deref(), Some(USER));
    assert_eq!(s.minted_at, Some(at("19:00:00")));
    let p = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(text(&p.allocated_session_id).as_deref(), Some("s-1"));
    assert_eq!(p.allocated_until, Some(at("19:01:00")));
    assert_eq!(
        phone_state(&store, "p-1", at("18:58:00")).await,
        "allocated"
    );
    let access = issued(&store, "s-1")
        .await
        .expect("access of a minted session");
    assert_eq!(access.state, SessionState::Minted);
    assert_eq!(access.verified_at, None);

    // The only phone is held: the next mint finds none.
    assert_eq!(mint(&store, at_seven("s-2")).await, Allocation::NoFreePhone);
    assert!(
        session(&store, "s-2").await.is_none(),
        "a refused mint records nothing"
    );
}

/// `Store::mint_session`: "concurrent calls never get the same phone". 20 mints at once over
/// 5 idle phones: exactly 5 succeed, on 5 distinct phones, and every refusal says so.
async fn concurrent_mints_never_share_a_phone(backend: Backend) {
    let store = open(backend).await;
    let phones = ["p-1", "p-2", "p-3", "p-4", "p-5"];
    idle_phones(&store, &phones, "18:59:00").await;

    let mut mints = tokio::task::JoinSet::new();
    for i in 0..20 {
        let shared = store.shared();
        mints.spawn(async move {
            let id = format!("s-{i}");
            let allocation = mint(&shared, at_seven(&id)).await;
            (id, allocation)
        });
    }
    let results = mints.join_all().await;

    let winners: Vec<_> = results
        .iter()
        .filter_map(|(id, a)| allocated(a).map(|p| (id.clone(), p)))
        .collect();
    assert_eq!(winners.len(), 5, "one mint per phone: {results:?}");
    let distinct: HashSet<_> = winners.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(distinct.len(), 5, "a phone given twice: {winners:?}");
    assert!(
        results
            .iter()
            .all(|(_, a)| matches!(a, Allocation::Allocated { .. } | Allocation::NoFreePhone)),
        "{results:?}"
    );
    for (id, p) in &winners {
        let s = session(&store, id).await.unwrap();
        assert_eq!(&s.phone_id.to_string(), p);
        let held = phone(&store, p, at("18:58:00")).await.unwrap();
        assert_eq!(text(&held.allocated_session_id).as_ref(), Some(id));
    }
}

/// A pinned mint gets exactly that phone if it is free; a busy one is PhoneBusy, one cphub
/// never heard of is UnknownPhone, and neither records a session.
async fn a_pinned_phone_is_allocated_when_free_refused_when_busy_or_unknown(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    let pinned = |session, phone| Mint {
        pinned: Some(phone),
        ..at_seven(session)
    };

    let first = mint(&store, pinned("s-1", "p-2")).await;
    let busy = mint(&store, pinned("s-2", "p-2")).await;
    let unknown = mint(&store, pinned("s-3", "p-9")).await;

    assert_eq!(allocated(&first).as_deref(), Some("p-2"));
    assert_eq!(busy, Allocation::PhoneBusy);
    assert_eq!(unknown, Allocation::UnknownPhone);
    assert!(session(&store, "s-2").await.is_none());
    assert!(session(&store, "s-3").await.is_none());
    assert_eq!(phone_state(&store, "p-1", at("18:58:00")).await, "idle");
}

/// A phone not heard from since `fresh_since` may be dead: it is not handed out, pinned or
/// not.
/// A fresh, idle phone the watchdog is restarting (`recovering`) or gave up on (`broken`)
/// is not handed to a player.
async fn a_phone_being_recovered_or_broken_is_not_allocated(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    for (phone, mark) in [
        ("p-1", RecoveryMark::Recovering),
        ("p-2", RecoveryMark::Broken),
    ] {
        let recovery = NewRecovery {
            phone_id: pid(phone),
            reason: Reason::Stale,
            action: Action::Restart,
            dry_run: false,
            outcome: Outcome::Pending,
            error: None,
            started_at: at("18:59:30"),
            ended_at: None,
            detail: None,
            phone_state: Some(mark),
            diagnostics: Default::default(),
            unheard_since: None,
            in_flight_cap: None,
        };
        store.start_recovery(&recovery).await.unwrap();
    }

    assert_eq!(mint(&store, at_seven("s-1")).await, Allocation::NoFreePhone);
    let pinned = mint(
        &store,
        Mint {
            pinned: Some("p-1"),
            ..at_seven("s-2")
        },
    )
    .await;
    assert_eq!(allocated(&pinned), None, "{pinned:?}");
}

/// Chapter 4.3.1: frozen (6), stopped (8), creation failed (-8) and stopping failed (-9)
/// phones are out of service: never allocated, and shown as such — also once the status
/// is written ahead of the sync (`record_cph_status`, as `cphub phones stop` does).
async fn a_phone_out_of_service_4_3_1_is_not_allocated_and_reads_out_of_service(backend: Backend) {
    let store = open(backend).await;
    let ids = ["p-6", "p-8", "p-m8", "p-m9", "p-7"];
    idle_phones(&store, &ids, "18:59:00").await;
    let synced: Vec<ControlPlanePhone> = ids
        .iter()
        .zip([6, 8, -8, -9, 2])
        .map(|(id, status)| ControlPlanePhone {
            phone_id: id.to_string(),
            phone_name: id.to_string(),
            server_id: "srv".into(),
            status,
            ..ControlPlanePhone::default()
        })
        .collect();
    store
        .sync_phones(&synced, at("18:59:10"), at("18:59:10"))
        .await
        .unwrap();
    // p-7 was running at the sync; cphub then saw it stopping.
    let written = store
        .record_cph_status(&pid("p-7"), 7, at("18:59:20"))
        .await
        .unwrap();
    assert_eq!(written, 1);

    assert_eq!(mint(&store, at_seven("s-1")).await, Allocation::NoFreePhone);
    for id in &ids[..4] {
        assert_eq!(
            phone_state(&store, id, at("18:58:00")).await,
            "out_of_service"
        );
    }
    assert_eq!(
        phone_state(&store, "p-7", at("18:58:00")).await,
        "unavailable"
    );
}

async fn a_stale_phone_is_not_allocated(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:50:00").await;

    let any = mint(&store, at_seven("s-1")).await;
    let pinned = mint(
        &store,
        Mint {
            pinned: Some("p-1"),
            ..at_seven("s-2")
        },
    )
    .await;

    assert_eq!(any, Allocation::NoFreePhone);
    assert_eq!(allocated(&pinned), None, "{pinned:?}");
    let p = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(p.allocated_session_id, None);
}

/// A phone whose heartbeat reports a session, or that runs a session cphub saw enter, is
/// occupied and not handed out.
async fn a_phone_in_a_session_is_not_allocated(backend: Backend) {
    let store = open(backend).await;
    record(
        &store,
        &[heartbeat("p-1", "18:59:00", Some("s-x"), "18:59:00")],
    )
    .await;
    idle_phones(&store, &["p-2"], "18:59:00").await;
    apply(&store, &[enter("s-y", "p-2", "18:59:30")]).await;

    assert_eq!(mint(&store, at_seven("s-1")).await, Allocation::NoFreePhone);
}

/// `mark_verified`: the first sign check consumes the ticket (minted → verified); any later
/// one, in another call or the same batch, is told it came second.
async fn a_ticket_is_consumed_once(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    mint(&store, at_seven("s-1")).await;
    mint(&store, at_seven("s-2")).await;

    let first = mark_verified(
        &store,
        &[verification("s-1", "digest-a", "19:00:10", "19:03:00")],
    )
    .await;
    let again = mark_verified(
        &store,
        &[verification("s-1", "digest-b", "19:00:20", "19:04:00")],
    )
    .await;
    let same_batch = mark_verified(
        &store,
        &[
            verification("s-2", "digest-c", "19:00:30", "19:03:00"),
            verification("s-2", "digest-d", "19:00:30", "19:03:00"),
        ],
    )
    .await;

    assert_eq!(first, [true]);
    assert_eq!(again, [false]);
    assert_eq!(same_batch, [true, false]);
    let s = session(&store, "s-1").await.unwrap();
    assert_eq!(s.state, SessionState::Verified);
    assert_eq!(
        s.verified_at,
        Some(at("19:00:10")),
        "the first check's time stays"
    );
    let access = issued(&store, "s-1").await.unwrap();
    assert_eq!(access.state, SessionState::Verified);
    assert_eq!(access.sign_check_digest.as_deref(), Some("digest-a"));
    let p = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(
        p.allocated_until,
        Some(at("19:03:00")),
        "the second check extends nothing"
    );
    // A session cphub never minted has no ticket to consume.
    assert_eq!(
        mark_verified(
            &store,
            &[verification("s-9", "digest-e", "19:00:40", "19:03:00")]
        )
        .await,
        [false]
    );
}

/// A hold that lapses without a sign check or enter is released: the session expires and
/// its phone is idle again, free for the next mint.
async fn a_lapsed_hold_is_released_and_the_phone_is_idle_again(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    mint(&store, at_seven("s-1")).await; // held until 19:01

    assert_eq!(release_lapsed_holds(&store, "19:00:30").await, 0);
    assert_eq!(
        session(&store, "s-1").await.unwrap().state,
        SessionState::Minted
    );

    assert_eq!(release_lapsed_holds(&store, "19:01:30").await, 1);
    assert_eq!(
        session(&store, "s-1").await.unwrap().state,
        SessionState::Expired
    );
    let p = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(p.allocated_session_id, None);
    assert_eq!(p.allocated_until, None);
    assert_eq!(phone_state(&store, "p-1", at("18:58:00")).await, "idle");
    let next = mint(
        &store,
        Mint {
            now: "19:02:00",
            hold_until: "19:03:00",
            ..at_seven("s-2")
        },
    )
    .await;
    assert_eq!(allocated(&next).as_deref(), Some("p-1"));
    // Releasing again finds nothing more to release.
    assert_eq!(release_lapsed_holds(&store, "19:02:30").await, 0);
}

/// `mint_session` "releases lapsed holds, then picks": a phone whose hold lapsed is free to
/// the next mint even if no sweep ran, and the session it was held for expires.
async fn a_mint_releases_lapsed_holds_before_it_picks(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    mint(&store, at_seven("s-1")).await; // held until 19:01

    let next = mint(
        &store,
        Mint {
            now: "19:02:00",
            hold_until: "19:03:00",
            ..at_seven("s-2")
        },
    )
    .await;

    assert_eq!(allocated(&next).as_deref(), Some("p-1"));
    assert_eq!(
        session(&store, "s-1").await.unwrap().state,
        SessionState::Expired
    );
}

/// A passed sign check extends the phone's hold to the verification's hold_until: the
/// sweep keeps it past the mint's hold, and releases it once that lapses.
async fn a_verified_sessions_hold_is_extended_to_its_hold_until(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    mint(&store, at_seven("s-1")).await; // held until 19:01
    let checked = mark_verified(
        &store,
        &[verification("s-1", "digest-a", "19:00:30", "19:10:00")],
    )
    .await;
    assert_eq!(checked, [true]);

    assert_eq!(release_lapsed_holds(&store, "19:02:00").await, 0);
    assert_eq!(
        session(&store, "s-1").await.unwrap().state,
        SessionState::Verified
    );
    let p = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(text(&p.allocated_session_id).as_deref(), Some("s-1"));
    assert_eq!(p.allocated_until, Some(at("19:10:00")));

    assert_eq!(release_lapsed_holds(&store, "19:10:30").await, 1);
    assert_eq!(
        session(&store, "s-1").await.unwrap().state,
        SessionState::Expired
    );
    let p = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(p.allocated_session_id, None);
}

/// The wait queue and the mint route share this pick: `match_app` is all they set.
async fn a_mint_matching_the_app_takes_only_a_phone_that_has_it_5_1_2(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2", "p-3"], "18:59:00").await;
    let deployed = |phone: &str, app: &str| PhoneApp {
        phone_id: pid(phone),
        app_id: AppId::parse("app_id", app.to_owned()).unwrap(),
        app_version_id: None,
        version_code: Some("1".into()),
        version_name: None,
    };
    let apps = [deployed("p-2", APP), deployed("p-3", "other.game")];
    store.sync_phone_apps(&apps, at("18:59:30")).await.unwrap();
    let matching = |session| {
        let mut request = mint_request(&at_seven(session));
        request.match_app = true;
        request
    };

    let first = store.mint_session(&matching("s-1")).await.unwrap();
    let second = store.mint_session(&matching("s-2")).await.unwrap();
    let unmatched = mint(&store, at_seven("s-3")).await;

    assert_eq!(allocated(&first).as_deref(), Some("p-2"));
    assert_eq!(second, Allocation::NoFreePhone);
    assert!(matches!(
        allocated(&unmatched).as_deref(),
        Some("p-1" | "p-3")
    ));
    let listed = store.phone_apps(&pid("p-2")).await.unwrap();
    assert_eq!(listed, apps[..1]);
    // A later sync that no longer lists the app on p-3 forgets it there.
    store
        .sync_phone_apps(&apps[..1], at("18:59:40"))
        .await
        .unwrap();
    assert!(store.phone_apps(&pid("p-3")).await.unwrap().is_empty());
}

/// Phone sync's view of `p-1` with one access entry on `access_port` (4.3.2).
async fn sync_access(store: &impl Book, access_port: i64, now: &str) {
    let phone = ControlPlanePhone {
        phone_id: "p-1".into(),
        server_id: "srv-1".into(),
        status: 2,
        update_time: Some(now.into()),
        access: Some(vec![AccessInfo {
            port_type: "server1".into(),
            public_ip: "203.0.113.7".into(),
            access_port,
            listen_port: 38080,
        }]),
        ..ControlPlanePhone::default()
    };
    store.sync_phones(&[phone], at(now), at(now)).await.unwrap();
}

/// 4.3.2: the console's phone page shows where a client connects to the phone, as phone
/// sync last read it; nothing for a phone the book does not know.
async fn a_phones_connect_information_is_what_sync_read_4_3_2(backend: Backend) {
    let store = open(backend).await;
    assert_eq!(store.phone_connect(&pid("p-1")).await.unwrap(), None);

    sync_access(&store, 40001, "19:00:00").await;
    sync_access(&store, 40002, "19:01:00").await;

    let connect = store.phone_connect(&pid("p-1")).await.unwrap().unwrap();
    assert_eq!(connect.server_id.as_deref(), Some("srv-1"));
    let ports: Vec<i64> = connect.access.iter().map(|a| a.access_port).collect();
    assert_eq!(ports, [40002]);
    assert_eq!(connect.access[0].public_ip, "203.0.113.7");
}

async fn a_mint_with_a_key_is_answered_again_and_another_request_refused(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    sync_access(&store, 14308, "18:59:10").await;
    let keyed = |session, hash: &str| {
        let mut request = mint_request(&at_seven(session));
        request.key = Some(MintKey {
            key: IdempotencyKey::parse("key", "k-1".into()).unwrap(),
            request_hash: hash.into(),
            expires_at: at("19:10:00"),
        });
        request
    };

    let first = store.mint_session(&keyed("s-1", "h-1")).await.unwrap();
    // The phone's ports change after the answer; the retry gets the answer as it was.
    sync_access(&store, 20000, "19:00:10").await;
    let again = store.mint_session(&keyed("s-2", "h-1")).await.unwrap();
    let other = store.mint_session(&keyed("s-3", "h-2")).await.unwrap();

    assert_eq!(allocated(&first).as_deref(), Some("p-1"));
    let Allocation::Replayed(replay) = again else {
        panic!("not replayed: {again:?}");
    };
    assert_eq!(replay.access.session_id, sid("s-1").to_string());
    assert_eq!(replay.phone_id.to_string(), "p-1");
    let Allocation::Allocated { connect, .. } = first else {
        unreachable!()
    };
    assert_eq!(replay.connect, connect);
    assert_eq!(connect.access[0].access_port, 14308);
    assert_eq!(connect.server_id.as_deref(), Some("srv-1"));
    assert_eq!(other, Allocation::KeyReused);
    assert!(session(&store, "s-2").await.is_none());
    assert!(session(&store, "s-3").await.is_none());
}

/// A player who reconnects before the game is entered (chapter 6.1's sign check again,
/// 6.2's enter not yet sent) is connected again: the enter's deadline moves as the first
/// use set it, so the hold does not lapse under them and give the phone to the next player.
async fn a_reconnect_before_the_enter_holds_the_phone_again(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    mint(&store, at_seven("s-1")).await;
    let first = verification("s-1", "digest-a", "19:00:20", "19:02:20");
    assert_eq!(mark_verified(&store, &[first]).await, [true]);
    let again = reconnect_holding("s-1", "19:02:00", "19:04:00");
    assert_eq!(mark_verified(&store, &[again]).await, [true]);

    assert_eq!(release_lapsed_holds(&store, "19:03:00").await, 0);

    let s1 = session(&store, "s-1").await.expect("s-1 is in the book");
    assert_eq!(s1.state, SessionState::Verified);
    assert_eq!(
        phone_state(&store, "p-1", at("18:58:00")).await,
        "allocated"
    );
    assert_eq!(
        release_lapsed_holds(&store, "19:04:01").await,
        1,
        "then it lapses"
    );
    assert_eq!(phone_state(&store, "p-1", at("18:58:00")).await, "idle");
}

/// A client reconnecting in a loop before the enter (a game that crashes at launch) holds
/// the phone one enter window past the first use's at most, then the hold lapses and the
/// phone goes back to the pool.
async fn reconnects_before_the_enter_hold_the_phone_one_window_past_the_first_use_at_most(
    backend: Backend,
) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let minted = minted(&store, "s-1").await;
    // A first use at 19:00:10 holding until 19:03:00: a window of 170 s.
    let first = [sign_check("s-1", presented(&minted, "a"))];
    let first = check_signs(&store, &first, "while_live").await;
    assert!(first[0].verdict.is_ok());
    let again = |nonce, now, hold_until| PresentedSignCheck {
        now: at(now),
        hold_until: at(hold_until),
        ..sign_check("s-1", presented(&minted, nonce))
    };

    for (nonce, now, hold_until) in [("b", "19:02:50", "19:05:40"), ("c", "19:05:30", "19:08:20")] {
        let outcome = check_signs(&store, &[again(nonce, now, hold_until)], "while_live").await;
        assert_eq!(
            outcome[0].verdict.as_ref().map(|v| v.0),
            Ok(Verdict::Reconnect)
        );
    }

    assert_eq!(
        release_lapsed_holds(&store, "19:05:49").await,
        0,
        "held to 19:05:50"
    );
    assert_eq!(
        phone_state(&store, "p-1", at("18:58:00")).await,
        "allocated"
    );
    assert_eq!(release_lapsed_holds(&store, "19:05:51").await, 1);
    assert_eq!(phone_state(&store, "p-1", at("18:58:00")).await, "idle");
}

/// A reconnect (`access.reconnect`) is a line of the session's event log, written only
/// while the session is verified or playing: a quit committed before the write wins (the
/// ticket writer reads and writes in one transaction, `check_signs`; called alone, the
/// write still checks).
async fn a_reconnect_is_logged_only_while_the_session_is_live(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    mint(&store, at_seven("s-1")).await;

    assert_eq!(
        mark_verified(&store, &[reconnect("s-1", "19:00:10")]).await,
        [false],
        "minted: not yet verified"
    );
    let first = verification("s-1", "digest-a", "19:00:20", "19:10:00");
    assert_eq!(mark_verified(&store, &[first]).await, [true]);
    assert_eq!(
        mark_verified(&store, &[reconnect("s-1", "19:00:30")]).await,
        [true],
        "verified"
    );
    apply(&store, &[enter("s-1", "p-1", "19:00:40")]).await;
    assert_eq!(
        mark_verified(&store, &[reconnect("s-1", "19:01:00")]).await,
        [true],
        "playing"
    );
    apply(&store, &[quit("s-1", "p-1", "19:02:00", 80)]).await;
    assert_eq!(
        mark_verified(&store, &[reconnect("s-1", "19:03:00")]).await,
        [false],
        "ended"
    );

    let s1 = session(&store, "s-1").await.expect("s-1 is in the book");
    let log = store.session_events(&s1).await.unwrap();
    let kinds: Vec<&str> = log.iter().map(|line| line.kind.as_str()).collect();
    assert_eq!(kinds, ["reconnect", "enter", "reconnect", "quit"]);
    let first_reconnect = &log[0];
    assert_eq!(first_reconnect.time, at("19:00:30"));
    assert_eq!(first_reconnect.received_at, at("19:00:30"));
    assert_eq!(first_reconnect.phone_id, "p-1");
    assert_eq!(first_reconnect.app_id, APP);
    assert_eq!(first_reconnect.outcome, "admitted");
    assert!(!first_reconnect.truncated);
    assert_eq!(
        session(&store, "s-1").await.unwrap().state,
        SessionState::Ended
    );
}

/// Chapters 4.3.2 and 4.3.5: the properties a sync read from a phone's detail are kept, with
/// when, for a reset that cannot read the phone; a sync that did not read the detail keeps
/// them as they were, and one that did replaces them.
async fn phone_sync_keeps_the_properties_it_read_for_a_reset_4_3_2(backend: Backend) {
    let store = open(backend).await;
    let synced = |property: Option<&str>| ControlPlanePhone {
        phone_id: "p-1".into(),
        phone_name: "name-p-1".into(),
        server_id: "s-1".into(),
        status: 2,
        property: property.map(str::to_owned),
        ..ControlPlanePhone::default()
    };
    assert_eq!(store.synced_property(&pid("p-1")).await.unwrap(), None);

    let first = r#"{"ro.horizontal.screen":"1"}"#;
    store
        .sync_phones(&[synced(Some(first))], at("19:00:00"), at("19:00:00"))
        .await
        .unwrap();
    store
        .sync_phones(&[synced(None)], at("19:01:00"), at("19:01:00"))
        .await
        .unwrap();

    let kept = store.synced_property(&pid("p-1")).await.unwrap().unwrap();
    assert_eq!(
        (kept.property.as_str(), kept.read_at),
        (first, at("19:00:00"))
    );
    let second = r#"{"ro.horizontal.screen":"0"}"#;
    store
        .sync_phones(&[synced(Some(second))], at("19:02:00"), at("19:02:00"))
        .await
        .unwrap();
    let kept = store.synced_property(&pid("p-1")).await.unwrap().unwrap();
    assert_eq!(
        (kept.property.as_str(), kept.read_at),
        (second, at("19:02:00"))
    );
}

/// `check_signs` (6.1) reads the batch's sessions once and decides each check against what
/// the checks before it in the batch left, as one by one: under `reconnect = "never"` the
/// first use consumes the ticket, the identical request is a retry with the same key, another
/// request a replay; a wrong ticket is refused and leaves its session minted; a session
/// never minted is unknown. Only the first use writes.
async fn one_batch_of_sign_checks_is_decided_in_arrival_order_6_1(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1", "p-2"], "18:59:00").await;
    let first = minted(&store, "s-1").await;
    let second = minted(&store, "s-2").await;
    let once = presented(&first, "a");
    let checks = [
        sign_check("s-1", presented(&first, "a")),
        sign_check("s-9", presented(&first, "b")),
        sign_check("s-1", presented(&first, "a")),
        sign_check("s-2", presented(&first, "c")),
        sign_check("s-1", presented(&first, "d")),
    ];

    let outcomes = check_signs(&store, &checks, "never").await;

    let verdicts: Vec<_> = outcomes
        .iter()
        .map(|o| o.verdict.as_ref().map(|v| v.0))
        .collect();
    assert_eq!(
        verdicts,
        [
            Ok(Verdict::FirstUse),
            Err(&Refusal::UnknownSession),
            Ok(Verdict::Retry),
            Err(&Refusal::BadTicket),
            Err(&Refusal::Replayed),
        ]
    );
    for admitted in [&outcomes[0], &outcomes[2]] {
        let (_, key) = admitted.verdict.as_ref().unwrap();
        assert_eq!(key.bytes(), first.aes_key.bytes());
    }
    let access = issued(&store, "s-1").await.unwrap();
    assert_eq!(access.state, SessionState::Verified);
    assert_eq!(access.verified_at, Some(at("19:00:10")));
    assert_eq!(access.sign_check_digest.as_deref(), Some(once.digest()));
    let p = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(
        p.allocated_until,
        Some(at("19:03:00")),
        "held by the first use"
    );
    let untouched = issued(&store, "s-2").await.unwrap();
    assert_eq!(untouched.state, SessionState::Minted);
    assert_eq!(untouched.ticket_hash, second.ticket.hash_hex());
}

/// A's hold lapsed without its enter, and its phone was given to B; A's enter then comes
/// late (a game slow to start, or an enter retried after a database outage). A is
/// recorded playing — the phone said so, and it is billed — but the phone stays B's, as
/// minted: B's sign check still finds it held. Before, A became the phone's current
/// session beside B's hold, and B was sent to a phone running A's game.
async fn a_late_enter_of_an_expired_session_takes_no_phone_held_for_a_newer_one(backend: Backend) {
    let store = open(backend).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    assert_eq!(
        allocated(&mint(&store, at_seven("s-a")).await).as_deref(),
        Some("p-1")
    );
    release_lapsed_holds(&store, "19:01:30").await;
    let b = Mint {
        now: "19:01:40",
        hold_until: "19:02:40",
        ..at_seven("s-b")
    };
    assert_eq!(allocated(&mint(&store, b).await).as_deref(), Some("p-1"));

    let applied = apply(&store, &[enter("s-a", "p-1", "19:01:50")]).await;

    assert_eq!(outcomes(&applied), [EventOutcome::Accepted]);
    assert_eq!(
        session(&store, "s-a").await.unwrap().state,
        SessionState::Playing
    );
    let p1 = phone(&store, "p-1", at("18:58:00")).await.unwrap();
    assert_eq!(p1.allocated_session_id.as_deref(), Some("s-b"), "{p1:?}");
    assert_eq!(p1.current_session_id, None, "{p1:?}");
    assert_eq!(p1.state, "allocated");
}
