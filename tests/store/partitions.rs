//! PostgreSQL's event log partitioned by day (migration 0014) on a book that existed
//! before it: the migration keeps every row usable (read, deduplicated against, billed),
//! new events land in their day's partition, and retention drops whole partitions after
//! moving out the events of the sessions it keeps. SQLite's log stays one table (0014 only
//! changes a trigger there), so this is PostgreSQL's alone.

use cphub::config::Settings;
use cphub::store::{EventOutcome, Retention};
use sqlx::{Connection, Executor, PgPool};

use crate::helpers::*;

crate::postgres_test!(the_partitioning_migration_keeps_an_existing_book_usable => an_existing_book_is_partitioned_and_stays_usable);
crate::postgres_test!(an_event_batch_and_a_sessions_read_open_only_its_partitions_0030 => a_batch_opens_only_its_sessions_partitions);

/// Two sessions as cphub wrote them before 0014: s-old-1 played and quit, s-old-2 playing.
const OLD_BOOK: &str = "\
    INSERT INTO sessions (session_id, phone_id, app_id, state, started_at, ended_at, \
      reported_run_time, duration_seconds, end_reason, created_at, updated_at) VALUES \
      ('s-old-1', 'p-1', 'com.example.game', 'ended', '2024-05-01 19:00:00+00', \
       '2024-05-01 19:10:00+00', 600, 600, 'quit', '2024-05-01 19:00:02+00', \
       '2024-05-01 19:10:02+00'), \
      ('s-old-2', 'p-2', 'com.example.game', 'playing', '2024-05-01 19:00:00+00', NULL, \
       NULL, NULL, NULL, '2024-05-01 19:00:02+00', '2024-05-01 19:00:02+00'); \
    INSERT INTO session_events (session_id, status, phone_id, app_id, event_time, run_time, \
      outcome, received_at) VALUES \
      ('s-old-1', 0, 'p-1', 'com.example.game', '2024-05-01 19:00:00+00', NULL, 'accepted', \
       '2024-05-01 19:00:02+00'), \
      ('s-old-1', 1, 'p-1', 'com.example.game', '2024-05-01 19:10:00+00', 600, 'accepted', \
       '2024-05-01 19:10:02+00'), \
      ('s-old-2', 0, 'p-2', 'com.example.game', '2024-05-01 19:00:00+00', NULL, 'accepted', \
       '2024-05-01 19:00:02+00')";

async fn an_existing_book_is_partitioned_and_stays_usable() {
    let db = TestDb::new(Backend::Postgres).await;
    migrate_before(Backend::Postgres, &db.url, 14).await;
    let pool = PgPool::connect(&db.url).await.expect("test database");
    pool.execute(OLD_BOOK).await.expect("the old book");
    let settings = Settings::with_overrides(&format!("[database]\nurl = \"{}\"\n", db.url))
        .expect("test settings");
    let store = cphub::store::connect(&settings.database)
        .await
        .expect("store opens");

    store.migrate().await.expect("0014 runs on the old book");

    // Every old row is read, and redeliveries are told from it.
    assert_eq!(event_log(&store, "s-old-1").await.len(), 2);
    let again = apply(&store, &[enter("s-old-1", "p-1", "19:00:00")]).await;
    assert_eq!(outcomes(&again), [EventOutcome::Duplicate]);
    let the_quit = quit("s-old-2", "p-2", "19:20:00", 1200);
    let quits = [the_quit.clone(), redelivered(&the_quit, "19:20:30")];
    let applied = apply(&store, &quits).await;
    assert_eq!(
        outcomes(&applied),
        [EventOutcome::Accepted, EventOutcome::Duplicate]
    );
    assert_eq!(event_log(&store, "s-old-2").await.len(), 2);
    assert_eq!(
        partition_of(&pool, "s-old-2", 1).await,
        "session_events_legacy"
    );

    // New days get their partitions; a session's events go to its creation's day.
    let day = at("2030-01-02T12:00:00Z");
    store.maintain_event_log(day, None).await.unwrap();
    apply(&store, &[enter("s-new", "p-3", "2030-01-02T12:00:00Z")]).await;
    apply(
        &store,
        &[quit("s-new", "p-3", "2030-01-03T00:30:00Z", 45000)],
    )
    .await;
    apply(&store, &[enter("s-kept", "p-4", "2030-01-02T13:00:00Z")]).await;
    assert_eq!(
        partition_of(&pool, "s-new", 1).await,
        "session_events_20300102"
    );

    // Retention: closed sessions go; the partitions past it are dropped whole, s-kept's
    // enter moved out first, still deduplicated against.
    let later = at("2030-03-01T00:00:00Z");
    let retention = Retention {
        before: later,
        batch: 100,
        webhooks_enabled: false,
    };
    let removed = store.remove_old_sessions(&retention).await.unwrap();
    assert_eq!(removed, 3, "s-old-1, s-old-2, s-new");
    let dropped = store.maintain_event_log(later, Some(later)).await.unwrap();

    assert!(
        dropped >= 2,
        "the legacy and the 2030-01-02 partitions: {dropped}"
    );
    assert_eq!(
        rows(&pool, "session_events").await,
        1,
        "s-kept's enter alone"
    );
    assert_eq!(
        partition_of(&pool, "s-kept", 0).await,
        "session_events_default"
    );
    let again = apply(&store, &[enter("s-kept", "p-4", "2030-01-02T13:00:00Z")]).await;
    assert_eq!(outcomes(&again), [EventOutcome::Duplicate]);
    assert_eq!(event_log(&store, "s-kept").await.len(), 1);
    assert!(session(&store, "s-new").await.is_none());
}

