//! SQLite backend: one file, zero set-up. WAL mode; all writes go through a single
//! connection with `BEGIN IMMEDIATE` (SQLite has one writer anyway, and taking the write lock
//! up front avoids busy errors in the middle of a transaction); reads use a separate pool.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};

use super::codec::SessionRow;
use super::event_batch::{self, AcceptedEvent, BatchTx, EventRow, PhoneLinks, SessionUpdate};
use super::{Applied, ApplyRules, Backend, Lease, ReceivedEvent, StoreError, usage};
use crate::config::{DatabaseSettings, SqliteSynchronous};
use crate::domain::{Heartbeat, Session, UtcTime};
use crate::usage::{UsageQuery, UsageRow};

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str, settings: &DatabaseSettings) -> Result<Self, StoreError> {
        let synchronous = match settings.sqlite_synchronous {
            SqliteSynchronous::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
            SqliteSynchronous::Full => sqlx::sqlite::SqliteSynchronous::Full,
        };
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(synchronous)
            .busy_timeout(Duration::from_secs(5));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options.clone())
            .await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }
}

#[async_trait]
impl Backend for SqliteStore {
    type Tx = sqlx::Transaction<'static, Sqlite>;
    type Reader = SqlitePool;

    /// `BEGIN IMMEDIATE` takes the write lock up front, on the one writer connection.
    async fn begin_write(&self) -> Result<Self::Tx, StoreError> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn commit(tx: Self::Tx) -> Result<(), StoreError> {
        Ok(tx.commit().await?)
    }

