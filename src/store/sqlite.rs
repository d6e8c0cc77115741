//! SQLite backend: one file, zero set-up. WAL mode; all writes go through a single
//! connection with `BEGIN IMMEDIATE` (SQLite has one writer anyway, and taking the write lock
//! up front avoids busy errors in the middle of a transaction); reads use a separate pool.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};

use super::backend;
use super::periodic::Periodic;
use super::event_batch::{
    self, BatchRead, BatchRows, BatchTx, BatchWrite, EventRow, PhoneChange, SessionUpdate, Written,
};
use super::log_sync::LogSync;
use super::{Applied, ApplyRules, Backend, Durable, Lease, ReceivedEvent, Role, StoreError, usage};
use crate::config::{DatabaseSettings, SqliteSynchronous};
use crate::domain::{Heartbeat, UtcTime};
use crate::usage::{UsageQuery, UsageRow};

/// The migrations compiled into the binary, for `migrate` and for readiness.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// With `database.sqlite_synchronous = full`, the sync of the log that makes each write
    /// durable beside the writer (`log_sync`); none with `normal`, whose commits are
    /// durable as soon as SQLite syncs the log at a checkpoint.
    log: Option<LogSync>,
    _checkpoints: Checkpointer,
}

/// With a [`Checkpointer`], the writer's own automatic checkpoint starts only past this many
/// log pages (about 40 MB): a backstop for when the checkpointer falls behind, not the way
/// the log is emptied.
const WRITER_CHECKPOINT_PAGES: u32 = 10_000;

/// Copies the write-ahead log into the database file from a connection of its own, so the
/// one writer connection never does. SQLite's automatic checkpoint runs in the connection
/// whose commit takes the log past 1,000 pages, and here that is the writer that every
/// event, sign check and mint waits for: at 40,000 phones it checkpointed four times a
/// second, and the fsync of the database file that ends each took 4 ms at the median and up
/// to 55 ms (strace; docs/benchmarks.md, "Checkpoints off the writer"). A `PASSIVE`
/// checkpoint takes no lock the writer needs: the writer goes on appending to the log while
/// it runs.
/// Every `database.sqlite_checkpoint_interval_ms`; with 0 there is none, and the writer
/// checkpoints every 1,000 pages as SQLite does by default.
struct Checkpointer {
    /// Held for its `Drop`, which stops the checkpoints with the store.
    _chore: Option<Periodic>,
}

impl Checkpointer {
    async fn start(
        options: &SqliteConnectOptions,
        settings: &DatabaseSettings,
    ) -> Result<Self, StoreError> {
        if settings.sqlite_checkpoint_interval_ms == 0 {
            return Ok(Checkpointer { _chore: None });
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options.clone())
            .await?;
        let every = Duration::from_millis(settings.sqlite_checkpoint_interval_ms);
        Ok(Checkpointer::spawn(pool, every))
    }

    /// The writer's `wal_autocheckpoint`.
    fn writer_pages(settings: &DatabaseSettings) -> u32 {
        match settings.sqlite_checkpoint_interval_ms {
            0 => 1000,
            _ => WRITER_CHECKPOINT_PAGES,
        }
    }

    /// The first at once, then every `every`.
    fn spawn(pool: SqlitePool, every: Duration) -> Self {
        let failed = "checkpointing the SQLite log failed; will retry";
        let chore = Periodic::start(every, Duration::ZERO, failed, move || {
            let pool = pool.clone();
            async move {
                let checkpoint = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool);
                checkpoint.await.map(drop)
            }
        });
        Checkpointer {
            _chore: Some(chore),
        }
    }
}

impl SqliteStore {
    /// The writer connection commits with `synchronous = NORMAL` whatever the setting: the
    /// log is synced beside it (`log_sync`) when the setting is `full`.
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5));
        let log = match settings.sqlite_synchronous {
            SqliteSynchronous::Full => Some(
                LogSync::of_database(options.get_filename())
                    .map_err(|e| StoreError::LogNotSynced(format!("its thread did not start: {e}")))?,
            ),
            SqliteSynchronous::Normal => None,
        };
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(
                (options.clone())
                    .pragma(
                        "wal_autocheckpoint",
                        Checkpointer::writer_pages(settings).to_string(),
                    )
                    // The statement journals of a round's multi-row statements stay in
                    // memory: in a file they were a temporary file created, written and
                    // deleted each round (strace), a quarter of the bytes a round wrote.
                    .pragma("temp_store", "memory"),
            )
            .await?;
        let checkpoints = Checkpointer::start(&options, settings).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            log,
            _checkpoints: checkpoints,
        })
    }

    /// Refuses once a sync of the log has failed (`log_sync`).
    fn log_trusted(&self) -> Result<(), StoreError> {
        match self.log.as_ref().and_then(LogSync::failure) {
            Some(failed) => Err(StoreError::LogNotSynced(failed)),
            None => Ok(()),
        }
    }

    /// The ticket of a commit that just returned.
    fn committed(&self) -> Durable {
        match &self.log {
            Some(log) => log.committed(),
            None => Durable::now(),
        }
    }
}

