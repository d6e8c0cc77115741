//! The webhook outbox (migration 0013): every fact a receiver bills on is written by the
//! database's triggers in the transaction of its change, whichever path makes it (the event
//! batch, the watchdog, the recovery log, the queue pass), once, under an id stable for the
//! fact. Event kinds are chapter 6's callbacks: 6.2 enter (status 0), 6.3 quit (status 1).

use cphub::domain::{Outcome as RecoveryOutcome, Priority, QueueId, UserId, WebhookEventType};
use cphub::store::{
    AttemptRecord, Claim, EndpointFilter, FinishedRecovery, MintTimes, NewQueueEntry, NextStep,
    OutboxEvent,
};
use serde_json::json;

use crate::backend_tests;
use crate::helpers::*;

backend_tests!(
    a_new_endpoint_is_sent_what_comes_after_it_not_the_outbox_history,
    an_endpoint_only_another_replica_runs_with_gets_what_this_one_fans_out,
    a_session_played_6_2_6_3_writes_started_then_ended_once,
    a_quit_before_its_enter_writes_ended_only_after_started,
    an_abandoned_session_ends_once_and_a_late_quit_adds_nothing,
    a_recovery_is_reported_once_it_has_its_outcome,
    a_server_incident_is_reported_when_it_opens_and_when_it_closes,
    a_queue_assignment_is_reported_before_its_session_starts,
    ticks_are_written_once_each_while_playing_and_stop_when_the_session_ends,
    a_claim_holds_one_delivery_per_subject_and_a_replay_sends_the_same_ids_again,
    a_replay_over_many_chunks_puts_back_each_event_since_its_time_once,
    the_oldest_undelivered_is_per_endpoint_and_counts_what_is_not_fanned_out,
    a_claims_attempts_recorded_together_each_move_their_own_delivery_on,
    the_next_claim_records_the_last_claims_attempts_first_in_its_transaction,
    an_account_pause_7_2_opens_and_closes_once_however_many_replicas_record_it,
    the_outbox_takes_every_event_type_cphub_sends_and_refuses_another,
);

crate::postgres_test!(
    /// PostgreSQL inlines the outbox's payload functions into the session trigger's statement
    /// (migration 0026): declared IMMUTABLE while calling STABLE functions, each call had gone
    /// through the SQL function executor, parsing and planning its body again for every session
    /// started or ended. What they write is the test above's, on both backends.
    the_session_payloads_are_inlined_on_postgres => payload_functions_are_inlined
);

async fn payload_functions_are_inlined() {
    let store = open(Backend::Postgres).await;
    let pool = sqlx::PgPool::connect(store.url())
        .await
        .expect("test database");
    let sql = "EXPLAIN (VERBOSE) \
        SELECT webhook_session_started(s), webhook_session_ended(s) FROM sessions AS s";
    let plan: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&pool).await.expect("explain");
    let plan: Vec<&str> = plan.iter().map(|(line,)| line.as_str()).collect();
    let plan = plan.join("\n");
    assert!(
        !plan.contains("webhook_session_") && !plan.contains("webhook_ms"),
        "a payload function is called, not inlined:\n{plan}"
    );
    assert!(plan.contains("jsonb_build_object"), "{plan}");
}

crate::postgres_test!(
    /// PostgreSQL may plan a prepared statement generically (after five runs, when that looks
    /// no dearer), and a generic plan cannot use a partial index for `fanned_out = $1`: the
    /// fan-out's read walked the primary key past every outbox row already fanned out, a scan
    /// that grew with the outbox under a flash crowd. With generic plans forced for every
    /// connection, the fan-out and the backlog's read still go through the partial index
    /// `webhook_events_to_fan_out`, as PostgreSQL's own index statistics count.
    the_outbox_is_fanned_out_through_its_partial_index_on_postgres => fan_out_reads_the_partial_index
);

