//! Phone sync and the heartbeat flush on PostgreSQL, where replicas write `phones` at once:
//! both lock the phones' rows in key order, so they wait for each other in line and never
//! deadlock. 4.3.1 lists phones newest first; a sync that upserted them in that order held
//! the newest while waiting for the oldest, which a flush (key order) held while waiting for
//! the newest, and PostgreSQL broke the cycle only after `deadlock_timeout` by failing one.
//! On a busy machine the flushes kept failing for seconds, the book heard no heartbeat, and
//! the watchdog abandoned sessions of phones in play (the scale-out test's rollout run).
//! SQLite has one writer connection, so lock order is PostgreSQL's question alone.

use std::time::Duration;

use cphub::domain::Session;
use cphub::store::HeartbeatBuffer;
use sqlx::{Connection, Executor, PgConnection};

use crate::helpers::*;

crate::postgres_test!(phone_sync_of_a_4_3_1_list_and_a_heartbeat_flush_never_deadlock => sync_and_flush_wait_in_line);

/// The flush's order: one transaction writing p-1 then p-3 (key order), as
/// `record_heartbeats` does. Made by hand so the test can stop it after its first row.
const FLUSH_FIRST_ROW: &str =
    "UPDATE phones SET last_seen_at = '2024-05-01 19:01:00+00' WHERE phone_id = 'p-1'";
const FLUSH_LAST_ROW: &str =
    "UPDATE phones SET last_seen_at = '2024-05-01 19:01:00+00' WHERE phone_id = 'p-3'";

async fn sync_and_flush_wait_in_line() {
    let store = open(Backend::Postgres).await;
    let phones = [("p-1", "srv-1"), ("p-2", "srv-1"), ("p-3", "srv-1")];
    sync(&store, &phones, "19:00:00").await;
    let mut flush = PgConnection::connect(store.url()).await.unwrap();
    flush.execute("BEGIN").await.unwrap();
    flush.execute(FLUSH_FIRST_ROW).await.unwrap();

    // Listed as 4.3.1 lists them: newest first.
    let newest_first: Vec<_> = phones.iter().rev().copied().collect();
    let shared = store.shared();
    let synced = tokio::spawn(async move { sync(&shared, &newest_first, "19:00:05").await });
    // The sync waits for p-1; in key order it has locked nothing before it.
    wait_for_lock_waiters(&mut flush, 1).await;
    let last_row = flush.execute(FLUSH_LAST_ROW).await;
    flush.execute("COMMIT").await.unwrap();

    assert!(
        last_row.is_ok(),
        "the flush's last row is free while the sync waits for its first: {last_row:?}"
    );
    synced.await.expect("the sync commits after the flush");
    let p3 = phone(&store, "p-3", at("19:00:00")).await.unwrap();
    assert_eq!(
        p3.last_seen_at,
        Some(at("19:01:00")),
        "the flush's write kept"
    );
    assert_eq!(
        p3.cph_synced_at,
        Some(at("19:00:05")),
        "the sync's write after it"
    );
}

crate::postgres_test!(
    /// The hold sweep (`release_lapsed_holds`, run by every mint and by the hold sweeper) against
    /// a flush: the sweep's `UPDATE … WHERE allocated_until < now` took the lapsed phones in
    /// scan order, so with p-3's hold written after p-1's it could hold p-3 while waiting for p-1,
    /// which a flush held while waiting for p-3. The sweep now locks them in key order.
    the_hold_sweep_and_a_heartbeat_flush_never_deadlock => sweep_and_flush_wait_in_line
);