#[async_trait]
impl Backend for SqliteStore {
    type Tx = sqlx::Transaction<'static, Sqlite>;
    type Reader = SqlitePool;

    /// `BEGIN IMMEDIATE` takes the write lock up front, on the one writer connection.
    /// Refused once a sync of the log has failed: nothing written after it could be made
    /// durable, so nothing is written (a mint, a used ticket) that its requester is then
    /// told failed.
    async fn begin_write(&self) -> Result<Self::Tx, StoreError> {
        self.log_trusted()?;
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn commit(&self, tx: Self::Tx) -> Result<Durable, StoreError> {
        tx.commit().await?;
        Ok(self.committed())
    }

    fn reader(&self) -> SqlitePool {
        self.reader.clone()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.writer).await?;
        self.committed().wait().await
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        Ok(bind_usage(sqlx::query_as(usage::SQLITE), query)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn explain_usage(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError> {
        let steps: Vec<(i64, i64, i64, String)> =
            bind_usage(sqlx::query_as(usage::SQLITE_EXPLAIN), query)
                .fetch_all(&self.reader)
                .await?;
        Ok(steps.into_iter().map(|(.., detail)| detail).collect())
    }

    async fn usage_rollups(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        Ok(bind_rollups(sqlx::query_as(usage::SQLITE_ROLLUPS), query)
            .fetch_all(&self.reader)
            .await?)
    }

    async fn explain_usage_rollups(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError> {
        let steps: Vec<(i64, i64, i64, String)> =
            bind_rollups(sqlx::query_as(usage::SQLITE_ROLLUPS_EXPLAIN), query)
                .fetch_all(&self.reader)
                .await?;
        Ok(steps.into_iter().map(|(.., detail)| detail).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.log_trusted()?;
        let applied: Option<i64> = sqlx::query_scalar(backend::APPLIED_MIGRATION)
            .fetch_one(&self.reader)
            .await?;
        backend::schema_is_current(&MIGRATOR, applied)
    }

    async fn apply_events(
        &self,
        events: &[ReceivedEvent],
        rules: ApplyRules,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.begin_write().await?;
        let applied = event_batch::apply(&mut tx, &events.iter().collect::<Vec<_>>(), rules).await?;
        self.commit(tx).await?.wait().await?;
        Ok(applied)
    }

    /// Two statements for the whole batch, the phones as one JSON array (`json_each`), as
    /// PostgreSQL does with UNNEST. One statement per phone made a flush of 70k phones take
    /// longer than the flush interval (each statement is a round trip to sqlx's SQLite
    /// thread), holding the only writer while events waited.
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<Vec<usize>, StoreError> {
        // Tuples serialise as JSON arrays straight into the string: no JSON tree in memory.
        let rows: Vec<_> = heartbeats
            .iter()
            .map(|hb| {
                (
                    hb.phone_id.as_str(),
                    hb.time.epoch_millis(),
                    hb.received_at.epoch_millis(),
                    hb.session_id.as_ref().map(|s| s.as_str()),
                    hb.app_id.as_ref().map(|a| a.as_str()),
                )
            })
            .collect();
        let batch = json(&rows)?;
        let mut tx = self.begin_write().await?;
        sqlx::query(UPSERT_PHONE_HEARTBEATS)
            .bind(&batch)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE sessions SET last_heartbeat_at = hb.t \
             FROM (SELECT value ->> 3 AS s, value ->> 1 AS t FROM json_each($1)) AS hb \
             WHERE sessions.session_id = hb.s AND sessions.ended_at IS NULL \
               AND (sessions.last_heartbeat_at IS NULL OR sessions.last_heartbeat_at < hb.t)",
        )
        .bind(&batch)
        .execute(&mut *tx)
        .await?;
        // Not waited for: heartbeats are soft state, which every phone sends again within
        // an interval. The commit is atomic and in order, and the next durable write's
        // sync covers it.
        tx.commit().await?;
        Ok(Vec::new())
    }

    /// SQLite serves one process: it always leads.
    /// One table holds the log: retention deletes its rows.
    async fn maintain_event_log(
        &self,
        _now: UtcTime,
        _drop_before: Option<UtcTime>,
    ) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// One process serves a SQLite book: it leads every role.
    async fn try_lead(&self, _role: Role) -> Result<Option<Box<dyn Lease>>, StoreError> {
        Ok(Some(Box::new(SingleProcess)))
    }
}

type UsageStatement<'q, O> = sqlx::query::QueryAs<'q, Sqlite, O, sqlx::sqlite::SqliteArguments>;

/// The usage query's parameters: the pieces as JSON `[day, start_ms, end_ms]`, the
/// grouping flags, the rounding offset.
fn bind_usage<'q, O>(
    statement: UsageStatement<'q, O>,
    query: &UsageQuery,
) -> UsageStatement<'q, O> {
    let [app, phone, user] = usage::grouped(query);
    statement
        .bind(pieces_json(query))
        .bind(app)
        .bind(phone)
        .bind(user)
        .bind(query.rounding.offset_secs())
}

/// The rollups' query parameters: the pieces, grouping by app, the rounding offset.
fn bind_rollups<'q, O>(
    statement: UsageStatement<'q, O>,
    query: &UsageQuery,
) -> UsageStatement<'q, O> {
    let [app, ..] = usage::grouped(query);
    statement
        .bind(pieces_json(query))
        .bind(app)
        .bind(query.rounding.offset_secs())
}