async fn fan_out_reads_the_partial_index() {
    use sqlx::Executor;
    let db = TestDb::new(Backend::Postgres).await;
    let mut admin = sqlx_connect(&db.url).await;
    let name = db.url.rsplit('/').next().unwrap().to_owned();
    let generic = format!("ALTER DATABASE \"{name}\" SET plan_cache_mode = force_generic_plan");
    admin.execute(sqlx::AssertSqlSafe(generic)).await.unwrap();
    let store = open_on(db).await;
    let enters: Vec<_> = (0..6)
        .map(|n| enter(&format!("s-{n}"), &format!("p-{n}"), "19:00:00"))
        .collect();
    apply(&store, &enters).await;
    let billing = [EndpointFilter {
        name: "billing".to_owned(),
        events: vec![],
    }];
    // Two rows a pass, then one finding none: four reads, then one each for the console's
    // backlog and the gauge's oldest.
    for expected in [2, 2, 2, 0] {
        let fanned = store.fan_out_webhooks(&billing, at("19:01:00"), at("19:01:00"), 2);
        assert_eq!(fanned.await.unwrap(), expected);
    }
    store.webhook_backlog().await.unwrap();
    let names = ["billing".to_owned()];
    store.webhook_oldest_undelivered(&names).await.unwrap();

    // Each backend sends its counts some seconds after going idle (ten here).
    let sql = "SELECT idx_scan FROM pg_stat_user_indexes \
               WHERE indexrelname = 'webhook_events_to_fan_out'";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (scans,): (i64,) = sqlx::query_as(sql).fetch_one(&mut admin).await.unwrap();
        if scans >= 6 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the outbox was read {scans} times through its partial index, not 6"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn outbox(store: &impl Book) -> Vec<OutboxEvent> {
    store.outbox(0, 1000).await.expect("outbox reads")
}

/// `(type, id)` of each outbox row, in order.
async fn facts(store: &impl Book) -> Vec<(WebhookEventType, String)> {
    let events = outbox(store).await;
    events.into_iter().map(|e| (e.event_type, e.id)).collect()
}

fn ms(time: &str) -> i64 {
    at(time).epoch_millis()
}

async fn a_session_played_6_2_6_3_writes_started_then_ended_once(backend: Backend) {
    let store = open(backend).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;
    let playing = outbox(&store).await;
    let the_quit = quit("s-1", "p-1", "19:10:30", 630);
    apply(&store, std::slice::from_ref(&the_quit)).await;
    apply(&store, &[redelivered(&the_quit, "19:11:00")]).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;

    let events = outbox(&store).await;

    assert_eq!(playing.len(), 1, "started with its enter: {playing:?}");
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            WebhookEventType::SessionStarted,
            WebhookEventType::SessionEnded
        ],
        "redeliveries add nothing"
    );
    assert_eq!(events[0].id, "evt_session.started_s-1");
    assert_eq!(events[1].id, "evt_session.ended_s-1");
    assert!(events.iter().all(|e| e.subject == "s-1"));
    assert_eq!(
        events[0].data,
        json!({"session_id": "s-1", "phone_id": "p-1", "app_id": APP, "user_id": null,
               "started_at": ms("19:00:00")})
    );
    assert_eq!(
        events[1].data,
        json!({"session_id": "s-1", "phone_id": "p-1", "app_id": APP, "user_id": null,
               "started_at": ms("19:00:00"), "ended_at": ms("19:10:30"),
               "end_reason": "quit", "duration_seconds": 630, "run_time": 630,
               "run_time_mismatch": false})
    );
    assert_eq!(events[1].occurred_at, at("19:10:30"));
}

async fn a_quit_before_its_enter_writes_ended_only_after_started(backend: Backend) {
    let store = open(backend).await;
    apply(&store, &[quit("s-1", "p-1", "19:10:00", 600)]).await;
    let before_enter = facts(&store).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;

    let after_enter = facts(&store).await;

    assert_eq!(before_enter, [], "no start known: nothing to bill yet");
    assert_eq!(
        after_enter,
        [
            (
                WebhookEventType::SessionStarted,
                "evt_session.started_s-1".to_owned()
            ),
            (
                WebhookEventType::SessionEnded,
                "evt_session.ended_s-1".to_owned()
            ),
        ]
    );
}

async fn an_abandoned_session_ends_once_and_a_late_quit_adds_nothing(backend: Backend) {
    let store = open(backend).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;
    record(
        &store,
        &[heartbeat("p-1", "19:05:00", Some("s-1"), "19:05:00")],
    )
    .await;
    let abandoned = store
        .abandon_sessions(at("19:08:00"), GAME_GONE_AFTER, at("19:08:00"))
        .await
        .unwrap();
    apply(&store, &[quit("s-1", "p-1", "19:09:00", 540)]).await;

    let events = outbox(&store).await;

    assert_eq!(abandoned.len(), 1);
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[1].id, "evt_session.ended_s-1");
    assert_eq!(events[1].data["end_reason"], "abandoned");
    assert_eq!(
        events[1].data["ended_at"],
        ms("19:05:00"),
        "the last heartbeat"
    );
    assert_eq!(events[1].data["duration_seconds"], 300);
}

