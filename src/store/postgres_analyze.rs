//! Planner statistics for a book that grows faster than autovacuum looks at it.
//!
//! PostgreSQL keeps a prepared statement's generic plan until something invalidates it,
//! and cphub's connections prepare their statements in the first seconds, when a new book's
//! `phones` and `sessions` hold a few rows. Planned on those sizes, the hot statements read
//! whole tables: in the fleet benchmark the heartbeat flush's lock of 250 phones took 175 ms
//! at 20,000 phones and up to 1.2 s at 80,000, until autovacuum's first `ANALYZE`, which
//! comes one `autovacuum_naptime` (a minute) or more after the fleet arrived
//! (docs/benchmarks.md, "A new book's plans"). A fleet connected to a new book arrives in
//! one heartbeat interval. So the store looks every `database.postgres_analyze_interval_ms`
//! for its tables holding more than twice the rows the planner last counted (and at least
//! [`MIN_ROWS`]), and analyses them: the `ANALYZE` replaces the statistics and invalidates
//! every cached plan on the table, in every connection. A book that grows gradually or has
//! reached its size is left to autovacuum: its tables are never twice what was counted.

use std::time::Duration;

use sqlx::PgPool;

use super::StoreError;
use super::periodic::Periodic;

/// Below this many rows a table is left to autovacuum: a scan of it costs little, whatever
/// the plan.
const MIN_ROWS: i64 = 1_000;

/// Key of the advisory lock a replica analyses under ("cpha"), so replicas on one database
/// do not analyse the same table together (the second would wait for the first).
const ANALYZE_LOCK: i64 = 0x6370_6861;

/// The tables this role owns that hold at least `$1` live rows and more than twice the
/// planner's count (`reltuples`, -1 before a table's first `ANALYZE`), quoted for SQL.
const GROWN_TABLES: &str = "\
    SELECT format('%I.%I', s.schemaname, s.relname), s.n_live_tup, c.reltuples::bigint \
    FROM pg_stat_user_tables AS s JOIN pg_class AS c ON c.oid = s.relid \
    WHERE c.relowner = current_user::regrole \
      AND s.n_live_tup >= $1 AND s.n_live_tup > 2 * greatest(c.reltuples, 0) \
    ORDER BY 1";

/// The chore, every `every` (the first after one `every`); none with a zero interval.
/// Aborted when the store is dropped (an `ANALYZE` cut short changes nothing).
pub(super) fn start(pool: PgPool, every: Duration) -> Periodic {
    let failed = "analysing grown tables failed; will retry";
    Periodic::start(every, every, failed, move || {
        let pool = pool.clone();
        async move { analyse_grown(&pool).await }
    })
}

/// Analyses the grown tables in one transaction, unless another replica is doing so.
async fn analyse_grown(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(ANALYZE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !ours {
        return Ok(());
    }
    let grown: Vec<(String, i64, i64)> = sqlx::query_as(GROWN_TABLES)
        .bind(MIN_ROWS)
        .fetch_all(&mut *tx)
        .await?;
    for (table, rows, counted) in &grown {
        // The name is PostgreSQL's own, quoted by format('%I').
        let analyse = sqlx::AssertSqlSafe(format!("ANALYZE {table}"));
        sqlx::raw_sql(analyse).execute(&mut *tx).await?;
        tracing::info!(%table, rows, counted, "analysed a table the planner counted too small");
    }
    tx.commit().await?;
    Ok(())
}