/// A query's pieces as a JSON array of `[day, start_ms, end_ms]`.
fn pieces_json(query: &UsageQuery) -> String {
    let pieces: Vec<_> = usage::day_labels(query)
        .into_iter()
        .zip(&query.pieces)
        .map(|(day, p)| json!([day, p.start.epoch_millis(), p.end.epoch_millis()]))
        .collect();
    serde_json::Value::Array(pieces).to_string()
}

/// `$1` is a JSON array of `[phone_id, time_ms, received_ms, session_id, app_id]`, one per
/// phone. (`WHERE true` tells SQLite's parser the ON CONFLICT belongs to the INSERT.)
const UPSERT_PHONE_HEARTBEATS: &str = concat!(
    "INSERT INTO phones \
       (phone_id, last_heartbeat_at, last_seen_at, heartbeat_session_id, heartbeat_app_id, \
        created_at, updated_at) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
       value ->> 2, value ->> 2 FROM json_each($1) WHERE true",
    crate::store::book::heartbeat_upsert!()
);

/// A list as the one JSON parameter a statement reads with `json_each`.
fn json(rows: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(rows).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The batch's lists go in as JSON arrays (`json_each`), rows as arrays of their columns,
/// times as epoch milliseconds; `WHERE true` as in [`UPSERT_PHONE_HEARTBEATS`]. Nothing is
/// locked: SQLite has one writer, and the transaction took the write lock up front. Each
/// of the read and the write is several statements in one query: sqlx-sqlite splits the
/// text at `;` and runs the statements one after another in one call to its worker
/// thread, binding the numbered parameters `$N` of each from the same arguments
/// (`SqliteArguments::bind` in sqlx-sqlite 0.9), so the batch costs two round trips.
#[async_trait]
impl BatchTx for sqlx::Transaction<'static, Sqlite> {
    fn stored(time: UtcTime) -> UtcTime {
        UtcTime::from_epoch_millis(time.epoch_millis()).unwrap_or(time)
    }

    async fn read(&mut self, read: &BatchRead<'_>) -> Result<BatchRows, StoreError> {
        let firsts: Vec<_> = read
            .firsts
            .iter()
            .map(|r| {
                let e = &r.event;
                let at = r.received_at.epoch_millis();
                (
                    e.session_id.as_str(),
                    e.phone_id.as_str(),
                    e.app_id.as_str(),
                    at,
                )
            })
            .collect();
        let rows = sqlx::query(BATCH_READ)
            .bind(json(&firsts)?)
            .bind(json(&read.sessions)?)
            .bind(json(&read.phones)?)
            .fetch_all(&mut **self)
            .await?;
        event_batch::sort_rows(&rows)
    }

    async fn write(&mut self, write: &BatchWrite<'_>) -> Result<Written, StoreError> {
        let inserted = sqlx::query(BATCH_WRITE)
            .bind(json(&event_rows(write.events))?)
            .bind(json(&session_rows(&write.sessions))?)
            .bind(json(&phone_rows(&write.phones))?)
            .fetch_all(&mut **self)
            .await?;
        // The one writer: no other can have given a phone a session meanwhile.
        let phones = write.phones.len() as u64;
        Ok(Written {
            events: inserted.len() as u64,
            phones,
        })
    }
}

