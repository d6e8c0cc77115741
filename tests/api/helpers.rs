//! Test harness: [`TestApp`] starts cphub in-process on port 0 against a fresh database of
//! the chosen backend. PostgreSQL tests need `CPHUB_TEST_DATABASE_URL` (an account that may
//! create databases); the README's test command (`scripts/test`) sets it up. Without it a
//! plain `cargo test` skips them with one line on stderr, unless
//! `CPHUB_TEST_REQUIRE_POSTGRES=1` (set by `scripts/test`, hence by CI) makes that a failure.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use cphub::clock::{Clock, ManualClock, SystemClock};
use cphub::config::Settings;
use cphub::startup::Application;
use serde_json::{Value, json};

pub const TOKEN: &str = "test-operator-token-0123456789abcdef";

#[path = "../common/db.rs"]
mod db;
pub use db::sqlx_connect;
use db::wait_for_lock_waiters;
pub use db::{Backend, TestDb, postgres_available, run_scenario, run_scenario_on, within};

static LOGGING: LazyLock<()> = LazyLock::new(|| {
    // Quiet by default; TEST_LOG=1 shows the application's logs at debug, TEST_LOG=info
    // (or any other level) at that level.
    if let Ok(level) = std::env::var("TEST_LOG") {
        let level = if level == "1" {
            "debug"
        } else {
            level.as_str()
        };
        let settings = Settings::with_overrides(&format!("[log]\nlevel = \"{level}\"")).unwrap();
        cphub::telemetry::init(&settings.log, std::io::stdout);
    }
});

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    handle: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, "").await
    }

    /// `overrides` is TOML layered over the test defaults.
    pub async fn spawn_with(backend: Backend, overrides: &str) -> TestApp {
        Self::spawn_on(TestDb::new(backend).await, overrides).await
    }

    /// Starts an app on an existing database (to restart "the same" service).
    pub async fn spawn_on(db: TestDb, overrides: &str) -> TestApp {
        Self::spawn_full(db, overrides, Arc::new(SystemClock)).await
    }

    /// Starts an app whose clock only moves when the test says so. Heartbeats, events,
    /// ticket expiry and allocation holds all read this clock.
    pub async fn spawn_with_clock(
        backend: Backend,
        overrides: &str,
        clock: Arc<ManualClock>,
    ) -> TestApp {
        Self::spawn_full(TestDb::new(backend).await, overrides, clock).await
    }

    /// Starts an app with a test-driven clock on an existing database (a restart).
    pub async fn spawn_on_with_clock(
        db: TestDb,
        overrides: &str,
        clock: Arc<ManualClock>,
    ) -> TestApp {
        Self::spawn_full(db, overrides, clock).await
    }

    async fn spawn_full(db: TestDb, overrides: &str, clock: Arc<dyn Clock>) -> TestApp {
        LazyLock::force(&LOGGING);
        let base = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nshutdown_timeout_secs = 5\n\
             [database]\nurl = \"{url}\"\nmax_connections = 4\n\
             [heartbeats]\nflush_interval_ms = 50\n\
             [api]\ntokens = [\"{TOKEN}\"]\nrate_limit_per_second = 0\n",
            url = db.url
        );
        let settings = figment_merge(&base, overrides);
        let app = Application::build_with_clock(settings, clock)
            .await
            .expect("application starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        let task = tokio::spawn(app.run_until_stopped());
        TestApp {
            address,
            // A request that hangs fails the test instead of stalling the suite.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            db,
            handle,
            task,
        }
    }

    /// Graceful stop, as on SIGTERM; returns the database for a restart.
    pub async fn stop(self) -> TestDb {
        // Past the 5 s graceful stop and the writers' 10 s, something does not end.
        within("stopping cphub", Duration::from_secs(60), async {
            self.handle.stop(true).await;
            self.task.await.unwrap().unwrap();
        })
        .await;
        self.db
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_event(&self, body: &Value) -> reqwest::Response {
        self.post("/cph/events", body.to_string()).await
    }

    pub async fn post_heartbeat(&self, body: &Value) -> reqwest::Response {
        self.post("/cph/heartbeat", body.to_string()).await
    }

    /// Posts an event and asserts the acknowledgement of chapter 6.
    pub async fn send_event(&self, body: &Value) {
        let res = self.post_event(body).await;
        assert_acknowledged(res).await;
    }

    pub async fn send_heartbeat(&self, body: &Value) {
        let res = self.post_heartbeat(body).await;
        assert_acknowledged(res).await;
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path}", self.address));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request sent")
    }

    /// `POST /api/v1/sessions` as the operator.
    pub async fn mint(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/sessions", self.address))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Mints a session for `app_id`/`user_id` and asserts 201; returns the answer.
    pub async fn mint_ok(&self, body: &Value) -> Value {
        let res = self.mint(body).await;
        let status = res.status();
        // Ticket and session key: kept by no cache on the way.
        let cache = res.headers().get("cache-control").cloned();
        let answer: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{answer}");
        assert_eq!(cache.as_ref().map(|v| v.as_bytes()), Some(&b"no-store"[..]));
        answer
    }

    /// `POST /cph/sign-check` (chapter 6.1).
    pub async fn sign_check(&self, body: &Value) -> reqwest::Response {
        self.post("/cph/sign-check", body.to_string()).await
    }

    /// Makes `phones` known and idle (one heartbeat each) and waits until they are stored.
    pub async fn idle_phones(&self, phones: &[&str]) {
        for phone in phones {
            self.send_heartbeat(&heartbeat(phone, None, "2026-11-28T10:00:00Z"))
                .await;
        }
        for phone in phones {
            self.wait_for_phone(phone, |p| !p["last_seen_at"].is_null())
                .await;
        }
    }

    /// Runs the `cphub` binary against this app's database (the commands that read the
    /// book directly), off the async runtime.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        cli_on(&self.db.url, args).await
    }

    /// `GET /api/v1/sessions/{id}` as the operator; None on 404.
    pub async fn session(&self, session_id: &str) -> Option<Value> {
        self.get_json(&format!("/api/v1/sessions/{session_id}"))
            .await
    }

    pub async fn phone(&self, phone_id: &str) -> Option<Value> {
        self.get_json(&format!("/api/v1/phones/{phone_id}")).await
    }

    pub async fn get_json(&self, path: &str) -> Option<Value> {
        let res = self.get(path, Some(TOKEN)).await;
        match res.status().as_u16() {
            200 => Some(res.json().await.unwrap()),
            404 => None,
            other => panic!(
                "GET {path}: unexpected {other}: {}",
                res.text().await.unwrap()
            ),
        }
    }

    /// Polls until `check` holds for the session (heartbeats arrive with the next flush).
    pub async fn wait_for_session(
        &self,
        session_id: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for(|| self.session(session_id), check).await
    }

    pub async fn wait_for_phone(&self, phone_id: &str, check: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(|| self.phone(phone_id), check).await
    }

    async fn wait_for<F, Fut>(&self, fetch: F, check: impl Fn(&Value) -> bool) -> Value
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Option<Value>>,
    {
        // 15 s: a heartbeat the buffer holds back as unchanged news (`store::Unchanged`) is
        // written once 1.2 intervals (6 s at the default 5 s) pass without a newer one.
        let every = Duration::from_millis(25);
        let found = poll_until(600, every, Duration::from_secs(60), fetch, |last| {
            last.as_ref().is_some_and(&check)
        });
        match found.await {
            Ok(value) => value.expect("checked"),
            Err(last) => panic!("condition never held; last seen: {:?}", last.flatten()),
        }
    }
}

