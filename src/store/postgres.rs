//! PostgreSQL backend: for production and for several cphub replicas on one database.
//! Sessions and phones are row-locked (`FOR UPDATE`) while a batch of events is applied, so
//! replicas applying the enter and quit of one session at once serialise instead of
//! overwriting each other.

use std::str::FromStr;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::codec::SessionRow;
use super::event_batch::{self, AcceptedEvent, BatchTx, EventRow, PhoneLinks, SessionUpdate};
use super::{Applied, ApplyRules, Backend, Lease, ReceivedEvent, StoreError, usage};
use crate::config::DatabaseSettings;
use crate::domain::{GameEvent, Heartbeat, Session, UtcTime};
use crate::usage::{UsageQuery, UsageRow};

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(
        url: &SecretString,
        settings: &DatabaseSettings,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.expose_secret())?.application_name("cphub");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout())
            .connect_with(options)
            .await?;
        Ok(PostgresStore { pool })
    }
}

#[async_trait]
impl Backend for PostgresStore {
    type Tx = sqlx::Transaction<'static, Postgres>;
    type Reader = PgPool;

    async fn begin_write(&self) -> Result<Self::Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    async fn commit(tx: Self::Tx) -> Result<(), StoreError> {
        Ok(tx.commit().await?)
    }

    fn reader(&self) -> PgPool {
        self.pool.clone()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn usage(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        Ok(bind_usage(sqlx::query_as(usage::POSTGRES), query)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn explain_usage(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError> {
        let steps: Vec<(String,)> = bind_usage(sqlx::query_as(usage::POSTGRES_EXPLAIN), query)
            .fetch_all(&self.pool)
            .await?;
        Ok(steps.into_iter().map(|(step,)| step).collect())
    }

    async fn usage_rollups(&self, query: &UsageQuery) -> Result<Vec<UsageRow>, StoreError> {
        Ok(bind_rollups(sqlx::query_as(usage::POSTGRES_ROLLUPS), query)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn explain_usage_rollups(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError> {
        let statement = sqlx::query_as(usage::POSTGRES_ROLLUPS_EXPLAIN);
        let steps: Vec<(String,)> = bind_rollups(statement, query).fetch_all(&self.pool).await?;
        Ok(steps.into_iter().map(|(step,)| step).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn apply_events(
        &self,
        events: &[ReceivedEvent],
        rules: ApplyRules,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let applied = event_batch::apply(&mut tx, events, rules).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// One statement per table for the whole batch (arrays + UNNEST), so a flush of tens of
    /// thousands of phones is two round trips, not tens of thousands.
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<(), StoreError> {
        // Rows are locked in the order every other writer uses — sessions before phones,
        // each in key order (the event batch, the ticket writer, hold release) — so a flush
        // never waits in a cycle with them: taken in the buffer's hash order, a flush and an
        // event batch deadlocked under the mixed load of the fleet generator.
        let mut heartbeats: Vec<&Heartbeat> = heartbeats.iter().collect();
        heartbeats.sort_unstable_by(|a, b| a.phone_id.as_str().cmp(b.phone_id.as_str()));
        let column = |f: fn(&Heartbeat) -> Option<&str>| -> Vec<Option<String>> {
            heartbeats
                .iter()
                .map(|hb| f(hb).map(str::to_owned))
                .collect()
        };
        let phone_ids = column(|hb| Some(hb.phone_id.as_str()));
        let session_ids = column(|hb| hb.session_id.as_ref().map(|s| s.as_str()));
        let app_ids = column(|hb| hb.app_id.as_ref().map(|a| a.as_str()));
        let times: Vec<UtcTime> = heartbeats.iter().map(|hb| hb.time).collect();
        let received: Vec<UtcTime> = heartbeats.iter().map(|hb| hb.received_at).collect();

        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "SELECT 1 FROM sessions WHERE session_id = ANY($1::text[]) \
             ORDER BY session_id FOR UPDATE",
        )
        .bind(&session_ids)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE sessions SET last_heartbeat_at = u.t \
             FROM UNNEST($1::text[], $2::timestamptz[]) AS u(s, t) \
             WHERE sessions.session_id = u.s \
               AND (sessions.last_heartbeat_at IS NULL OR sessions.last_heartbeat_at < u.t)",
        )
        .bind(&session_ids)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        sqlx::query(concat!(
            "INSERT INTO phones (phone_id, last_heartbeat_at, last_seen_at, \
               heartbeat_session_id, heartbeat_app_id, created_at, updated_at) \
             SELECT p, t, r, s, a, r, r \
             FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[]) \
               AS u(p, t, r, s, a) ORDER BY p",
            crate::store::book::heartbeat_upsert!()
        ))
        .bind(&phone_ids)
        .bind(&times)
        .bind(&received)
        .bind(&session_ids)
        .bind(&app_ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(WATCHDOG_LOCK)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then(|| Box::new(AdvisoryLease(conn)) as Box<dyn Lease>))
    }
}

/// The batch's lists go in as arrays, one per column (`UNNEST`). Rows the batch changes
/// are locked as they are read, in key order, so two replicas' batches wait for each
/// other in line rather than in a cycle.
#[async_trait]
impl BatchTx for sqlx::Transaction<'static, sqlx::Postgres> {
    /// As sqlx sends it: whole microseconds from 2000-01-01, truncated towards that epoch.
    fn stored(time: UtcTime) -> UtcTime {
        let epoch = chrono::DateTime::UNIX_EPOCH + chrono::TimeDelta::days(10_957);
        (time.datetime() - epoch)
            .num_microseconds()
            .map_or(time, |us| {
                UtcTime::from_datetime(epoch + chrono::TimeDelta::microseconds(us))
            })
    }

    async fn create_sessions(&mut self, firsts: &[&ReceivedEvent]) -> Result<(), StoreError> {
        let column =
            |f: fn(&ReceivedEvent) -> &str| -> Vec<&str> { firsts.iter().map(|r| f(r)).collect() };
        let received: Vec<UtcTime> = firsts.iter().map(|r| r.received_at).collect();
        sqlx::query(
            "INSERT INTO sessions (session_id, phone_id, app_id, state, created_at, updated_at) \
             SELECT s, p, a, 'playing', r, r \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(s, p, a, r) \
             ORDER BY s ON CONFLICT (session_id) DO NOTHING",
        )
        .bind(column(|r| r.event.session_id.as_str()))
        .bind(column(|r| r.event.phone_id.as_str()))
        .bind(column(|r| r.event.app_id.as_str()))
        .bind(received)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn lock_sessions(&mut self, ids: &[&str]) -> Result<Vec<Session>, StoreError> {
        let rows: Vec<SessionRow> = sqlx::query_as(concat!(
            "SELECT ",
            crate::store::book::session_columns!(),
            " FROM sessions WHERE session_id = ANY($1) ORDER BY session_id FOR UPDATE"
        ))
        .bind(ids)
        .fetch_all(&mut **self)
        .await?;
        rows.into_iter().map(Session::try_from).collect()
    }

    async fn accepted_events(&mut self, ids: &[&str]) -> Result<Vec<AcceptedEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT session_id, status, phone_id, app_id, event_time, run_time \
             FROM session_events WHERE outcome = 'accepted' AND session_id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&mut **self)
        .await?)
    }

    async fn insert_events(&mut self, rows: &[EventRow<'_>]) -> Result<u64, StoreError> {
        let events: Vec<_> = rows.iter().map(|row| &row.received.event).collect();
        let text =
            |f: fn(&GameEvent) -> &str| -> Vec<&str> { events.iter().map(|e| f(e)).collect() };
        let statuses: Vec<i16> = events.iter().map(|e| e.kind.status()).collect();
        let times: Vec<UtcTime> = events.iter().map(|e| e.time).collect();
        let run_times: Vec<Option<i64>> = events.iter().map(|e| e.run_time).collect();
        let messages: Vec<Option<&str>> = events
            .iter()
            .map(|e| e.error_msg.as_ref().map(|m| m.as_str()))
            .collect();
        let truncated: Vec<bool> = events.iter().map(|e| e.error_msg_truncated()).collect();
        let outcomes: Vec<&str> = rows.iter().map(|row| row.outcome).collect();
        let received: Vec<UtcTime> = rows.iter().map(|row| row.received.received_at).collect();
        Ok(sqlx::query(
            "INSERT INTO session_events (session_id, status, phone_id, app_id, event_time, \
               run_time, error_msg, outcome, received_at, truncated) \
             SELECT s, st, p, a, t, rt, m, o, r, tr \
             FROM UNNEST($1::text[], $2::smallint[], $3::text[], $4::text[], \
               $5::timestamptz[], $6::bigint[], $7::text[], $8::text[], $9::timestamptz[], \
               $10::boolean[]) \
               WITH ORDINALITY AS u(s, st, p, a, t, rt, m, o, r, tr, n) \
             ORDER BY n \
             ON CONFLICT (session_id, status) WHERE outcome = 'accepted' DO NOTHING",
        )
        .bind(text(|e| e.session_id.as_str()))
        .bind(statuses)
        .bind(text(|e| e.phone_id.as_str()))
        .bind(text(|e| e.app_id.as_str()))
        .bind(times)
        .bind(run_times)
        .bind(messages)
        .bind(outcomes)
        .bind(received)
        .bind(truncated)
        .execute(&mut **self)
        .await?
        .rows_affected())
    }

    async fn create_phones(&mut self, firsts: &[(&str, UtcTime)]) -> Result<(), StoreError> {
        let phones: Vec<&str> = firsts.iter().map(|(phone, _)| *phone).collect();
        let times: Vec<UtcTime> = firsts.iter().map(|(_, at)| *at).collect();
        sqlx::query(
            "INSERT INTO phones (phone_id, created_at, updated_at) \
             SELECT p, r, r FROM UNNEST($1::text[], $2::timestamptz[]) AS u(p, r) \
             ORDER BY p ON CONFLICT (phone_id) DO NOTHING",
        )
        .bind(phones)
        .bind(times)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn lock_phones(&mut self, ids: &[&str]) -> Result<Vec<PhoneLinks>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT phone_id, current_session_id, current_app_id, current_session_started_at, \
               allocated_session_id, allocated_until, updated_at \
             FROM phones WHERE phone_id = ANY($1) ORDER BY phone_id FOR UPDATE",
        )
        .bind(ids)
        .fetch_all(&mut **self)
        .await?)
    }

    async fn save_sessions(&mut self, sessions: &[SessionUpdate<'_>]) -> Result<(), StoreError> {
        let s: Vec<&Session> = sessions.iter().map(|u| u.session).collect();
        let ids: Vec<&str> = s.iter().map(|s| s.session_id.as_str()).collect();
        let states: Vec<&str> = s.iter().map(|s| s.state.as_str()).collect();
        let started: Vec<Option<UtcTime>> = s.iter().map(|s| s.started_at).collect();
        let ended: Vec<Option<UtcTime>> = s.iter().map(|s| s.ended_at).collect();
        let reported: Vec<Option<i64>> = s.iter().map(|s| s.reported_run_time).collect();
        let durations: Vec<Option<i64>> = s.iter().map(|s| s.duration_seconds).collect();
        let mismatches: Vec<bool> = s.iter().map(|s| s.run_time_mismatch).collect();
        let reasons: Vec<Option<&str>> =
            s.iter().map(|s| s.end_reason.map(|r| r.as_str())).collect();
        let messages: Vec<Option<&str>> = s.iter().map(|s| s.error_msg.as_deref()).collect();
        let updated: Vec<UtcTime> = sessions.iter().map(|u| u.updated_at).collect();
        sqlx::query(
            "UPDATE sessions SET state = u.state, started_at = u.started_at, \
               ended_at = u.ended_at, reported_run_time = u.reported_run_time, \
               duration_seconds = u.duration_seconds, run_time_mismatch = u.run_time_mismatch, \
               end_reason = u.end_reason, error_msg = u.error_msg, updated_at = u.updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[], \
                 $5::bigint[], $6::bigint[], $7::boolean[], $8::text[], $9::text[], \
                 $10::timestamptz[]) \
               AS u(session_id, state, started_at, ended_at, reported_run_time, \
                 duration_seconds, run_time_mismatch, end_reason, error_msg, updated_at) \
             WHERE sessions.session_id = u.session_id",
        )
        .bind(ids)
        .bind(states)
        .bind(started)
        .bind(ended)
        .bind(reported)
        .bind(durations)
        .bind(mismatches)
        .bind(reasons)
        .bind(messages)
        .bind(updated)
        .execute(&mut **self)
        .await?;
        Ok(())
    }

    async fn save_phones(&mut self, phones: &[&PhoneLinks]) -> Result<(), StoreError> {
        let text = |f: fn(&PhoneLinks) -> Option<&str>| -> Vec<Option<&str>> {
            phones.iter().map(|p| f(p)).collect()
        };
        let time = |f: fn(&PhoneLinks) -> Option<UtcTime>| -> Vec<Option<UtcTime>> {
            phones.iter().map(|p| f(p)).collect()
        };
        sqlx::query(
            "UPDATE phones SET current_session_id = u.current_session_id, \
               current_app_id = u.current_app_id, \
               current_session_started_at = u.current_session_started_at, \
               allocated_session_id = u.allocated_session_id, \
               allocated_until = u.allocated_until, updated_at = u.updated_at \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], \
                 $6::timestamptz[], $7::timestamptz[]) \
               AS u(phone_id, current_session_id, current_app_id, current_session_started_at, \
                 allocated_session_id, allocated_until, updated_at) \
             WHERE phones.phone_id = u.phone_id",
        )
        .bind(text(|p| Some(p.phone_id.as_str())))
        .bind(text(|p| p.current_session_id.as_deref()))
        .bind(text(|p| p.current_app_id.as_deref()))
        .bind(time(|p| p.current_session_started_at))
        .bind(text(|p| p.allocated_session_id.as_deref()))
        .bind(time(|p| p.allocated_until))
        .bind(time(|p| Some(p.updated_at)))
        .execute(&mut **self)
        .await?;
        Ok(())
    }
}

/// Key of the advisory lock the acting watchdog holds ("cphw").
const WATCHDOG_LOCK: i64 = 0x6370_6877;

struct AdvisoryLease(sqlx::PgConnection);

#[async_trait]
impl Lease for AdvisoryLease {
    async fn held(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(&mut self.0).await.is_ok()
    }
}

type UsageStatement<'q, O> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>;

/// The pieces' bounds as two arrays.
fn bounds(query: &UsageQuery) -> (Vec<UtcTime>, Vec<UtcTime>) {
    query.pieces.iter().map(|p| (p.start, p.end)).unzip()
}

/// The rollups' query parameters: day labels, grouping by app, rounding offset, bounds.
fn bind_rollups<'q, O>(
    statement: UsageStatement<'q, O>,
    query: &UsageQuery,
) -> UsageStatement<'q, O> {
    let (starts, ends) = bounds(query);
    let [app, ..] = usage::grouped(query);
    statement
        .bind(usage::day_labels(query))
        .bind(app)
        .bind(query.rounding.offset_secs())
        .bind(starts)
        .bind(ends)
}

/// The usage query's parameters: day labels, grouping flags, rounding offset, then the
/// pieces' bounds as arrays.
fn bind_usage<'q, O>(
    statement: UsageStatement<'q, O>,
    query: &UsageQuery,
) -> UsageStatement<'q, O> {
    let (starts, ends) = bounds(query);
    let [app, phone, user] = usage::grouped(query);
    statement
        .bind(usage::day_labels(query))
        .bind(app)
        .bind(phone)
        .bind(user)
        .bind(query.rounding.offset_secs())
        .bind(starts)
        .bind(ends)
}