type Millis = Option<i64>;

fn millis(time: Option<UtcTime>) -> Millis {
    time.map(UtcTime::epoch_millis)
}

type EventJson<'a> = (
    &'a str,
    i16,
    &'a str,
    &'a str,
    i64,
    Option<i64>,
    Option<&'a str>,
    &'a str,
    i64,
    i64,
);

fn event_rows<'a>(rows: &'a [EventRow<'_>]) -> Vec<EventJson<'a>> {
    rows.iter()
        .map(|row| {
            let (e, at) = (&row.received.event, row.received.received_at);
            (
                e.session_id.as_str(),
                e.kind.status(),
                e.phone_id.as_str(),
                e.app_id.as_str(),
                e.time.epoch_millis(),
                e.run_time,
                e.error_msg.as_ref().map(|m| m.as_str()),
                row.outcome,
                at.epoch_millis(),
                i64::from(e.error_msg_truncated()),
            )
        })
        .collect()
}

type SessionJson<'a> = (
    &'a str,
    &'a str,
    Millis,
    Millis,
    Option<i64>,
    Option<i64>,
    i64,
    Option<&'a str>,
    Option<&'a str>,
    i64,
);

fn session_rows<'a>(sessions: &'a [SessionUpdate<'_>]) -> Vec<SessionJson<'a>> {
    sessions
        .iter()
        .map(|u| {
            let s = u.session;
            (
                s.session_id.as_str(),
                s.state.as_str(),
                millis(s.started_at),
                millis(s.ended_at),
                s.reported_run_time,
                s.duration_seconds,
                i64::from(s.run_time_mismatch),
                s.end_reason.map(|r| r.as_str()),
                s.error_msg.as_deref(),
                u.updated_at.epoch_millis(),
            )
        })
        .collect()
}

type PhoneJson<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Millis,
    Option<&'a str>,
    Millis,
    i64,
    i64,
    Option<&'a str>,
);

fn phone_rows(phones: &[PhoneChange]) -> Vec<PhoneJson<'_>> {
    phones
        .iter()
        .map(|PhoneChange { links: p, .. }| {
            (
                p.phone_id.as_str(),
                p.current_session_id.as_deref(),
                p.current_app_id.as_deref(),
                millis(p.current_session_started_at),
                p.allocated_session_id.as_deref(),
                millis(p.allocated_until),
                p.created_at.epoch_millis(),
                p.updated_at.epoch_millis(),
                p.ended_session_id.as_deref(),
            )
        })
        .collect()
}

/// `$1`: the first event of each session to create, `[session, phone, app, received_ms]`;
/// `$2`: the batch's session ids; `$3`: the phone ids its events name.
const BATCH_READ: &str = concat!(
    "INSERT INTO sessions (session_id, phone_id, app_id, state, created_at, updated_at) \
     SELECT value ->> 0, value ->> 1, value ->> 2, 'playing', value ->> 3, value ->> 3 \
     FROM json_each($1) WHERE true ON CONFLICT (session_id) DO NOTHING; \
     WITH batch_sessions AS (SELECT ",
    crate::store::book::session_columns!(),
    " FROM sessions WHERE session_id IN (SELECT value FROM json_each($2))), \
     batch_events AS (SELECT session_id, status, phone_id, app_id, event_time, run_time \
       FROM session_events WHERE outcome = 'accepted' \
         AND session_id IN (SELECT value FROM json_each($2))), \
     batch_phones AS (SELECT ",
    event_batch::phone_link_columns!(),
    " FROM phones WHERE phone_id IN \
       (SELECT value FROM json_each($3) UNION SELECT phone_id FROM batch_sessions)) ",
    event_batch::batch_read_rows!()
);