/// Fetches until `check` holds: at most `polls` times, `every` apart, and never past `cap`
/// however slow each fetch is. The value that held, or the last one fetched.
pub(crate) async fn poll_until<T, F, Fut>(
    polls: usize,
    every: Duration,
    cap: Duration,
    fetch: F,
    check: impl Fn(&T) -> bool,
) -> Result<T, Option<T>>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + cap;
    let mut last = None;
    for _ in 0..polls {
        if tokio::time::Instant::now() > deadline {
            break;
        }
        let value = fetch().await;
        if check(&value) {
            return Ok(value);
        }
        last = Some(value);
        tokio::time::sleep(every).await;
    }
    Err(last)
}

fn figment_merge(base: &str, overrides: &str) -> Settings {
    // Later tables win key by key, as in the real layering.
    use figment::providers::{Format, Toml};
    let figment = figment::Figment::from(Toml::string(cphub::config::DEFAULT_TOML))
        .merge(Toml::string(base))
        .merge(Toml::string(overrides));
    figment.extract().expect("test settings are valid")
}

/// Asserts a 200 whose body is exactly `{"request_id": <32 lowercase hex>}`.
pub async fn assert_acknowledged(res: reqwest::Response) {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "body: {body}");
    let object = body.as_object().unwrap();
    assert_eq!(object.len(), 1, "only request_id expected: {body}");
    assert_request_id(&body["request_id"]);
}