async fn sweep_and_flush_wait_in_line() {
    let store = open(Backend::Postgres).await;
    let phones = [("p-1", "srv-1"), ("p-2", "srv-1"), ("p-3", "srv-1")];
    sync(&store, &phones, "19:00:00").await;
    // Two lapsed holds, p-3's row version written before p-1's: a scan meets p-3 first.
    let mut flush = PgConnection::connect(store.url()).await.unwrap();
    for phone in ["p-3", "p-1"] {
        sqlx::query(
            "UPDATE phones SET allocated_until = '2024-05-01 19:00:30+00' WHERE phone_id = $1",
        )
        .bind(phone)
        .execute(&mut flush)
        .await
        .unwrap();
    }
    flush.execute("BEGIN").await.unwrap();
    flush.execute(FLUSH_FIRST_ROW).await.unwrap();

    let shared = store.shared();
    let swept = tokio::spawn(async move { release_lapsed_holds(&shared, "19:01:00").await });
    // The sweep waits for p-1; in key order it has locked nothing before it.
    wait_for_lock_waiters(&mut flush, 1).await;
    let last_row = flush.execute(FLUSH_LAST_ROW).await;
    flush.execute("COMMIT").await.unwrap();

    assert!(
        last_row.is_ok(),
        "the flush's last row is free while the sweep waits for its first: {last_row:?}"
    );
    swept.await.expect("the sweep commits after the flush");
    let rows: Vec<(String, bool, bool)> = sqlx::query_as(
        "SELECT phone_id, allocated_until IS NULL, last_seen_at = '2024-05-01 19:01:00+00' \
         FROM phones WHERE phone_id IN ('p-1', 'p-3') ORDER BY phone_id",
    )
    .fetch_all(&mut flush)
    .await
    .unwrap();
    let expected = |phone: &str| (phone.to_owned(), true, true);
    assert_eq!(
        rows,
        [expected("p-1"), expected("p-3")],
        "(phone, hold released, the flush's write kept)"
    );
}

crate::postgres_test!(
    /// A batch of mints (`Store::mint_sessions`) pinning p-3, then p-1, against a flush: minted
    /// one after the other in one transaction, the batch held p-3 while waiting for p-1, which
    /// the flush held while waiting for p-3. The batch locks its pinned phones in key order
    /// first, with the lapsed holds, and waits for no phone row after that.
    a_mint_batch_pinning_phones_and_a_heartbeat_flush_never_deadlock => mint_batch_and_flush_wait_in_line
);

async fn mint_batch_and_flush_wait_in_line() {
    let store = open(Backend::Postgres).await;
    idle_phones(&store, &["p-1", "p-2", "p-3"], "18:59:00").await;
    let mut flush = PgConnection::connect(store.url()).await.unwrap();
    flush.execute("BEGIN").await.unwrap();
    flush.execute(FLUSH_FIRST_ROW).await.unwrap();

    let shared = store.shared();
    let minted = tokio::spawn(async move {
        let pinned = |session, phone| {
            mint_request(&Mint {
                pinned: Some(phone),
                ..at_seven(session)
            })
        };
        let (first, second) = (pinned("s-3", "p-3"), pinned("s-1", "p-1"));
        shared.mint_sessions(&[&first, &second]).await
    });
    // The batch waits for p-1; in key order it has locked nothing before it.
    wait_for_lock_waiters(&mut flush, 1).await;
    let last_row = flush.execute(FLUSH_LAST_ROW).await;
    flush.execute("COMMIT").await.unwrap();

    assert!(
        last_row.is_ok(),
        "the flush's last row is free while the batch waits for its first: {last_row:?}"
    );
    let minted = minted
        .await
        .unwrap()
        .expect("the batch commits after the flush");
    let phones: Vec<_> = minted.iter().map(allocated).collect();
    assert_eq!(phones, [Some("p-3".into()), Some("p-1".into())]);
}

crate::postgres_test!(
    /// The only free phone held by another transaction (a heartbeat flush writing it, phone
    /// sync) when a mint comes: the pick skips locked rows, so the mint was refused
    /// `NO_FREE_PHONE` for a phone that was free, as a CI run minting the last of four phones
    /// saw. The mint now looks again, without waiting for the row, and gets it once it is let go.
    a_mint_gets_the_only_free_phone_a_flush_holds_for_a_moment => mint_beside_a_held_free_phone
);

