//! PostgreSQL backend: for production and for several cphub replicas on one database.
//! Sessions and phones are row-locked (`FOR UPDATE`) while a batch of events is applied, so
//! replicas applying the enter and quit of one session at once serialise instead of
//! overwriting each other.

use std::str::FromStr;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::backend;
use super::periodic::Periodic;
use super::postgres_analyze;
use super::postgres_heartbeats;
use super::event_batch::{self, BatchRead, BatchRows, BatchTx, BatchWrite, PhoneLinks, Written};
use super::{Applied, ApplyRules, Backend, Durable, Lease, ReceivedEvent, Role, StoreError, usage};
use crate::config::DatabaseSettings;
use crate::domain::{GameEvent, Heartbeat, Session, UtcTime};
use crate::usage::{UsageQuery, UsageRow};

/// The migrations compiled into the binary, for `migrate` and for readiness.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PostgresStore {
    pool: PgPool,
    _analyser: Periodic,
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
        let analyser = postgres_analyze::start(pool.clone(), settings.postgres_analyze_interval());
        Ok(PostgresStore {
            pool,
            _analyser: analyser,
        })
    }

    /// A read transaction in which PostgreSQL does not JIT-compile. The rollups' query joins
    /// each piece of time to its buckets with bounds the planner sees only as parameters, so
    /// it guesses a third of a third of the table per piece: a month by day (30 pieces)
    /// was planned at 2.3M rows where 57,600 are read, above `jit_optimize_above_cost`, and
    /// compiling took 0.9 s of a 1 s report whose rows take 40 ms (by app, one piece, stayed
    /// under the threshold). The rows read are bounded by the buckets of the window, never
    /// enough for compiled expressions to pay back their compilation.
    async fn without_jit(&self) -> Result<sqlx::Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL jit = off").execute(&mut *tx).await?;
        Ok(tx)
    }
}

#[async_trait]
impl Backend for PostgresStore {
    type Tx = sqlx::Transaction<'static, Postgres>;
    type Reader = PgPool;

    async fn begin_write(&self) -> Result<Self::Tx, StoreError> {
        Ok(self.pool.begin().await?)
    }

    /// Durable on return: COMMIT answers once its log record is flushed
    /// (`synchronous_commit`, on unless a statement turned it off for itself).
    async fn commit(&self, tx: Self::Tx) -> Result<Durable, StoreError> {
        tx.commit().await?;
        Ok(Durable::now())
    }

    fn reader(&self) -> PgPool {
        self.pool.clone()
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
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
        let mut tx = self.without_jit().await?;
        let statement = bind_rollups(sqlx::query_as(usage::POSTGRES_ROLLUPS), query);
        let rows = statement.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn explain_usage_rollups(&self, query: &UsageQuery) -> Result<Vec<String>, StoreError> {
        let mut tx = self.without_jit().await?;
        let statement = bind_rollups(sqlx::query_as(usage::POSTGRES_ROLLUPS_EXPLAIN), query);
        let steps: Vec<(String,)> = statement.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        Ok(steps.into_iter().map(|(step,)| step).collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let applied: Option<i64> = sqlx::query_scalar(backend::APPLIED_MIGRATION)
            .fetch_one(&self.pool)
            .await?;
        backend::schema_is_current(&MIGRATOR, applied)
    }

    async fn apply_events(
        &self,
        events: &[ReceivedEvent],
        rules: ApplyRules,
    ) -> Result<Vec<Applied>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let applied = event_batch::apply(&mut tx, &events.iter().collect::<Vec<_>>(), rules).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// One statement per table for the whole batch (arrays + UNNEST), so a flush of tens of
    /// thousands of phones is a few round trips, not tens of thousands. Rows another
    /// writer holds are skipped, not waited for, and their heartbeats deferred.
    async fn record_heartbeats(&self, heartbeats: &[Heartbeat]) -> Result<Vec<usize>, StoreError> {
        // Heartbeats are soft state, sent again every interval: the flush's commit need not
        // wait for its WAL flush (a server crash may lose the last few hundred milliseconds
        // of them, never a half of a chunk). Every durable write still waits for its own.
        // Set in the BEGIN's round trip (one simple query), not one of its own.
        let mut tx = (self.pool)
            .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
            .await?;
        let deferred = postgres_heartbeats::write(&mut tx, heartbeats).await?;
        tx.commit().await?;
        Ok(deferred)
    }

    async fn maintain_event_log(
        &self,
        now: UtcTime,
        drop_before: Option<UtcTime>,
    ) -> Result<u64, StoreError> {
        let dropped: i32 =
            sqlx::query_scalar("SELECT session_events_maintain($1, $2, coalesce($3, '-infinity'))")
                .bind(now)
                .bind(PARTITIONS_AHEAD_DAYS)
                .bind(drop_before)
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(dropped).unwrap_or_default())
    }

    async fn try_lead(&self, role: Role) -> Result<Option<Box<dyn Lease>>, StoreError> {
        let key = match role {
            Role::Watchdog => WATCHDOG_LOCK,
            Role::Retention => RETENTION_LOCK,
            Role::Abandonment => ABANDONMENT_LOCK,
        };
        // Detached from the pool only once the lock is held: a replica that is refused the
        // lease every tick gives the connection back rather than closing it (and the pool
        // opening another).
        let mut conn = self.pool.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then(|| Box::new(AdvisoryLease(conn.detach())) as Box<dyn Lease>))
    }
}

