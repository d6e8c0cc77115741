//! The database goes away under cphub (issue #9, database faults): callbacks get 503 with
//! `Retry-After` and an error body — never a hang, never a 200 without a commit — readiness
//! says so, and cphub recovers by itself when the database is back. PostgreSQL is reached
//! through a proxy the test cuts and restores, so the shared cluster keeps running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::helpers::{Backend, TestApp, TestDb, assert_error, enter, quit};

/// A TCP proxy to `target` that can be cut: cutting closes every open connection and
/// refuses new ones until restored.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, cuts) = watch::channel(0u64);
        let accepting = Arc::clone(&up);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let (target, mut cuts) = (target.clone(), cuts.clone());
                cuts.borrow_and_update(); // only cuts from now on end this connection
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Proxy { port, up, cut }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_means_503_with_retry_after_and_recovery_without_restart() {
    let db = TestDb::new(Backend::Postgres).await;
    // postgres://user:pass@host:port/name → the same through the proxy.
    let (head, rest) = db.url.split_once('@').unwrap();
    let (target, name) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(target.to_owned()).await;
    let proxied = db.reached_at(format!("{head}@127.0.0.1:{}/{name}", proxy.port));
    let app = TestApp::spawn_on(proxied, "[database]\nacquire_timeout_ms = 500\n").await;
    app.send_event(&enter("before", "p-1", "2026-11-28T10:00:00Z"))
        .await;

    proxy.cut();
    let res = app
        .post_event(&enter("during", "p-2", "2026-11-28T10:00:00Z"))
        .await;
    assert!(
        res.headers().contains_key("retry-after"),
        "{:?}",
        res.headers()
    );
    assert_error(res, 503, "CPHUB.UNAVAILABLE").await;
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), 503);

    proxy.restore();
    // Back without a restart: the same delivery, retried as a phone would, is accepted.
    let mut answer = 0;
    for _ in 0..100 {
        answer = app
            .post_event(&enter("during", "p-2", "2026-11-28T10:00:00Z"))
            .await
            .status()
            .as_u16();
        if answer == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(answer, 200, "cphub did not recover");
    app.send_event(&quit("before", "p-1", "2026-11-28T10:01:00Z", 60))
        .await;
    assert_eq!(app.session("before").await.unwrap()["duration_seconds"], 60);
    assert_eq!(app.session("during").await.unwrap()["state"], "playing");
    assert_eq!(app.get("/readyz", None).await.status(), 200);
}

/// Another process holds SQLite's write lock longer than the busy timeout (a backup tool, a
/// stuck migration): events get 503 with `Retry-After`, never a 500, and go through once
/// the lock is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_file_means_503_not_500() {
    use sqlx::{Connection, Executor};
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut other = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
    other.execute("BEGIN IMMEDIATE").await.unwrap();

    let res = app
        .post_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    assert!(
        res.headers().contains_key("retry-after"),
        "{:?}",
        res.headers()
    );
    assert_error(res, 503, "CPHUB.UNAVAILABLE").await;

    other.execute("ROLLBACK").await.unwrap();
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    assert_eq!(app.session("s-1").await.unwrap()["state"], "playing");
}