/// `$1`: the event rows in arrival order (their ids follow it; `RETURNING` counts those
/// inserted); `$2`: the sessions to save; `$3`: the phones to create or save.
const BATCH_WRITE: &str = concat!(
    "\
    INSERT INTO session_events (session_id, status, phone_id, app_id, event_time, run_time, \
      error_msg, outcome, received_at, truncated) \
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
      value ->> 6, value ->> 7, value ->> 8, value ->> 9 \
    FROM json_each($1) WHERE true ORDER BY key \
    ON CONFLICT (session_id, status) WHERE outcome = 'accepted' DO NOTHING RETURNING 1; \
    UPDATE sessions SET state = u.state, started_at = u.started_at, ended_at = u.ended_at, \
      reported_run_time = u.reported_run_time, duration_seconds = u.duration_seconds, \
      run_time_mismatch = u.run_time_mismatch, end_reason = u.end_reason, \
      error_msg = u.error_msg, updated_at = u.updated_at \
    FROM (SELECT value ->> 0 AS session_id, value ->> 1 AS state, value ->> 2 AS started_at, \
        value ->> 3 AS ended_at, value ->> 4 AS reported_run_time, \
        value ->> 5 AS duration_seconds, value ->> 6 AS run_time_mismatch, \
        value ->> 7 AS end_reason, value ->> 8 AS error_msg, value ->> 9 AS updated_at \
      FROM json_each($2)) AS u \
    WHERE sessions.session_id = u.session_id; \
    INSERT INTO phones (phone_id, current_session_id, current_app_id, \
      current_session_started_at, allocated_session_id, allocated_until, created_at, \
      updated_at, heartbeat_ended_session_id) \
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
      value ->> 6, value ->> 7, value ->> 8 FROM json_each($3) WHERE true \
    ON CONFLICT (phone_id) DO UPDATE SET current_session_id = excluded.current_session_id, \
      current_app_id = excluded.current_app_id, \
      current_session_started_at = excluded.current_session_started_at, \
      allocated_session_id = excluded.allocated_session_id, \
      allocated_until = excluded.allocated_until, updated_at = excluded.updated_at, ",
    event_batch::ended_session_clear!("excluded.heartbeat_ended_session_id")
);

struct SingleProcess;

