//! The one seam between the shared SQL of the session book (`book.rs`) and the two drivers.
//!
//! Both SQLite and PostgreSQL take `$N` placeholders, `ON CONFLICT … DO UPDATE … WHERE` and
//! `RETURNING`, and [`UtcTime`] encodes natively on each (`codec.rs`), so most statements are
//! written once. sqlx cannot be generic over the database without a wall of trait bounds at
//! every function, so the shared functions talk to [`Sql`] instead: a statement, its
//! parameters as [`Arg`]s, and rows decoded into types both drivers can decode ([`BookRow`]).
//! [`Sql`] is implemented for each driver's transaction and pool, binding the [`Arg`]s in
//! one place.

use std::future::Future;

use sqlx::error::BoxDynError;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Arguments, Database, Encode, FromRow, PgPool, Postgres, Sqlite, SqlitePool, Type};

use super::StoreError;
use crate::domain::UtcTime;

/// A list as the one JSON parameter a set-wise statement reads (`json_each` on SQLite,
/// `json_array_elements` on PostgreSQL): one round trip for a batch
/// of any size.
pub(crate) fn json_list<T: serde::Serialize>(list: &[T]) -> Result<String, StoreError> {
    serde_json::to_string(list).map_err(|e| StoreError::Corrupt(format!("a batch's JSON: {e}")))
}

/// One statement parameter, borrowed from the caller's domain values.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
    Time(Option<UtcTime>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(value: &'a str) -> Self {
        Arg::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Arg::Text(value)
    }
}

impl From<i64> for Arg<'_> {
    fn from(value: i64) -> Self {
        Arg::Int(Some(value))
    }
}

impl From<i32> for Arg<'_> {
    fn from(value: i32) -> Self {
        Arg::Int(Some(value.into()))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(value: Option<i64>) -> Self {
        Arg::Int(value)
    }
}

impl From<bool> for Arg<'_> {
    fn from(value: bool) -> Self {
        Arg::Bool(value)
    }
}

impl From<UtcTime> for Arg<'_> {
    fn from(value: UtcTime) -> Self {
        Arg::Time(Some(value))
    }
}

impl From<Option<UtcTime>> for Arg<'_> {
    fn from(value: Option<UtcTime>) -> Self {
        Arg::Time(value)
    }
}

/// `args![a, b, …]`: the parameters `$1, $2, …` of a statement, each converted to an [`Arg`].
macro_rules! args {
    ($($value:expr),* $(,)?) => {
        [$($crate::store::sql::Arg::from($value)),*]
    };
}
pub(crate) use args;

/// A row type both drivers decode (derive `sqlx::FromRow` with fields both support).
pub(crate) trait BookRow:
    for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

impl<T> BookRow for T where
    T: for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow> + Send + Unpin
{
}

/// Where the shared statements run: a write transaction or a pool of either driver.
pub(crate) trait Sql: Send {
    /// Whether `FOR UPDATE SKIP LOCKED` is needed to keep concurrent writers apart
    /// (PostgreSQL); SQLite has one writer.
    const LOCKS_ROWS: bool;

    /// Whether a batch's statements go as several `;`-separated statements in one query
    /// (sqlx-sqlite runs them in one call to its worker thread) rather than as one
    /// statement of data-modifying CTEs (PostgreSQL).
    const MULTI_STATEMENT: bool;

    /// A time as a statement reads it from a JSON batch: whole epoch milliseconds as SQLite
    /// stores it, whole epoch microseconds as PostgreSQL does.
    fn json_time(time: UtcTime) -> i64;

    /// Runs a statement; how many rows it changed.
    fn execute(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    fn fetch_all<R: BookRow>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<R>, sqlx::Error>> + Send;

    fn fetch_optional<R: BookRow>(
        &mut self,
        sql: &'static str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<R>, sqlx::Error>> + Send;
}

/// The driver's arguments for `args`, in order.
fn arguments<DB: Database>(args: &[Arg<'_>]) -> Result<DB::Arguments, BoxDynError>
where
    for<'a> &'a str: Encode<'a, DB> + Type<DB>,
    Option<String>: for<'a> Encode<'a, DB> + Type<DB>,
    Option<i64>: for<'a> Encode<'a, DB> + Type<DB>,
    bool: for<'a> Encode<'a, DB> + Type<DB>,
    Option<UtcTime>: for<'a> Encode<'a, DB> + Type<DB>,
{
    let mut out = DB::Arguments::default();
    for arg in args {
        match *arg {
            Arg::Text(Some(text)) => out.add(text)?,
            Arg::Text(None) => out.add(None::<String>)?,
            Arg::Int(value) => out.add(value)?,
            Arg::Bool(value) => out.add(value)?,
            Arg::Time(value) => out.add(value)?,
        }
    }
    Ok(out)
}

/// [`Sql`] for one driver's transaction or pool, `$exec` naming the executor in `self`:
/// the bodies are the same, the types are not, and sqlx offers no common trait for
/// `rows_affected`.
macro_rules! impl_sql {
    ($ty:ty, $db:ty, locks_rows = $locks:literal, |$this:ident| $exec:expr) => {
        impl Sql for $ty {
            const LOCKS_ROWS: bool = $locks;
            const MULTI_STATEMENT: bool = !$locks;

            fn json_time(time: UtcTime) -> i64 {
                match $locks {
                    true => time.datetime().timestamp_micros(),
                    false => time.epoch_millis(),
                }
            }

            async fn execute(
                &mut self,
                sql: &'static str,
                args: &[Arg<'_>],
            ) -> Result<u64, sqlx::Error> {
                let args = arguments::<$db>(args).map_err(sqlx::Error::Encode)?;
                let $this = self;
                let done = sqlx::query_with(sql, args).execute($exec).await?;
                Ok(done.rows_affected())
            }

            async fn fetch_all<R: BookRow>(
                &mut self,
                sql: &'static str,
                args: &[Arg<'_>],
            ) -> Result<Vec<R>, sqlx::Error> {
                let args = arguments::<$db>(args).map_err(sqlx::Error::Encode)?;
                let $this = self;
                sqlx::query_as_with(sql, args).fetch_all($exec).await
            }

            async fn fetch_optional<R: BookRow>(
                &mut self,
                sql: &'static str,
                args: &[Arg<'_>],
            ) -> Result<Option<R>, sqlx::Error> {
                let args = arguments::<$db>(args).map_err(sqlx::Error::Encode)?;
                let $this = self;
                sqlx::query_as_with(sql, args).fetch_optional($exec).await
            }
        }
    };
}

impl_sql!(
    sqlx::Transaction<'static, Sqlite>,
    Sqlite,
    locks_rows = false,
    |tx| &mut **tx
);
impl_sql!(SqlitePool, Sqlite, locks_rows = false, |pool| &*pool);
impl_sql!(
    sqlx::Transaction<'static, Postgres>,
    Postgres,
    locks_rows = true,
    |tx| &mut **tx
);
impl_sql!(PgPool, Postgres, locks_rows = true, |pool| &*pool);