/// The batch's lists go in as arrays, one per column (`UNNEST`). The read locks the rows
/// the batch may change, sessions then phones, each in key order, so two replicas' batches
/// wait for each other in line rather than in a cycle; the write is one statement of
/// data-modifying CTEs.
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

    async fn read(&mut self, read: &BatchRead<'_>) -> Result<BatchRows, StoreError> {
        let firsts = &read.firsts;
        let column =
            |f: fn(&ReceivedEvent) -> &str| -> Vec<&str> { firsts.iter().map(|r| f(r)).collect() };
        let received: Vec<UtcTime> = firsts.iter().map(|r| r.received_at).collect();
        let rows = sqlx::query(BATCH_READ)
            .bind(column(|r| r.event.session_id.as_str()))
            .bind(column(|r| r.event.phone_id.as_str()))
            .bind(column(|r| r.event.app_id.as_str()))
            .bind(received)
            .bind(&read.sessions)
            .bind(&read.phones)
            .fetch_all(&mut **self)
            .await?;
        event_batch::sort_rows(&rows)
    }

    async fn write(&mut self, write: &BatchWrite<'_>) -> Result<Written, StoreError> {
        let statement = sqlx::query_as(BATCH_WRITE);
        let statement = bind_phones(bind_sessions(bind_events(statement, write), write), write);
        let keys = write.events.iter().map(|row| row.session_created_at);
        let statement = statement.bind(keys.collect::<Vec<UtcTime>>());
        let (events, phones): (i64, i64) = statement.fetch_one(&mut **self).await?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(Written {
            events: count(events),
            phones: count(phones),
        })
    }
}

type WriteStatement<'q> =
    sqlx::query::QueryAs<'q, sqlx::Postgres, (i64, i64), sqlx::postgres::PgArguments>;

/// `$1`–`$10`: the event rows, in arrival order.
fn bind_events<'q>(statement: WriteStatement<'q>, write: &'q BatchWrite<'q>) -> WriteStatement<'q> {
    let rows = write.events;
    let events: Vec<&GameEvent> = rows.iter().map(|row| &row.received.event).collect();
    let text = |f: fn(&GameEvent) -> &str| -> Vec<&str> { events.iter().map(|e| f(e)).collect() };
    statement
        .bind(text(|e| e.session_id.as_str()))
        .bind(events.iter().map(|e| e.kind.status()).collect::<Vec<i16>>())
        .bind(text(|e| e.phone_id.as_str()))
        .bind(text(|e| e.app_id.as_str()))
        .bind(events.iter().map(|e| e.time).collect::<Vec<UtcTime>>())
        .bind(events.iter().map(|e| e.run_time).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.error_msg.as_ref().map(|m| m.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|row| row.outcome).collect::<Vec<&str>>())
        .bind(
            rows.iter()
                .map(|r| r.received.received_at)
                .collect::<Vec<UtcTime>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.error_msg_truncated())
                .collect::<Vec<bool>>(),
        )
}