pub fn assert_request_id(id: &Value) {
    let id = id.as_str().expect("request_id is a string");
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{id}"
    );
}

/// Asserts an error answer of chapter 7.1.1's shape with cphub's `code`.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    let actual = res.status().as_u16();
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(actual, status, "body: {body}");
    assert_eq!(body["error_code"], code, "body: {body}");
    assert!(
        body["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_request_id(&body["request_id"]);
    body
}

/// An enter event (chapter 6.2) for `session` on `phone` at `time`.
pub fn enter(session: &str, phone: &str, time: &str) -> Value {
    json!({
        "event_type": "app",
        "event": {"phone_id": phone, "status": 0, "session_id": session,
                  "time": time, "app_id": "com.example.game", "error_msg": null}
    })
}

/// A quit event (chapter 6.3).
pub fn quit(session: &str, phone: &str, time: &str, run_time: i64) -> Value {
    json!({
        "event_type": "app",
        "event": {"phone_id": phone, "status": 1, "session_id": session,
                  "time": time, "run_time": run_time, "app_id": "com.example.game",
                  "error_msg": null}
    })
}

/// A heartbeat (chapter 6.4); `session` None means idle (blank ids).
pub fn heartbeat(phone: &str, session: Option<&str>, time: &str) -> Value {
    json!({
        "event_type": "heartbeat",
        "event": {"phone_id": phone, "app_id": session.map_or("", |_| "com.example.game"),
                  "session_id": session.unwrap_or(""), "time": time}
    })
}

/// Another client holding the database's write lock, as a backup tool or a stuck migration
/// would: SQLite `BEGIN IMMEDIATE` on the file, PostgreSQL `LOCK TABLE sessions`. cphub's
/// writes wait behind it (holding their connection) until [`WriteLock::release`].
pub enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    pub async fn take(db: &TestDb) -> WriteLock {
        Self::take_in_mode(db, "LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE").await
    }

    /// As [`WriteLock::take`], but plain reads of `sessions` go on (PostgreSQL's `EXCLUSIVE`
    /// mode: writes and `SELECT … FOR UPDATE` wait, `SELECT` does not; SQLite's readers go
    /// on in WAL mode either way), so a test can scrape `/metrics` and read sessions while
    /// cphub's writes wait.
    pub async fn take_letting_reads(db: &TestDb) -> WriteLock {
        Self::take_in_mode(db, "LOCK TABLE sessions IN EXCLUSIVE MODE").await
    }

    /// As [`WriteLock::take_letting_reads`], on `phones`: the table the heartbeat flush
    /// writes (SQLite has one write lock for the file either way).
    pub async fn take_phones_letting_reads(db: &TestDb) -> WriteLock {
        Self::take_in_mode(db, "LOCK TABLE phones IN EXCLUSIVE MODE").await
    }

    /// `lock`: the PostgreSQL statement that takes the lock.
    async fn take_in_mode(db: &TestDb, lock: &'static str) -> WriteLock {
        use sqlx::{Connection, Executor};
        if db.url.starts_with("sqlite:") {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            conn.execute("BEGIN IMMEDIATE").await.unwrap();
            WriteLock::Sqlite(conn)
        } else {
            let mut conn = sqlx_connect(&db.url).await;
            conn.execute("BEGIN").await.unwrap();
            conn.execute(lock).await.unwrap();
            WriteLock::Postgres(conn)
        }
    }

    /// Waits until one of cphub's writes is queued behind the lock. PostgreSQL shows it;
    /// SQLite cannot, so there a short pause lets the request reach the busy handler.
    pub async fn wait_for_a_waiter(&mut self) {
        self.wait_for_waiters(1).await;
    }

    /// As [`WriteLock::wait_for_a_waiter`], for `n` writes queued behind the lock at once:
    /// on PostgreSQL, `n` writers' rounds (SQLite has one writer; there, the same pause).
    pub async fn wait_for_waiters(&mut self, n: i64) {
        let WriteLock::Postgres(conn) = self else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        };
        wait_for_lock_waiters(conn, n).await;
    }

    /// Whether `request` queued a write behind the lock before it was answered. PostgreSQL
    /// shows the waiter; SQLite cannot, so there a request still unanswered after a short
    /// pause counts as queued.
    pub async fn queued<T>(&mut self, request: &tokio::task::JoinHandle<T>) -> bool {
        let started = std::time::Instant::now();
        for _ in 0..6000 {
            if request.is_finished() {
                return false;
            }
            let queued = match self {
                WriteLock::Postgres(conn) => db::lock_waiters(conn).await >= 1,
                WriteLock::Sqlite(_) => started.elapsed() >= Duration::from_millis(500),
            };
            if queued {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the request neither queued a write nor was answered");
    }

    pub async fn release(self) {
        use sqlx::Executor;
        match self {
            WriteLock::Sqlite(mut conn) => conn.execute("ROLLBACK").await.map(drop),
            WriteLock::Postgres(mut conn) => conn.execute("ROLLBACK").await.map(drop),
        }
        .unwrap();
    }
}

/// Session `k` of phone `p-{n}` in a load test: its id, then its enter and quit (60 s).
pub fn played_session(n: usize, k: usize) -> (String, [(&'static str, Value); 2]) {
    let (session, phone) = (format!("s-{n}-{k}"), format!("p-{n}"));
    let events = [
        ("enter", enter(&session, &phone, "2026-11-28T10:00:00Z")),
        ("quit", quit(&session, &phone, "2026-11-28T10:01:00Z", 60)),
    ];
    (session, events)
}

/// Every acknowledged (session, "enter" | "quit") is in the book, accepted exactly once:
/// none lost, none of its redeliveries counted again.
pub async fn assert_applied_once(app: &TestApp, acked: &[(String, &'static str)]) {
    for (session, kind) in acked {
        let stored = app.session(session).await;
        let accepted = stored.as_ref().map_or(0, |s| {
            let events = s["events"].as_array().unwrap().iter();
            events
                .filter(|e| e["kind"] == *kind && e["outcome"] == "accepted")
                .count()
        });
        assert_eq!(accepted, 1, "acknowledged {kind} of {session}: {stored:?}");
    }
}

/// Runs the `cphub` binary on the book at `url`, with no configuration file (also after the
/// service on that book has stopped).
pub async fn cli_on(url: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cphub"));
    cmd.env_clear()
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .env("DATABASE_URL", url)
        .args(args);
    child_output(cmd).await
}

/// How long a child the tests run (the `cphub` CLI) may take before it counts as hung.
const CHILD_LIMIT: Duration = Duration::from_secs(240);

/// Runs `cmd` to its end off the async runtime, capturing its output as `Command::output`
/// does. A child still running after [`CHILD_LIMIT`] is killed and the test fails naming
/// it, with what it printed so far: waiting for it held the scenario until its 600 s bound,
/// which only said "it hangs".
pub async fn child_output(mut cmd: std::process::Command) -> std::process::Output {
    use std::process::Stdio;
    let what = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    let child = (cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped()))
    .spawn()
    .unwrap();
    let pid = child.id().to_string();
    let mut waiting = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    if let Ok(done) = tokio::time::timeout(CHILD_LIMIT, &mut waiting).await {
        return done.unwrap();
    }
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid])
        .status();
    let out = waiting.await.unwrap();
    panic!(
        "{what} did not exit within {CHILD_LIMIT:?} and was killed; stdout: {}; stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