async fn a_recovery_is_reported_once_it_has_its_outcome(backend: Backend) {
    let store = open(backend).await;
    let mut restart = server_incident("p-1", "19:00:00");
    restart.reason = cphub::domain::Reason::Stale;
    restart.action = cphub::domain::Action::Restart;
    restart.outcome = RecoveryOutcome::Pending;
    restart.detail = None;
    let started = store.start_recovery(&restart).await.unwrap();
    let while_pending = facts(&store).await;
    let finished = FinishedRecovery {
        id: started.id,
        outcome: RecoveryOutcome::Succeeded,
        request_id: None,
        job_id: Some("job-1".to_owned()),
        error: None,
        ended_at: at("19:03:00"),
    };
    store.finish_recovery(&finished).await.unwrap();
    store.finish_recovery(&finished).await.unwrap();

    let events = outbox(&store).await;

    assert_eq!(while_pending, []);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event_type, WebhookEventType::PhoneRecovery);
    assert_eq!(events[0].id, format!("evt_phone.recovery_{}", started.id));
    assert_eq!(events[0].subject, "p-1");
    let data = &events[0].data;
    assert_eq!(
        (
            &data["reason"],
            &data["action"],
            &data["outcome"],
            &data["job_id"]
        ),
        (
            &json!("stale"),
            &json!("restart"),
            &json!("succeeded"),
            &json!("job-1")
        )
    );
    assert_eq!(data["ended_at"], ms("19:03:00"));
}

async fn a_server_incident_is_reported_when_it_opens_and_when_it_closes(backend: Backend) {
    let store = open(backend).await;
    let opened = store
        .start_recovery(&server_incident("s-1", "19:00:00"))
        .await
        .unwrap();
    store
        .close_incident(opened.id, at("19:05:00"), "closed: 0 of 4 phones silent")
        .await
        .unwrap();
    store
        .close_incident(opened.id, at("19:09:00"), "again")
        .await
        .unwrap();

    let events = outbox(&store).await;

    let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
    let id = opened.id;
    assert_eq!(
        ids,
        [
            format!("evt_fleet.incident_{id}_open"),
            format!("evt_fleet.incident_{id}_closed")
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.event_type == WebhookEventType::FleetIncident)
    );
    assert!(events.iter().all(|e| e.subject == "s-1"), "the server");
    assert_eq!(events[1].data["outcome"], "closed");
}

async fn a_queue_assignment_is_reported_before_its_session_starts(backend: Backend) {
    let store = open(backend).await;
    let times = MintTimes {
        now: at("19:00:00"),
        fresh_since: at("18:58:00"),
        auth_ts: at("19:02:00").epoch_millis(),
        hold_until: at("19:02:05"),
        match_app: false,
    };
    let entry = NewQueueEntry {
        queue_id: QueueId::parse("queue_id", "q-1".to_owned()).unwrap(),
        app_id: aid(APP),
        user_id: UserId::parse("user_id", "u-1".to_owned()).unwrap(),
        token_name: "platform".to_owned(),
        priority: Priority::parse("priority", 0).unwrap(),
        now: at("18:59:30"),
        expires_at: at("19:10:00"),
    };
    store.join_queue(&entry, &times).await.unwrap();
    let waiting = facts(&store).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    store.serve_queue(&times).await.unwrap();
    let assigned = store
        .queue_entry(&entry.queue_id, at("19:00:00"))
        .await
        .unwrap();
    let session = assigned.unwrap().session_id.expect("assigned").to_string();
    apply(&store, &[enter(&session, "p-1", "19:00:10")]).await;

    let events = outbox(&store).await;

    assert_eq!(waiting, [], "no phone yet");
    let types: Vec<_> = events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            WebhookEventType::QueueAssigned,
            WebhookEventType::SessionStarted
        ]
    );
    assert_eq!(events[0].id, format!("evt_queue.assigned_q-1_{session}"));
    assert_eq!(
        events[0].subject, session,
        "ordered with its session's events"
    );
    assert_eq!(events[0].data["phone_id"], "p-1");
    assert_eq!(events[0].data["user_id"], "u-1");
}

