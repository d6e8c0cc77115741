//! The database half of the test harness, shared by the HTTP suite (`tests/api/`) and the
//! store contract suite (`tests/store/`): each includes this file into its `helpers` module
//! (one test target cannot import another's modules). A fresh SQLite file or PostgreSQL
//! database per test, and `backend_tests!` to run each scenario on both.

use tempfile::TempDir;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A test of what PostgreSQL alone has (row locks, plans, partitions): `name` runs the
/// scenario `body()` by [`run_scenario`] when the suite has a PostgreSQL, as the
/// `postgres` half of [`backend_tests!`] does.
#[macro_export]
macro_rules! postgres_test {
    ($(#[$meta:meta])* $name:ident => $body:path) => {
        #[test]
        $(#[$meta])*
        fn $name() {
            if $crate::helpers::postgres_available() {
                $crate::helpers::run_scenario(stringify!($name), $body())
            }
        }
    };
}

/// Generates one test per backend for each `async fn name(backend: Backend)`, run by
/// [`run_scenario`] (a runtime of two workers, as `#[tokio::test]` gave, and a time bound).
/// Attributes before a name (`#[ignore = "bug: …"]`) go on both of its tests.
#[macro_export]
macro_rules! backend_tests {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                $(#[$meta])*
                fn $name() {
                    $crate::helpers::run_scenario(
                        concat!("sqlite::", stringify!($name)),
                        super::$name($crate::helpers::Backend::Sqlite),
                    )
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                $(#[$meta])*
                fn $name() {
                    if $crate::helpers::postgres_available() {
                        $crate::helpers::run_scenario(
                            concat!("postgres::", stringify!($name)),
                            super::$name($crate::helpers::Backend::Postgres),
                        )
                    }
                }
            )*
        }
    };
}

/// How long one scenario may run. The slowest pass in about a minute and a half on a loaded
/// 2-core machine; the bound is there so that a scenario that hangs fails under its own name
/// instead of stalling the whole suite into CI's time limit, as one did once with nothing to
/// say which.
/// `CPHUB_TEST_SCENARIO_LIMIT_SECS` sets another (a smaller one helps hunt a hang).
pub fn scenario_limit() -> std::time::Duration {
    let secs = std::env::var("CPHUB_TEST_SCENARIO_LIMIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    std::time::Duration::from_secs(secs)
}

/// Awaits `step`, failing the test under `what` if it takes longer than `limit`. For set-up
/// steps whose own bounds are long (following a job may take `cph.job_deadline_secs`): a
/// scenario that hangs should say where.
pub async fn within<T>(
    what: &str,
    limit: std::time::Duration,
    step: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, step).await {
        Ok(done) => done,
        Err(_) => panic!("{what} took longer than {limit:?}"),
    }
}

/// Runs one scenario on its own runtime (as `#[tokio::test]` would), failing it when it
/// outlives [`scenario_limit`]. The runtime is then shut down with a bound too: a plain drop
/// waits for every blocking task, and one waiting on a child process that never exits would
/// hold the test thread (and the suite) forever, panicked or not.
pub fn run_scenario(name: &str, scenario: impl std::future::Future<Output = ()>) {
    run_scenario_on(2, name, scenario)
}

/// [`run_scenario`] on a runtime of `workers` threads.
pub fn run_scenario_on(
    workers: usize,
    name: &str,
    scenario: impl std::future::Future<Output = ()>,
) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a test runtime");
    let limit = scenario_limit();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // The timer must be made inside the runtime: outside it there is no clock to arm.
        runtime.block_on(async { tokio::time::timeout(limit, scenario).await })
    }));
    if matches!(outcome, Ok(Err(_))) {
        print_thread_stacks(name);
    }
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(_)) => panic!("{name} did not finish within {limit:?}: it hangs"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Prints every thread's stack (gdb attached to this process, when there is one) before a
/// hung scenario fails: whether its threads wait on a lock or sit idle under a future that
/// is never woken tells the two kinds of hang apart, which the timeout alone cannot.
///
/// gdb writes to a file, never to a pipe this process reads: attached, gdb stops every
/// thread here, the reader included, and a dump larger than the pipe's buffer then blocked
/// gdb's write forever, froze the test process and stalled the whole suite into CI's limit
/// (a SIGTERM does not interrupt that write, hence `--kill-after`).
fn print_thread_stacks(name: &str) {
    let pid = std::process::id().to_string();
    let Ok(file) = tempfile::NamedTempFile::new() else {
        println!("{name} hangs; no thread stacks (no temporary file for gdb's output)");
        return;
    };
    let ran = std::process::Command::new("timeout")
        .args(["--kill-after=5", "60", "gdb", "-p", &pid, "-batch", "-nx"])
        .args(["-ex", "thread apply all bt"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(
            file.reopen().expect("gdb's output file"),
        ))
        .stderr(std::process::Stdio::null())
        .status();
    match ran {
        Ok(_) => println!(
            "{name} hangs; the threads of this test process:\n{}",
            std::fs::read_to_string(file.path()).unwrap_or_default()
        ),
        Err(error) => println!("{name} hangs; no thread stacks (gdb: {error})"),
    }
}

/// Whether the PostgreSQL half of the suite can run (`CPHUB_TEST_DATABASE_URL` is set). When
/// it cannot, says so once and how to enable it, or fails the test when
/// `CPHUB_TEST_REQUIRE_POSTGRES=1`: CI must never pass by skipping half the suite.
pub fn postgres_available() -> bool {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    if std::env::var_os("CPHUB_TEST_DATABASE_URL").is_some() {
        return true;
    }
    if std::env::var("CPHUB_TEST_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!(
            "CPHUB_TEST_REQUIRE_POSTGRES=1 but CPHUB_TEST_DATABASE_URL is not set: \
             run scripts/test, which starts PostgreSQL and sets it"
        );
    }
    NOTICE.call_once(|| {
        eprintln!(
            "skipping the PostgreSQL tests: CPHUB_TEST_DATABASE_URL is not set \
             (run scripts/test, or eval \"$(scripts/postgres-for-tests)\" first)"
        )
    });
    false
}

/// A fresh, empty database. SQLite: a file in a temporary directory removed on drop.
/// PostgreSQL: a new database named after a random id.
pub struct TestDb {
    pub url: String,
    _dir: Option<TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("cphub.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                let admin_url = std::env::var("CPHUB_TEST_DATABASE_URL").expect(
                    "CPHUB_TEST_DATABASE_URL is not set: run the test command from the README \
                     (scripts/test), which starts PostgreSQL and sets it",
                );
                let name = format!("cphub_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx_connect(&admin_url).await;
                use sqlx::Executor;
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .await
                    .unwrap();
                let (base, _) = admin_url.rsplit_once('/').unwrap();
                TestDb {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }
}

// The HTTP suite starts replicas and proxies on one database; the store suite does not.
#[allow(dead_code)]
impl TestDb {
    /// Another handle on the same database, for a second replica (PostgreSQL).
    pub fn same_database(&self) -> TestDb {
        self.reached_at(self.url.clone())
    }

    /// The same database reached through another URL (e.g. a proxy in front of it).
    pub fn reached_at(&self, url: String) -> TestDb {
        TestDb { url, _dir: None }
    }
}

pub async fn sqlx_connect(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url)
        .await
        .expect("cannot reach the test PostgreSQL")
}

/// Until `n` statements of this connection's database wait for a lock: a condition
/// PostgreSQL reports, polled, not a pause standing in for it. The bound (a minute) only
/// keeps a statement that never queues from hanging the suite: on a loaded machine a
/// store call may take seconds to reach its lock.
#[allow(dead_code)]
pub async fn wait_for_lock_waiters(conn: &mut sqlx::PgConnection, n: i64) {
    for _ in 0..6000 {
        if lock_waiters(conn).await >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{n} statements never waited for a lock");
}

/// How many statements of this connection's database wait for a lock now.
///
/// The connection asking is usually the lock holder, inside its transaction, and there
/// PostgreSQL answers `pg_stat_activity` from the list of backends it read at the
/// transaction's first look (their wait events stay live, the list does not): a store
/// connection opened after that look never showed, so a pool that had to open one for the
/// second statement under load made the wait for two waiters fail after a minute.
/// `pg_stat_clear_snapshot()` makes each look read the list afresh.
#[allow(dead_code)]
pub async fn lock_waiters(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}