#[async_trait]
impl Lease for SingleProcess {
    async fn held(&mut self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseUrl;
    use crate::domain::PhoneId;

    async fn store(dir: &tempfile::TempDir) -> SqliteStore {
        let url = format!("sqlite://{}", dir.path().join("book.db").display());
        let settings = DatabaseSettings {
            url: DatabaseUrl::Sqlite(url.clone()),
            max_connections: 2,
            acquire_timeout_ms: 3_000,
            write_timeout_ms: 3_000,
            write_queue_timeout_ms: 3_000,
            sqlite_synchronous: SqliteSynchronous::Full,
            sqlite_checkpoint_interval_ms: 100,
            postgres_analyze_interval_ms: 0,
            migrate_on_start: true,
            writers: 1,
            writer_room: 64,
        };
        let store = SqliteStore::connect(&url, &settings).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    fn heartbeat(phone: &str, now: UtcTime) -> Heartbeat {
        Heartbeat {
            phone_id: PhoneId::parse("phone_id", phone.to_owned()).unwrap(),
            time: now,
            session_id: None,
            app_id: None,
            received_at: now,
        }
    }

    /// The bundled SQLite is compiled as `.cargo/config.toml` says: without the memory
    /// statistics whose global mutex every allocation took (docs/benchmarks.md, 2026-12-06).
    #[tokio::test]
    async fn sqlite_is_compiled_without_memory_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let sql = "SELECT compile_options FROM pragma_compile_options \
                   WHERE compile_options LIKE 'DEFAULT_MEMSTATUS=%'";
        let found: Option<String> = sqlx::query_scalar(sql)
            .fetch_optional(&store.reader)
            .await
            .unwrap();
        assert_eq!(found.as_deref(), Some("DEFAULT_MEMSTATUS=0"));
    }

    /// The fan-out's reads of the outbox go through its partial index, not a scan of every
    /// row already fanned out (the index's `fanned_out = 0` is matched as written).
    #[tokio::test]
    async fn the_outbox_is_read_through_its_partial_index() {
        use crate::store::outbox::{oldest_unfanned_sql, to_fan_out_sql};
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let limit = to_fan_out_sql::<SqlitePool>().replace("$1", "500");
        for sql in [limit.as_str(), oldest_unfanned_sql::<SqlitePool>()] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&store.reader)
                    .await
                    .unwrap();
            let plan: Vec<String> = plan.into_iter().map(|(.., detail)| detail).collect();
            assert_eq!(
                plan,
                ["SCAN webhook_events USING INDEX webhook_events_to_fan_out"],
                "{sql}"
            );
        }
    }

    /// 0 off, 1 normal, 2 full.
    async fn synchronous(conn: &mut sqlx::SqliteConnection) -> i64 {
        let sql = "PRAGMA synchronous";
        sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
    }

    /// The writer commits with `synchronous = NORMAL`, its statement journals in memory; a
    /// durable write returns after a sync of the log that began after its commit, a
    /// heartbeat flush without one.
    #[tokio::test]
    async fn a_durable_write_waits_for_a_sync_of_the_log_and_a_heartbeat_flush_does_not() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let dir = tempfile::tempdir().unwrap();
        let mut store = store(&dir).await;
        let mut writer = store.writer.acquire().await.unwrap();
        assert_eq!(synchronous(&mut writer).await, 1);
        let temp_store: i64 = sqlx::query_scalar("PRAGMA temp_store")
            .fetch_one(&mut *writer)
            .await
            .unwrap();
        assert_eq!(temp_store, 2, "memory");
        drop(writer);
        let syncs = Arc::new(AtomicUsize::new(0));
        let (s, wal) = (Arc::clone(&syncs), dir.path().join("book.db-wal"));
        assert_eq!(store.log.as_ref().unwrap().file(), Some(wal.as_path()));
        assert!(wal.exists());
        store.log = Some(LogSync::with(move || {
            s.fetch_add(1, Ordering::SeqCst);
            std::fs::File::open(&wal)?.sync_data()
        }));

        let now = UtcTime::now();
        let beat = heartbeat("p-1", now);
        store.record_heartbeats(&[beat]).await.unwrap();
        assert_eq!(syncs.load(Ordering::SeqCst), 0, "a flush waits for no sync");

        let queue_id = crate::domain::QueueId::parse("queue_id", "0".repeat(32)).unwrap();
        let left = crate::store::Store::leave_queue(&store, &queue_id, "", now);
        assert!(!left.await.unwrap(), "no such entry; the transaction commits all the same");
        assert_eq!(syncs.load(Ordering::SeqCst), 1, "the write waited for one sync");
    }

    /// After a failed sync of the log nothing more is written: a durable write fails, and
    /// so do a heartbeat flush and readiness, without touching the book.
    #[tokio::test]
    async fn after_a_failed_sync_nothing_more_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store(&dir).await;
        store.log = Some(LogSync::with(|| Err(std::io::Error::other("EIO"))));
        let now = UtcTime::now();
        let queue_id = crate::domain::QueueId::parse("queue_id", "0".repeat(32)).unwrap();
        let left = crate::store::Store::leave_queue(&store, &queue_id, "", now).await;
        assert!(matches!(left, Err(StoreError::LogNotSynced(_))), "{left:?}");

        let beat = heartbeat("p-1", now);
        let flushed = store.record_heartbeats(&[beat]).await;
        assert!(matches!(flushed, Err(StoreError::LogNotSynced(_))), "{flushed:?}");
        let phones: i64 = sqlx::query_scalar("SELECT count(*) FROM phones")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(phones, 0, "the flush wrote nothing");
        assert!(crate::store::Store::ping(&store).await.is_err());
    }

    /// The writer connection leaves the log to the background checkpointer (its own
    /// automatic checkpoint waits for `WRITER_CHECKPOINT_PAGES`), and the log still reaches
    /// the database file: the file grows by what the writer committed, which here is far
    /// less than the writer's threshold, so only the background checkpoint copied it.
    #[tokio::test]
    async fn the_log_is_checkpointed_in_the_background_not_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir).await;
        let mut writer = store.writer.acquire().await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
            .fetch_one(&mut *writer)
            .await
            .unwrap();
        assert_eq!(pages, i64::from(WRITER_CHECKPOINT_PAGES));
        drop(writer);
        let file = dir.path().join("book.db");
        let before = std::fs::metadata(&file).unwrap().len();

        let now = UtcTime::now();
        let beats: Vec<Heartbeat> = (0..2_000)
            .map(|n| heartbeat(&format!("p-{n:05}"), now))
            .collect();
        store.record_heartbeats(&beats).await.unwrap();

        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::metadata(&file).unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "the log was never checkpointed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