/// `$11`–`$20`: the sessions to save.
fn bind_sessions<'q>(
    statement: WriteStatement<'q>,
    write: &'q BatchWrite<'q>,
) -> WriteStatement<'q> {
    let s: Vec<&Session> = write.sessions.iter().map(|u| u.session).collect();
    let text =
        |f: fn(&Session) -> Option<&str>| -> Vec<Option<&str>> { s.iter().map(|s| f(s)).collect() };
    let time = |f: fn(&Session) -> Option<UtcTime>| -> Vec<Option<UtcTime>> {
        s.iter().map(|s| f(s)).collect()
    };
    let int =
        |f: fn(&Session) -> Option<i64>| -> Vec<Option<i64>> { s.iter().map(|s| f(s)).collect() };
    statement
        .bind(text(|s| Some(s.session_id.as_str())))
        .bind(text(|s| Some(s.state.as_str())))
        .bind(time(|s| s.started_at))
        .bind(time(|s| s.ended_at))
        .bind(int(|s| s.reported_run_time))
        .bind(int(|s| s.duration_seconds))
        .bind(s.iter().map(|s| s.run_time_mismatch).collect::<Vec<bool>>())
        .bind(text(|s| s.end_reason.map(|r| r.as_str())))
        .bind(text(|s| s.error_msg.as_deref()))
        .bind(
            write
                .sessions
                .iter()
                .map(|u| u.updated_at)
                .collect::<Vec<UtcTime>>(),
        )
}

/// `$21`–`$30`: the phones to save or create, with the session a quit ended on each.
fn bind_phones<'q>(statement: WriteStatement<'q>, write: &'q BatchWrite<'q>) -> WriteStatement<'q> {
    let phones = &write.phones;
    let text = |f: fn(&PhoneLinks) -> Option<&str>| -> Vec<Option<&str>> {
        phones.iter().map(|p| f(&p.links)).collect()
    };
    let time = |f: fn(&PhoneLinks) -> Option<UtcTime>| -> Vec<Option<UtcTime>> {
        phones.iter().map(|p| f(&p.links)).collect()
    };
    statement
        .bind(text(|p| Some(p.phone_id.as_str())))
        .bind(text(|p| p.current_session_id.as_deref()))
        .bind(text(|p| p.current_app_id.as_deref()))
        .bind(time(|p| p.current_session_started_at))
        .bind(text(|p| p.allocated_session_id.as_deref()))
        .bind(time(|p| p.allocated_until))
        .bind(time(|p| Some(p.created_at)))
        .bind(time(|p| Some(p.updated_at)))
        .bind(phones.iter().map(|p| p.existed).collect::<Vec<bool>>())
        .bind(text(|p| p.ended_session_id.as_deref()))
}

/// `$1`–`$4`: the first event of each session to create (session, phone, app, received);
/// `$5`: the batch's session ids, `$6` the phone ids its events name, both in key order.
/// The sessions it creates are locked by their insert and returned by it: the statement's
/// snapshot, which the locking read sees, predates them. The phones' ids are gathered into
/// one array first: `= ANY($6) OR IN (subquery)` made PostgreSQL scan every phone (283
/// events/s with 100k phones), an array probes the primary key. The sessions' accepted
/// events are found by `session_events_accepted` (migration 0030), which plans its lookup
/// with the sessions' creation times as constants, so that only their day partitions of
/// the event log are opened, not every day's since the book began; each is matched to its
/// session by id and creation time here.
const BATCH_READ: &str = concat!(
    "WITH created AS (INSERT INTO sessions \
       (session_id, phone_id, app_id, state, created_at, updated_at) \
     SELECT s, p, a, 'playing', r, r \
     FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(s, p, a, r) \
     ORDER BY s ON CONFLICT (session_id) DO NOTHING RETURNING ",
    crate::store::book::session_columns!(),
    "), locked AS MATERIALIZED (SELECT ",
    crate::store::book::session_columns!(),
    " FROM sessions WHERE session_id = ANY($5) ORDER BY session_id FOR UPDATE), \
     batch_sessions AS MATERIALIZED (SELECT * FROM created UNION ALL SELECT * FROM locked), \
     batch_events AS (SELECT e.session_id, e.status, e.phone_id, e.app_id, e.event_time, \
         e.run_time \
       FROM session_events_accepted(ARRAY(SELECT session_id FROM batch_sessions), \
         ARRAY(SELECT created_at FROM batch_sessions)) AS e \
       JOIN batch_sessions AS b ON b.session_id = e.session_id \
         AND e.session_created_at IN (b.created_at, '-infinity')), \
     batch_phones AS MATERIALIZED (SELECT ",
    event_batch::phone_link_columns!(),
    " FROM phones WHERE phone_id = ANY(ARRAY( \
         SELECT unnest($6::text[]) UNION SELECT phone_id FROM batch_sessions)) \
       ORDER BY phone_id FOR UPDATE) ",
    event_batch::batch_read_rows!()
);