async fn mint_beside_a_held_free_phone() {
    let store = open(Backend::Postgres).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let mut flush = PgConnection::connect(store.url()).await.unwrap();
    flush.execute("BEGIN").await.unwrap();
    flush.execute(FLUSH_FIRST_ROW).await.unwrap();

    let shared = store.shared();
    let mut minted = tokio::spawn(async move {
        let request = mint_request(&at_seven("s-1"));
        shared.mint_sessions(&[&request]).await
    });
    // The mint has skipped the held row and found the phone free nonetheless: it is
    // between two looks, in its transaction, waiting for no lock.
    let mut watch = PgConnection::connect(store.url()).await.unwrap();
    let look = async {
        tokio::select! {
            answered = &mut minted => panic!("answered while the phone was held: {answered:?}"),
            () = looking_again(&mut watch) => {}
        }
    };
    within("the mint looking again", Duration::from_secs(60), look).await;
    flush.execute("COMMIT").await.unwrap();

    let minted = minted.await.unwrap().expect("the mint commits");
    assert_eq!(allocated(&minted[0]), Some("p-1".into()), "{minted:?}");
}

/// Waits until a transaction of the database has checked for a free phone without a lock
/// (`book::free_phone_exists`): only a mint whose pick skipped a held free phone does.
async fn looking_again(watch: &mut PgConnection) {
    loop {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *watch)
            .await
            .unwrap();
        let looking: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
               AND state = 'idle in transaction' \
               AND query LIKE 'SELECT phone_id FROM phones WHERE allocated_session_id%'",
        )
        .fetch_one(&mut *watch)
        .await
        .unwrap();
        if looking > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

crate::postgres_test!(
    /// A flush chunk never waits for a row another writer holds (an event batch, a sign check,
    /// a mint committing): it writes the rest and hands the held rows' heartbeats back to the
    /// buffer, and the next flush writes them. Waiting for each in turn, in key order, took
    /// 40-146 ms per chunk under the fleet benchmark while the chunk's own locks held events up.
    a_flush_defers_the_rows_another_writer_holds_and_writes_them_next => flush_skips_held_rows
);

async fn flush_skips_held_rows() {
    let store = open(Backend::Postgres).await;
    apply(
        &store,
        &[
            enter("s-1", "p-1", "19:00:00"),
            enter("s-2", "p-2", "19:00:00"),
        ],
    )
    .await;
    idle_phones(&store, &["p-3"], "19:00:00").await;
    let mut other = PgConnection::connect(store.url()).await.unwrap();
    other.execute("BEGIN").await.unwrap();
    let held = "SELECT 1 FROM sessions WHERE session_id = 's-1' FOR UPDATE; \
                SELECT 1 FROM phones WHERE phone_id = 'p-3' FOR UPDATE";
    other.execute(held).await.unwrap();
    let buffer = HeartbeatBuffer::new(1000);
    for (phone, session) in [("p-1", Some("s-1")), ("p-2", Some("s-2")), ("p-3", None)] {
        buffer.record(heartbeat(phone, "19:00:05", session, "19:00:06"));
    }
    buffer.record(heartbeat("p-4", "19:00:05", None, "19:00:06")); // a phone new to the book

    // Bounded only so that a flush which waits fails the test instead of hanging it.
    let flushed = buffer.flush(&*store, Duration::from_secs(60));
    let written = within("a flush beside held rows", Duration::from_secs(30), flushed).await;
    let written = written.unwrap();

    assert_eq!(written, 2, "p-2 with s-2, and p-4");
    assert_eq!(buffer.len(), 2, "p-1 (its session held) and p-3 wait");
    let touched = |s: Option<Session>| s.and_then(|s| s.last_heartbeat_at);
    assert_eq!(touched(session(&store, "s-2").await), Some(at("19:00:05")));
    assert_eq!(touched(session(&store, "s-1").await), None);
    let p4 = phone(&store, "p-4", at("18:00:00")).await.expect("created");
    assert_eq!(p4.last_heartbeat_at, Some(at("19:00:05")));
    // A row the flush locked itself is written: its own lock does not make the row busy.
    let p2 = phone(&store, "p-2", at("18:00:00")).await.unwrap();
    assert_eq!(p2.last_heartbeat_at, Some(at("19:00:05")));
    let p3 = phone(&store, "p-3", at("18:00:00")).await.unwrap();
    assert_eq!(
        p3.last_heartbeat_at,
        Some(at("19:00:00")),
        "p-3 not written"
    );

    other.execute("COMMIT").await.unwrap();
    let written = buffer.flush(&*store, Duration::from_secs(60)).await;

    assert_eq!(written.unwrap(), 2);
    assert!(buffer.is_empty());
    assert_eq!(touched(session(&store, "s-1").await), Some(at("19:00:05")));
    let p3 = phone(&store, "p-3", at("18:00:00")).await.unwrap();
    assert_eq!(p3.last_heartbeat_at, Some(at("19:00:05")));
}