async fn ticks_are_written_once_each_while_playing_and_stop_when_the_session_ends(
    backend: Backend,
) {
    let store = open(backend).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;
    let before_first = store.write_webhook_ticks(60, at("19:00:59")).await.unwrap();
    apply(&store, &[enter("s-2", "p-2", "19:01:45")]).await;
    let first = store.write_webhook_ticks(60, at("19:02:30")).await.unwrap();
    // s-1's tick is written already, s-2's first is due: one pass, one new tick.
    let again = store.write_webhook_ticks(60, at("19:02:59")).await.unwrap();
    apply(&store, &[quit("s-1", "p-1", "19:03:10", 190)]).await;
    apply(&store, &[quit("s-2", "p-2", "19:03:10", 85)]).await;
    let after_end = store.write_webhook_ticks(60, at("19:05:00")).await.unwrap();

    let events = outbox(&store).await;

    assert_eq!((before_first, first, again, after_end), (0, 1, 1, 0));
    let ids: Vec<_> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "evt_session.started_s-1",
            "evt_session.started_s-2",
            "evt_session.tick_s-1_2",
            "evt_session.tick_s-2_1",
            "evt_session.ended_s-1",
            "evt_session.ended_s-2",
        ]
    );
    assert_eq!(events[2].event_type, WebhookEventType::SessionTick);
    assert_eq!(events[2].data["seconds_played"], 120);
    assert_eq!(events[2].occurred_at, at("19:02:00"));
    assert_eq!(events[3].data["seconds_played"], 60);
    assert_eq!(events[3].occurred_at, at("19:02:45"));
}

fn claim<'a>(by: &'a str, now: &str) -> Claim<'a> {
    Claim {
        endpoint: "billing",
        now: at(now),
        lease_until: at(now).plus(std::time::Duration::from_secs(60)),
        by,
        limit: 10,
        recording: &[],
    }
}

fn delivered(seq: i64, now: &str) -> AttemptRecord {
    AttemptRecord {
        endpoint: "billing".to_owned(),
        event_seq: seq,
        attempted_at: at(now),
        status: Some(204),
        latency_ms: 3,
        response: Some(String::new()),
        error: None,
        next: NextStep::Delivered,
        lease: "a".to_owned(),
    }
}

/// A replay is written chunk by chunk (2,000 deliveries each, paged by outbox seq) so that
/// SQLite's one writer is never held for long. 6,000 sessions started, alternately at 19:00
/// and 19:10, the later ones ended at 19:15: a replay of starts since 19:05 makes exactly
/// the 3,000 later starts' deliveries (two chunks, past 3,000 ends of other types), each
/// once, and asked again puts the same 3,000 back; one since 19:20 makes none.
async fn a_replay_over_many_chunks_puts_back_each_event_since_its_time_once(backend: Backend) {
    let store = open(backend).await;
    let starts: Vec<_> = (0..6_000)
        .map(|n| {
            let time = if n % 2 == 0 { "19:00:00" } else { "19:10:00" };
            enter(&format!("s-{n}"), &format!("p-{n}"), time)
        })
        .collect();
    let ends: Vec<_> = (1..6_000)
        .step_by(2)
        .map(|n| quit(&format!("s-{n}"), &format!("p-{n}"), "19:15:00", 300))
        .collect();
    for batch in starts.chunks(500).chain(ends.chunks(500)) {
        apply(&store, batch).await;
    }
    let billing = EndpointFilter {
        name: "billing".to_owned(),
        events: vec![WebhookEventType::SessionStarted],
    };

    let first = store.replay_webhooks(&billing, at("19:05:00"), at("19:20:00"));
    assert_eq!(first.await.unwrap(), 3_000);
    let again = store.replay_webhooks(&billing, at("19:05:00"), at("19:21:00"));
    assert_eq!(again.await.unwrap(), 3_000);
    let none = store.replay_webhooks(&billing, at("19:20:00"), at("19:21:00"));
    assert_eq!(none.await.unwrap(), 0);
    let claimed = store
        .claim_webhook_deliveries(&Claim {
            limit: 5_000,
            ..claim("a", "19:21:00")
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3_000, "one delivery per event since 19:05");
    let started_at_1910 = |id: &str| {
        let n = id.strip_prefix("evt_session.started_s-");
        n.and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n % 2 == 1)
    };
    let strays: Vec<_> = (claimed.iter())
        .map(|d| d.event.id.as_str())
        .filter(|id| !started_at_1910(id))
        .collect();
    assert!(strays.is_empty(), "not a start of 19:10: {strays:?}");
}