/// The write as data-modifying CTEs, answering how many events were inserted (fewer when
/// another writer accepted one first) and how many phones written. `$31`: each event's
/// session's `created_at`, the event log's partition key (migration 0014). `$30`: per phone, the
/// session a quit ended on it (`ended_session_clear!`). A phone the read did
/// not find is created; if another writer created it meanwhile, it is taken over only
/// while no session is current or held on it (a heartbeat's row, say), else the count
/// falls short and the batch is decided afresh (`Raced`).
const BATCH_WRITE: &str = concat!(
    "\
    WITH inserted AS (INSERT INTO session_events (session_id, status, phone_id, app_id, \
        event_time, run_time, error_msg, outcome, received_at, truncated, session_created_at) \
      SELECT s, st, p, a, t, rt, m, o, r, tr, ca \
      FROM UNNEST($1::text[], $2::smallint[], $3::text[], $4::text[], $5::timestamptz[], \
        $6::bigint[], $7::text[], $8::text[], $9::timestamptz[], $10::boolean[], \
        $31::timestamptz[]) \
        WITH ORDINALITY AS u(s, st, p, a, t, rt, m, o, r, tr, ca, n) \
      ORDER BY n \
      ON CONFLICT (session_id, status, session_created_at) WHERE outcome = 'accepted' \
      DO NOTHING RETURNING 1), \
    saved AS (UPDATE sessions SET state = u.state, started_at = u.started_at, \
        ended_at = u.ended_at, reported_run_time = u.reported_run_time, \
        duration_seconds = u.duration_seconds, run_time_mismatch = u.run_time_mismatch, \
        end_reason = u.end_reason, error_msg = u.error_msg, updated_at = u.updated_at \
      FROM UNNEST($11::text[], $12::text[], $13::timestamptz[], $14::timestamptz[], \
          $15::bigint[], $16::bigint[], $17::boolean[], $18::text[], $19::text[], \
          $20::timestamptz[]) \
        AS u(session_id, state, started_at, ended_at, reported_run_time, \
          duration_seconds, run_time_mismatch, end_reason, error_msg, updated_at) \
      WHERE sessions.session_id = u.session_id), \
    p AS (SELECT * FROM UNNEST($21::text[], $22::text[], $23::text[], $24::timestamptz[], \
        $25::text[], $26::timestamptz[], $27::timestamptz[], $28::timestamptz[], \
        $29::boolean[], $30::text[]) \
      AS u(phone_id, current_session_id, current_app_id, current_session_started_at, \
        allocated_session_id, allocated_until, created_at, updated_at, existed, ended)), \
    phones_saved AS (UPDATE phones SET current_session_id = p.current_session_id, \
        current_app_id = p.current_app_id, \
        current_session_started_at = p.current_session_started_at, \
        allocated_session_id = p.allocated_session_id, allocated_until = p.allocated_until, \
        updated_at = p.updated_at, ",
    event_batch::ended_session_clear!("p.ended"),
    " FROM p WHERE p.existed AND phones.phone_id = p.phone_id RETURNING 1), \
    phones_created AS (INSERT INTO phones (phone_id, current_session_id, current_app_id, \
        current_session_started_at, allocated_session_id, allocated_until, created_at, \
        updated_at, heartbeat_ended_session_id) \
      SELECT phone_id, current_session_id, current_app_id, current_session_started_at, \
        allocated_session_id, allocated_until, created_at, updated_at, ended \
      FROM p WHERE NOT p.existed ORDER BY phone_id \
      ON CONFLICT (phone_id) DO UPDATE SET current_session_id = excluded.current_session_id, \
        current_app_id = excluded.current_app_id, \
        current_session_started_at = excluded.current_session_started_at, \
        allocated_session_id = excluded.allocated_session_id, \
        allocated_until = excluded.allocated_until, updated_at = excluded.updated_at, ",
    event_batch::ended_session_clear!("excluded.heartbeat_ended_session_id"),
    " WHERE phones.current_session_id IS NULL AND phones.allocated_session_id IS NULL \
      RETURNING 1) \
    SELECT (SELECT count(*) FROM inserted), \
      (SELECT count(*) FROM phones_saved) + (SELECT count(*) FROM phones_created)"
);

/// Days of event-log partitions made ahead: a week without a retention leader before
/// events fall into the default partition.
const PARTITIONS_AHEAD_DAYS: i32 = 7;

/// Key of the advisory lock the acting watchdog holds ("cphw").
const WATCHDOG_LOCK: i64 = 0x6370_6877;
/// Key of the advisory lock the replica removing old sessions holds ("cphr").
const RETENTION_LOCK: i64 = 0x6370_6872;
/// Key of the advisory lock the replica closing abandoned sessions holds ("cpha").
const ABANDONMENT_LOCK: i64 = 0x6370_6861;

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