/// How long a read may wait before it is taken to wait for the locked partition.
const NOT_WAITING: std::time::Duration = std::time::Duration::from_secs(10);

/// An event batch reads its sessions' accepted events from their days' partitions alone
/// (migration 0030), and an operator's read of a session its own day's. With retention off
/// a partition is added every day and none dropped, and a read that opened every partition
/// cost each round more as the book aged. Seen through PostgreSQL's locks: a day partition
/// another transaction holds exclusively stops any statement that opens it, so reads of
/// other days' sessions must not wait for it.
async fn a_batch_opens_only_its_sessions_partitions() {
    let db = TestDb::new(Backend::Postgres).await;
    let url = db.url.clone();
    let store = open_on(db).await;
    store
        .maintain_event_log(at("2030-01-02T12:00:00Z"), None)
        .await
        .unwrap();
    let first = enter("s-a", "p-1", "2030-01-02T12:00:00Z");
    apply(&store, std::slice::from_ref(&first)).await;
    assert_eq!(
        partition_of(&PgPool::connect(&url).await.unwrap(), "s-a", 0).await,
        "session_events_20300102"
    );

    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    holder
        .execute("BEGIN; LOCK TABLE session_events_20300105 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let batch = [
        redelivered(&first, "2030-01-02T12:00:30Z"),
        quit("s-a", "p-1", "2030-01-02T12:20:00Z", 1200),
        enter("s-b", "p-2", "2030-01-02T12:21:00Z"),
    ];
    let applied = tokio::time::timeout(NOT_WAITING, apply(&store, &batch))
        .await
        .expect("the batch opened a partition none of its sessions is in");
    assert_eq!(
        outcomes(&applied),
        [
            EventOutcome::Duplicate,
            EventOutcome::Accepted,
            EventOutcome::Accepted
        ]
    );
    // And so must an operator's read of a session's events (`GET /api/v1/sessions/{id}`).
    let log = tokio::time::timeout(NOT_WAITING, event_log(&store, "s-a"))
        .await
        .expect("the session's read opened a partition it is not in");
    assert_eq!(log.len(), 2, "its enter and its quit: {log:?}");
    holder.execute("ROLLBACK").await.unwrap();
}

/// The partition holding a session's accepted event of `status`.
async fn partition_of(pool: &PgPool, session: &str, status: i16) -> String {
    sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM session_events \
         WHERE session_id = $1 AND status = $2 AND outcome = 'accepted'",
    )
    .bind(session)
    .bind(status)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn rows(pool: &PgPool, table: &str) -> i64 {
    let sql = format!("SELECT count(*) FROM {table}");
    let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
    query.fetch_one(pool).await.unwrap()
}