async fn a_claim_holds_one_delivery_per_subject_and_a_replay_sends_the_same_ids_again(
    backend: Backend,
) {
    let store = open(backend).await;
    apply(
        &store,
        &[
            enter("s-1", "p-1", "19:00:00"),
            enter("s-2", "p-2", "19:00:00"),
        ],
    )
    .await;
    apply(&store, &[quit("s-1", "p-1", "19:05:00", 300)]).await;
    let billing = EndpointFilter {
        name: "billing".to_owned(),
        events: vec![],
    };
    let ends_only = EndpointFilter {
        name: "crm".to_owned(),
        events: vec![WebhookEventType::SessionEnded],
    };
    let endpoints = [billing.clone(), ends_only];
    let fanned = store.fan_out_webhooks(&endpoints, at("19:06:00"), at("19:06:00"), 100);
    assert_eq!(fanned.await.unwrap(), 3);

    let first = store
        .claim_webhook_deliveries(&claim("a", "19:06:00"))
        .await
        .unwrap();
    let while_held = store
        .claim_webhook_deliveries(&claim("b", "19:06:01"))
        .await
        .unwrap();
    let attempts: Vec<_> = (first.iter())
        .map(|d| delivered(d.event.seq, "19:06:02"))
        .collect();
    record_attempts(&store, &attempts, "19:06:02").await;
    let next = store
        .claim_webhook_deliveries(&claim("b", "19:06:03"))
        .await
        .unwrap();
    record_attempts(
        &store,
        &[AttemptRecord {
            lease: "b".to_owned(),
            ..delivered(next[0].event.seq, "19:06:04")
        }],
        "19:06:04",
    )
    .await;
    let crm = store
        .webhook_deliveries(&cphub::store::DeliveryFilter {
            endpoint: Some("crm".into()),
            state: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    let replayed = store
        .replay_webhooks(&billing, at("19:04:00"), at("19:07:00"))
        .await;
    let again = store
        .claim_webhook_deliveries(&claim("c", "19:07:00"))
        .await
        .unwrap();

    let ids = |claimed: &[cphub::store::ClaimedDelivery]| -> Vec<String> {
        claimed.iter().map(|d| d.event.id.clone()).collect()
    };
    assert_eq!(
        ids(&first),
        ["evt_session.started_s-1", "evt_session.started_s-2"],
        "s-1's end waits behind its start"
    );
    assert_eq!(ids(&while_held), Vec::<String>::new(), "held by a's lease");
    assert_eq!(ids(&next), ["evt_session.ended_s-1"]);
    assert_eq!(crm.len(), 1, "the crm endpoint wants ends only");
    assert_eq!(replayed.unwrap(), 1, "only s-1's end happened since 19:04");
    assert_eq!(ids(&again), ["evt_session.ended_s-1"], "the same id again");
}

/// One fan-out pass gives every row its deliveries and marks them all, so the next pass
/// finds nothing; a claim's attempts, recorded in one call, each move their own delivery on:
/// delivered, due again later with its error, failed; every lease is released, and each
/// attempt is kept with its status and latency.
/// What `cphub_webhook_oldest_undelivered_seconds` reads: per endpoint, the commit time of
/// its oldest pending delivery or of the oldest event not fanned out, whichever is older;
/// nothing once the endpoint has taken everything.
async fn the_oldest_undelivered_is_per_endpoint_and_counts_what_is_not_fanned_out(
    backend: Backend,
) {
    let store = open(backend).await;
    let names = ["billing".to_owned(), "crm".to_owned()];
    let oldest = || store.webhook_oldest_undelivered(&names);
    assert_eq!(oldest().await.unwrap(), [None, None], "an empty outbox");
    let endpoints = [
        EndpointFilter {
            name: "billing".to_owned(),
            events: vec![],
        },
        EndpointFilter {
            name: "crm".to_owned(),
            events: vec![WebhookEventType::SessionEnded],
        },
    ];
    let fan_out = |now| store.fan_out_webhooks(&endpoints, at(now), at(now), 100);

    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;
    let started = outbox(&store).await[0].clone();
    let not_fanned = Some(started.recorded_at);
    assert_eq!(
        oldest().await.unwrap(),
        [not_fanned, not_fanned],
        "both still to take it"
    );

    assert_eq!(fan_out("19:01:00").await.unwrap(), 1);
    let pending = Some(started.recorded_at);
    assert_eq!(
        oldest().await.unwrap(),
        [pending, None],
        "crm wants ends only"
    );

    apply(&store, &[quit("s-1", "p-1", "19:05:00", 300)]).await;
    let ended = outbox(&store).await[1].clone();
    assert_eq!(
        oldest().await.unwrap(),
        [pending, Some(ended.recorded_at)],
        "billing's own pending start is older than the end not fanned out"
    );

    assert_eq!(fan_out("19:06:00").await.unwrap(), 1);
    let first = store
        .claim_webhook_deliveries(&claim("a", "19:06:00"))
        .await
        .unwrap();
    assert_eq!(first.len(), 1, "the end waits behind the start");
    record_attempts(&store, &[delivered(started.seq, "19:06:01")], "19:06:01").await;
    assert_eq!(
        oldest().await.unwrap(),
        [Some(ended.recorded_at), Some(ended.recorded_at)],
        "the start delivered: the end is what both have left"
    );
}

async fn a_claims_attempts_recorded_together_each_move_their_own_delivery_on(backend: Backend) {
    let store = open(backend).await;
    let entered = [("s-1", "p-1"), ("s-2", "p-2"), ("s-3", "p-3")];
    let events: Vec<_> = (entered.iter())
        .map(|(s, p)| enter(s, p, "19:00:00"))
        .collect();
    apply(&store, &events).await;
    let billing = [EndpointFilter {
        name: "billing".to_owned(),
        events: vec![],
    }];
    let fan_out = |now| store.fan_out_webhooks(&billing, at(now), at(now), 100);
    assert_eq!(fan_out("19:06:00").await.unwrap(), 3);
    assert_eq!(
        fan_out("19:06:00").await.unwrap(),
        0,
        "all marked fanned out"
    );

    let claimed = store
        .claim_webhook_deliveries(&claim("a", "19:06:00"))
        .await
        .unwrap();
    let seq = |session: &str| {
        let found = claimed.iter().find(|d| d.event.subject == session);
        found.expect("claimed").event.seq
    };
    let failed = |seq, next, status, error: &str| AttemptRecord {
        status,
        latency_ms: 10_000,
        response: None,
        error: Some(error.to_owned()),
        next,
        ..delivered(seq, "19:06:01")
    };
    let retry_at = at("19:06:30");
    let attempts = [
        delivered(seq("s-1"), "19:06:01"),
        failed(
            seq("s-2"),
            NextStep::RetryAt(retry_at),
            Some(503),
            "HTTP 503",
        ),
        failed(seq("s-3"), NextStep::Failed, None, "timed out"),
    ];
    record_attempts(&store, &attempts, "19:06:01").await;

    let shown = |session: &str| {
        let id = format!("evt_session.started_{session}");
        let id = cphub::domain::WebhookEventId::parse("event_id", id).unwrap();
        let store = &store;
        async move {
            store
                .webhook_delivery("billing", &id)
                .await
                .unwrap()
                .unwrap()
        }
    };
    let (one, one_attempts) = shown("s-1").await;
    assert_eq!(
        (one.state.as_str(), one.attempts, one.last_error),
        ("delivered", 1, None)
    );
    assert_eq!(one_attempts[0].status, Some(204));
    let (two, two_attempts) = shown("s-2").await;
    assert_eq!((two.state.as_str(), two.attempts), ("pending", 1));
    assert_eq!(two.next_attempt_at, retry_at);
    assert_eq!(two.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(
        (
            two_attempts.len(),
            two_attempts[0].status,
            two_attempts[0].latency_ms
        ),
        (1, Some(503), 10_000)
    );
    let (three, three_attempts) = shown("s-3").await;
    assert_eq!((three.state.as_str(), three.attempts), ("failed", 1));
    assert_eq!(three_attempts[0].status, None);
    assert_eq!(three_attempts[0].error.as_deref(), Some("timed out"));

    // The leases are released: s-2's delivery is claimed again once due, by anyone.
    let early = store
        .claim_webhook_deliveries(&claim("b", "19:06:29"))
        .await
        .unwrap();
    assert!(early.is_empty(), "not due before its retry");
    let again = store
        .claim_webhook_deliveries(&claim("b", "19:06:30"))
        .await
        .unwrap();
    let subjects: Vec<_> = again.iter().map(|d| d.event.subject.as_str()).collect();
    assert_eq!(subjects, ["s-2"]);
    assert_eq!(again[0].attempts, 1);
}

/// 7.2 (CPS.0006 arrears): each replica whose call is refused records the pause; one pause
/// is open at a time, so the second record changes nothing, and only the first end counts.
/// Migration 0015.
async fn an_account_pause_7_2_opens_and_closes_once_however_many_replicas_record_it(
    backend: Backend,
) {
    let store = open(backend).await;
    let probe = pid("p-1");
    let other = pid("p-2");

    let first = store
        .open_account_pause("CPS.0006", &probe, at("19:00:00"))
        .await;
    let second = store
        .open_account_pause("CPS.0006", &other, at("19:00:01"))
        .await;
    let open = store
        .account_pause()
        .await
        .unwrap()
        .expect("one open pause");
    let closed = store.close_account_pause(at("19:05:00")).await;
    let closed_again = store.close_account_pause(at("19:05:01")).await;
    let after = store.account_pause().await.unwrap();
    let next = store
        .open_account_pause("CPS.0007", &other, at("19:10:00"))
        .await;
    // Ids are the table's: a refused insert may use one up.
    let next_id = store.account_pause().await.unwrap().expect("open").id;

    assert_eq!((first.unwrap(), second.unwrap()), (true, false));
    assert_eq!(
        (open.code.as_str(), open.probe_phone_id.as_str()),
        ("CPS.0006", "p-1")
    );
    assert_eq!(open.started_at, at("19:00:00"));
    assert_eq!((closed.unwrap(), closed_again.unwrap()), (true, false));
    assert_eq!(after, None);
    assert!(next.unwrap(), "a new pause after the end");
    let events = outbox(&store).await;
    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let first_id = open.id;
    assert_eq!(
        ids,
        [
            format!("evt_fleet.incident_account_{first_id}_open"),
            format!("evt_fleet.incident_account_{first_id}_closed"),
            format!("evt_fleet.incident_account_{next_id}_open"),
        ]
    );
    assert!(
        events
            .iter()
            .all(|e| e.event_type == WebhookEventType::FleetIncident)
    );
    assert!(events.iter().all(|e| e.subject == "account"));
    assert_eq!(
        events[1].data,
        json!({"pause_id": first_id, "subject": "account", "reason": "account_refused",
               "code": "CPS.0006", "phone_id": "p-1", "outcome": "closed",
               "started_at": ms("19:00:00"), "ended_at": ms("19:05:00")})
    );
    assert_eq!(events[1].occurred_at, at("19:05:00"));
}

/// A worker records its last claim's attempts in its next claim's transaction, before it
/// claims: a session's end, held back while its start was pending, is claimed by the very
/// call that records the start delivered; the start's attempt is kept.
async fn the_next_claim_records_the_last_claims_attempts_first_in_its_transaction(
    backend: Backend,
) {
    let store = open(backend).await;
    apply(&store, &[enter("s-1", "p-1", "19:00:00")]).await;
    apply(&store, &[quit("s-1", "p-1", "19:05:00", 300)]).await;
    let billing = [EndpointFilter {
        name: "billing".to_owned(),
        events: vec![],
    }];
    let fanned = store.fan_out_webhooks(&billing, at("19:06:00"), at("19:06:00"), 100);
    assert_eq!(fanned.await.unwrap(), 2);
    let first = store
        .claim_webhook_deliveries(&claim("a", "19:06:00"))
        .await
        .unwrap();
    let attempts = [delivered(first[0].event.seq, "19:06:01")];

    let next = store
        .claim_webhook_deliveries(&Claim {
            recording: &attempts,
            ..claim("a", "19:06:01")
        })
        .await
        .unwrap();

    let ids = |claimed: &[cphub::store::ClaimedDelivery]| -> Vec<String> {
        claimed.iter().map(|d| d.event.id.clone()).collect()
    };
    assert_eq!(ids(&first), ["evt_session.started_s-1"]);
    assert_eq!(
        ids(&next),
        ["evt_session.ended_s-1"],
        "claimed once its start is recorded"
    );
    let id = cphub::domain::WebhookEventId::parse("event_id", "evt_session.started_s-1".to_owned());
    let (start, start_attempts) = (store.webhook_delivery("billing", &id.unwrap()).await)
        .unwrap()
        .expect("the start's delivery");
    assert_eq!((start.state.as_str(), start.attempts), ("delivered", 1));
    assert_eq!(start_attempts.len(), 1);
    assert_eq!(start_attempts[0].status, Some(204));
}

/// The outbox's `type` is checked by the database (a table CHECK on SQLite; on PostgreSQL a
/// domain since migration 0031, which the session trigger's one-row inserts no longer
/// re-parse per row): every type cphub sends goes in, and one it does not is refused.
async fn the_outbox_takes_every_event_type_cphub_sends_and_refuses_another(backend: Backend) {
    let store = open(backend).await;
    // SQLite keeps times as epoch milliseconds and has no default for `recorded_at`.
    let (columns, time) = match backend {
        Backend::Sqlite => ("occurred_at, recorded_at", "1767225600000, 1767225600000"),
        Backend::Postgres => ("occurred_at", "'2026-01-01T00:00:00Z'"),
    };
    let insert = |n: usize, kind: &str| {
        format!(
            "INSERT INTO webhook_events (event_id, type, subject, data, {columns}) \
             VALUES ('evt_{n}', '{kind}', 's', '{{}}', {time})"
        )
    };
    let types = WebhookEventType::ALL.iter().map(|t| t.as_str());
    for (n, kind) in types.chain(["session.unknown"]).enumerate() {
        let done = raw_execute(backend, store.url(), &insert(n, kind)).await;
        match kind {
            "session.unknown" => assert!(done.is_err(), "an unknown type went in"),
            _ => assert!(done.is_ok(), "{kind} was refused: {done:?}"),
        }
    }
}

/// Migration 0035: the outbox is written with or without endpoints, so an endpoint first
/// configured on a book kept for months would be sent those months. Registered when first
/// seen, it gets the rows recorded after ten minutes before that, and its start does not
/// move when seen again; an endpoint never registered (a test's fan-out alone) gets all.
async fn a_new_endpoint_is_sent_what_comes_after_it_not_the_outbox_history(backend: Backend) {
    let store = open(backend).await;
    apply(&store, &[enter("s-old", "p-1", "19:00:00")]).await;
    let names = [EndpointFilter {
        name: "billing".to_owned(),
        events: vec![],
    }];
    // First seen twenty minutes after s-old's row was recorded (the outbox's times are the
    // database's clock): that row is history.
    let first_seen = cphub::domain::UtcTime::now().plus(std::time::Duration::from_secs(1200));
    store
        .register_webhook_endpoints(&names, first_seen)
        .await
        .unwrap();
    apply(&store, &[enter("s-new", "p-2", "19:00:00")]).await;
    let later = first_seen.plus(std::time::Duration::from_secs(3600));
    store
        .register_webhook_endpoints(&names, later)
        .await
        .unwrap();
    let endpoints = ["billing", "crm"].map(|name| EndpointFilter {
        name: name.to_owned(),
        events: vec![],
    });

    let fanned = store.fan_out_webhooks(&endpoints, at("19:06:00"), at("19:06:00"), 100);
    assert_eq!(fanned.await.unwrap(), 2, "both rows fanned out");

    let subjects = async |endpoint: &str| {
        let listed = deliveries_to(&store, endpoint).await;
        let mut subjects: Vec<String> = listed.into_iter().map(|d| d.subject).collect();
        subjects.sort();
        subjects
    };
    assert_eq!(subjects("billing").await, ["s-new"]);
    assert_eq!(subjects("crm").await, ["s-new", "s-old"]);
}

/// Migration 0036: a fan-out marks a row done for every endpoint at once, so one run by a
/// replica that lacks an endpoint (a rolling deploy adding it) left that endpoint without
/// the row for good. An endpoint another replica ran with in the last ten minutes gets its
/// deliveries of the types it wants from every fan-out; ten minutes after it was last seen,
/// no more (removed from every replica).
async fn an_endpoint_only_another_replica_runs_with_gets_what_this_one_fans_out(backend: Backend) {
    let store = open(backend).await;
    let crm = EndpointFilter {
        name: "crm".to_owned(),
        events: vec![WebhookEventType::SessionEnded],
    };
    store
        .register_webhook_endpoints(&[crm], at("19:00:00"))
        .await
        .unwrap();
    let billing = [EndpointFilter {
        name: "billing".to_owned(),
        events: vec![],
    }];
    let played = [
        enter("s-1", "p-1", "19:00:00"),
        quit("s-1", "p-1", "19:01:00", 60),
    ];
    apply(&store, &played).await;

    let fanned = store.fan_out_webhooks(&billing, at("19:05:00"), at("19:05:00"), 100);
    assert_eq!(fanned.await.unwrap(), 2);
    let types = async |endpoint: &str| {
        let listed = deliveries_to(&store, endpoint).await;
        let mut types: Vec<String> = (listed.into_iter())
            .map(|d| format!("{} {}", d.subject, d.event_type))
            .collect();
        types.sort();
        types
    };
    assert_eq!(
        types("billing").await,
        ["s-1 session.ended", "s-1 session.started"]
    );
    assert_eq!(
        types("crm").await,
        ["s-1 session.ended"],
        "its filter, as written"
    );

    let played = [
        enter("s-2", "p-2", "19:08:00"),
        quit("s-2", "p-2", "19:09:00", 60),
    ];
    apply(&store, &played).await;
    let fanned = store.fan_out_webhooks(&billing, at("19:10:01"), at("19:10:01"), 100);
    assert_eq!(fanned.await.unwrap(), 2);
    assert_eq!(types("billing").await.len(), 4);
    assert_eq!(
        types("crm").await,
        ["s-1 session.ended"],
        "not seen for ten minutes"
    );
}

/// The first ten deliveries to `endpoint`, newest first.
async fn deliveries_to(store: &impl Book, endpoint: &str) -> Vec<cphub::store::DeliveryView> {
    let filter = cphub::store::DeliveryFilter {
        endpoint: Some(endpoint.into()),
        state: None,
        before: None,
        limit: 10,
    };
    store.webhook_deliveries(&filter).await.unwrap()
}