    fn reader(&self) -> SqlitePool {
        self.reader.clone()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
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
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn apply_events(
        &self,
        events: &[ReceivedEvent],
        rules: ApplyRules,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.begin_write().await?;
        let applied = event_batch::apply(&mut tx, events, rules).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Two statements for the whole batch, the phones as one JSON array (`json_each`), as
    /// PostgreSQL does with UNNEST. One statement per phone made a flush of 70k phones take
    /// longer than the flush interval (each statement is a round trip to sqlx's SQLite
    /// thread), holding the only writer while events waited.
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<(), StoreError> {
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
             WHERE sessions.session_id = hb.s \
               AND (sessions.last_heartbeat_at IS NULL OR sessions.last_heartbeat_at < hb.t)",
        )
        .bind(&batch)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// SQLite serves one process: it always leads.
    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>, StoreError> {
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
/// locked: SQLite has one writer, and the transaction took the write lock up front.
#[async_trait]
impl BatchTx for sqlx::Transaction<'static, Sqlite> {
    fn stored(time: UtcTime) -> UtcTime {
        UtcTime::from_epoch_millis(time.epoch_millis()).unwrap_or(time)
    }

    async fn create_sessions(&mut self, firsts: &[&ReceivedEvent]) -> Result<(), StoreError> {
        let rows: Vec<_> = firsts
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
        sqlx::query(
            "INSERT INTO sessions (session_id, phone_id, app_id, state, created_at, updated_at) \
             SELECT value ->> 0, value ->> 1, value ->> 2, 'playing', value ->> 3, value ->> 3 \
             FROM json_each($1) WHERE true ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(json(&rows)?)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn lock_sessions(&mut self, ids: &[&str]) -> Result<Vec<Session>, StoreError> {
        let rows: Vec<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            crate::store::book::session_columns!(),
            " FROM sessions WHERE session_id IN (SELECT value FROM json_each($1))"
        ))
        .bind(json(&ids)?)
        .fetch_all(&mut **self)
        .await?;
        rows.into_iter().map(Session::try_from).collect()
    }

    async fn accepted_events(&mut self, ids: &[&str]) -> Result<Vec<AcceptedEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT session_id, status, phone_id, app_id, event_time, run_time \
             FROM session_events WHERE outcome = 'accepted' \
               AND session_id IN (SELECT value FROM json_each($1))",
        )
        .bind(json(&ids)?)
        .fetch_all(&mut **self)
        .await?)
    }

    async fn insert_events(&mut self, rows: &[EventRow<'_>]) -> Result<u64, StoreError> {
        let rows: Vec<_> = rows
            .iter()
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
            .collect();
        Ok(sqlx::query(
            "INSERT INTO session_events (session_id, status, phone_id, app_id, event_time, \
               run_time, error_msg, outcome, received_at, truncated) \
             SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
               value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9 \
             FROM json_each($1) WHERE true ORDER BY key \
             ON CONFLICT (session_id, status) WHERE outcome = 'accepted' DO NOTHING",
        )
        .bind(json(&rows)?)
        .execute(&mut **self)
        .await?
        .rows_affected())
    }

    async fn create_phones(&mut self, firsts: &[(&str, UtcTime)]) -> Result<(), StoreError> {
        let rows: Vec<_> = firsts
            .iter()
            .map(|(phone, at)| (phone, at.epoch_millis()))
            .collect();
        sqlx::query(
            "INSERT INTO phones (phone_id, created_at, updated_at) \
             SELECT value ->> 0, value ->> 1, value ->> 1 FROM json_each($1) WHERE true \
             ON CONFLICT (phone_id) DO NOTHING",
        )
        .bind(json(&rows)?)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn lock_phones(&mut self, ids: &[&str]) -> Result<Vec<PhoneLinks>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT phone_id, current_session_id, current_app_id, current_session_started_at, \
               allocated_session_id, allocated_until, updated_at \
             FROM phones WHERE phone_id IN (SELECT value FROM json_each($1))",
        )
        .bind(json(&ids)?)
        .fetch_all(&mut **self)
        .await?)
    }

    async fn save_sessions(&mut self, sessions: &[SessionUpdate<'_>]) -> Result<(), StoreError> {
        let millis = |t: Option<UtcTime>| t.map(UtcTime::epoch_millis);
        let rows: Vec<_> = sessions
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
            .collect();
        sqlx::query(
            "UPDATE sessions SET state = u.state, started_at = u.started_at, \
               ended_at = u.ended_at, reported_run_time = u.reported_run_time, \
               duration_seconds = u.duration_seconds, run_time_mismatch = u.run_time_mismatch, \
               end_reason = u.end_reason, error_msg = u.error_msg, updated_at = u.updated_at \
             FROM (SELECT value ->> 0 AS session_id, value ->> 1 AS state, \
                 value ->> 2 AS started_at, value ->> 3 AS ended_at, \
                 value ->> 4 AS reported_run_time, value ->> 5 AS duration_seconds, \
                 value ->> 6 AS run_time_mismatch, value ->> 7 AS end_reason, \
                 value ->> 8 AS error_msg, value ->> 9 AS updated_at \
               FROM json_each($1)) AS u \
             WHERE sessions.session_id = u.session_id",
        )
        .bind(json(&rows)?)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn save_phones(&mut self, phones: &[&PhoneLinks]) -> Result<(), StoreError> {
        let millis = |t: Option<UtcTime>| t.map(UtcTime::epoch_millis);
        let rows: Vec<_> = phones
            .iter()
            .map(|p| {
                (
                    p.phone_id.as_str(),
                    p.current_session_id.as_deref(),
                    p.current_app_id.as_deref(),
                    millis(p.current_session_started_at),
                    p.allocated_session_id.as_deref(),
                    millis(p.allocated_until),
                    p.updated_at.epoch_millis(),
                )
            })
            .collect();
        sqlx::query(
            "UPDATE phones SET current_session_id = u.current_session_id, \
               current_app_id = u.current_app_id, \
               current_session_started_at = u.current_session_started_at, \
               allocated_session_id = u.allocated_session_id, \
               allocated_until = u.allocated_until, updated_at = u.updated_at \
             FROM (SELECT value ->> 0 AS phone_id, value ->> 1 AS current_session_id, \
                 value ->> 2 AS current_app_id, value ->> 3 AS current_session_started_at, \
                 value ->> 4 AS allocated_session_id, value ->> 5 AS allocated_until, \
                 value ->> 6 AS updated_at \
               FROM json_each($1)) AS u \
             WHERE phones.phone_id = u.phone_id",
        )
        .bind(json(&rows)?)
        .execute(&mut **self)
        .await?;
        Ok(())
    }
}

struct SingleProcess;

#[async_trait]
impl Lease for SingleProcess {
    async fn held(&mut self) -> bool {
        true
    }
}
