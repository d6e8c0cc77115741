//! The `cphub` binary itself: configuration errors, `migrate`, and SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, TestDb, enter, heartbeat};

fn cphub(db: &TestDb) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cphub"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .env("DATABASE_URL", &db.url)
        .env("CPHUB__SERVER__LISTEN", "127.0.0.1:0")
        .env("CPHUB__API__TOKENS", TOKEN)
        .env("CPHUB__LOG__FORMAT", "json");
    cmd
}

/// Starts `cphub serve` and reads its log until it reports the port it bound.
fn start_serve(db: &TestDb, flush_ms: u64) -> (Child, String) {
    let mut child = cphub(db)
        .arg("serve")
        .env("CPHUB__HEARTBEATS__FLUSH_INTERVAL_MS", flush_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if parsed["fields"]["message"] == "cphub listening" {
                let _ = tx.send(parsed["fields"]["port"].as_u64().unwrap());
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("cphub reports its port");
    (child, format!("http://127.0.0.1:{port}"))
}

fn send_sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn sigterm_flushes_buffered_heartbeats_and_exits_0(backend: Backend) {
    let db = TestDb::new(backend).await;
    // Heartbeats would wait an hour for the periodic flush: only the shutdown flush can save them.
    let (mut child, address) = start_serve(&db, 3_600_000);
    let client = reqwest::Client::new();
    for (path, body) in [
        ("/cph/events", enter("s-1", "p-1", "2026-11-28T10:00:00Z")),
        (
            "/cph/heartbeat",
            heartbeat("p-1", Some("s-1"), "2026-11-28T10:00:05Z"),
        ),
        (
            "/cph/heartbeat",
            heartbeat("p-2", None, "2026-11-28T10:00:06Z"),
        ),
    ] {
        let res = client
            .post(format!("{address}{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    send_sigterm(&child);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();

    assert!(status.success(), "exit status {status:?}");
    let app = TestApp::spawn_on(db, "").await;
    assert_eq!(
        app.session("s-1").await.unwrap()["last_heartbeat_at"],
        "2026-11-28T10:00:05Z"
    );
    assert_eq!(
        app.phone("p-2").await.unwrap()["last_heartbeat_at"],
        "2026-11-28T10:00:06Z"
    );
}

async fn migrate_prepares_the_database_and_is_repeatable(backend: Backend) {
    let db = TestDb::new(backend).await;

    for _ in 0..2 {
        let out = cphub(&db).arg("migrate").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let app = TestApp::spawn_on(db, "[database]\nmigrate_on_start = false").await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
}

backend_tests!(
    sigterm_flushes_buffered_heartbeats_and_exits_0,
    migrate_prepares_the_database_and_is_repeatable,
);

#[tokio::test]
async fn a_bad_setting_stops_startup_naming_its_key() {
    let db = TestDb::new(Backend::Sqlite).await;
    let cases = [
        ("CPHUB__SERVER__LISTEN", "not-an-address", "server.listen"),
        (
            "CPHUB__CALLBACKS__BASE_PATH",
            "/cph?secret=1",
            "callbacks.base_path",
        ),
        ("DATABASE_URL", "mysql://localhost/db", "database.url"),
        (
            "CPHUB__HEARTBEATS__FLUSH_INTERVAL_MS",
            "soon",
            "heartbeats.flush_interval_ms",
        ),
    ];
    for (var, value, key) in cases {
        let out = cphub(&db).arg("serve").env(var, value).output().unwrap();
        // Environment keys are reported in their own (upper) case.
        let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(
            stderr.contains(key),
            "{var}={value} should name {key}: {stderr}"
        );
    }
}