crate::postgres_test!(
    /// A rollout's step (sending a drained phone its update) against a pause of the rollout.
    /// The step locked the phone's row, then its `rollout_phones` row; the pause locks
    /// `rollout_phones` (undrain), then the phones. Here a heartbeat flush holds p-1 while
    /// both start: the step waited for p-1 holding nothing, the pause took p-1's rollout row
    /// and waited for p-1 too, and once the flush committed the step got p-1 and waited for
    /// the pause's row: PostgreSQL failed one as a deadlock. The step now locks the rollout
    /// row first, so the pause waits for the step in line.
    a_rollout_step_and_a_pause_never_deadlock => step_and_pause_wait_in_line
);

async fn step_and_pause_wait_in_line() {
    use cphub::domain::{PhoneStep, RolloutState};
    use cphub::store::StateChange;
    let store = open(Backend::Postgres).await;
    idle_phones(&store, &["p-1"], "18:59:00").await;
    let new = crate::rollouts::new_rollout(&["p-1"]);
    let id = store
        .create_rollout(&new)
        .await
        .unwrap()
        .expect("created")
        .id;
    let taken = store.take_rollout_batch(id, 1, 10, at("18:59:40"), at("18:59:40"));
    assert_eq!(taken.await.unwrap(), 1);
    let mut flush = PgConnection::connect(store.url()).await.unwrap();
    flush.execute("BEGIN").await.unwrap();
    flush
        .execute("SELECT 1 FROM phones WHERE phone_id = 'p-1' FOR UPDATE")
        .await
        .unwrap();

    let shared = store.shared();
    let stepped = tokio::spawn(async move {
        let phone = pid("p-1");
        let change = crate::rollouts::send_update(id, &phone);
        shared.step_rollout_phone(&change).await
    });
    wait_for_lock_waiters(&mut flush, 1).await;
    let shared = store.shared();
    let paused = tokio::spawn(async move {
        let change = StateChange {
            id,
            from: &[RolloutState::Running],
            to: RolloutState::Paused,
            by: Some("operator"),
            why: Some("looks wrong"),
            now: at("19:00:01"),
        };
        shared.set_rollout_state(&change).await
    });
    wait_for_lock_waiters(&mut flush, 2).await;
    flush.execute("COMMIT").await.unwrap();

    let stepped = within("the step", Duration::from_secs(10), stepped)
        .await
        .unwrap();
    let paused = within("the pause", Duration::from_secs(10), paused)
        .await
        .unwrap();
    assert!(stepped.is_ok(), "{stepped:?}");
    assert!(paused.is_ok(), "{paused:?}");
    assert!(
        stepped.unwrap(),
        "the step went first: the phone is updating"
    );
    let phones = store.rollout_phones(id).await.unwrap();
    assert_eq!(
        phones[0].state,
        PhoneStep::Updating,
        "a pause leaves an update sent"
    );
}
