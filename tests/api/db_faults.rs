//! The database goes away under cphub (issue #9, database faults): callbacks get 503 with
//! `Retry-After` and an error body — never a hang, never a 200 without a commit — readiness
//! says so, and cphub recovers by itself when the database is back. PostgreSQL is reached
//! through a proxy the test cuts and restores, so the shared cluster keeps running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use serde_json::json;

use crate::backend_tests;
use crate::helpers::{
    Backend, TOKEN, TestApp, TestDb, WriteLock, assert_applied_once, assert_error, enter,
    heartbeat, played_session, quit,
};

/// The state of the [`Proxy`]'s link to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// As a stopped server: open connections closed, new ones refused.
    Cut,
    /// As a network dropping packets: connections stay open, nothing goes through.
    Silent,
}

/// A TCP proxy to `target` whose link the test cuts, silences and restores. A connection
/// lives only while the link stays up: once it changes, the connection stops forwarding
/// and closes when the link changes again (at once if cut).
struct Proxy {
    port: u16,
    link: watch::Sender<Link>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (link, links) = watch::channel(Link::Up);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (target, mut links) = (target.clone(), links.clone());
                tokio::spawn(async move {
                    let now = *links.borrow_and_update();
                    if now == Link::Up {
                        forward(client, &target, &mut links).await;
                    } else if now == Link::Silent {
                        let _held = client;
                        let _ = links.changed().await;
                    } // cut: dropped, the connection closes at once
                });
            }
        });
        Proxy { port, link }
    }

    fn cut(&self) {
        self.link.send_replace(Link::Cut);
    }

    fn silence(&self) {
        self.link.send_replace(Link::Silent);
    }

    fn restore(&self) {
        self.link.send_replace(Link::Up);
    }
}

/// Copies both ways while the link is up.
async fn forward(mut client: TcpStream, target: &str, links: &mut watch::Receiver<Link>) {
    let Ok(mut server) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        _ = links.changed() => {}
    }
    if *links.borrow_and_update() == Link::Silent {
        let _ = links.changed().await; // open, silent, until the link changes again
    }
}

/// cphub on a fresh PostgreSQL database reached through a [`Proxy`].
async fn behind_a_proxy(overrides: &str) -> (Proxy, TestApp) {
    let db = TestDb::new(Backend::Postgres).await;
    // postgres://user:pass@host:port/name → the same through the proxy.
    let (head, rest) = db.url.split_once('@').unwrap();
    let (target, name) = rest.split_once('/').unwrap();
    let proxy = Proxy::start(target.to_owned()).await;
    let proxied = db.reached_at(format!("{head}@127.0.0.1:{}/{name}", proxy.port));
    (proxy, TestApp::spawn_on(proxied, overrides).await)
}

#[test]
fn postgres_down_means_503_with_retry_after_and_recovery_without_restart() {
    crate::helpers::run_scenario(
        "postgres_down_means_503_with_retry_after_and_recovery_without_restart",
        async {
            if !crate::helpers::postgres_available() {
                return;
            }
            let (proxy, app) = behind_a_proxy("[database]\nacquire_timeout_ms = 500\n").await;
            app.send_event(&enter("before", "p-1", "2026-11-28T10:00:00Z"))
                .await;

            proxy.cut();
            let res = app
                .post_event(&enter("during", "p-2", "2026-11-28T10:00:00Z"))
                .await;
            assert_unavailable(res).await;
            let ready = app.get("/readyz", None).await;
            assert_eq!(ready.status(), 503);

            proxy.restore();
            // Back without a restart: the same delivery, retried as a phone would, is accepted.
            redeliver(&app, &enter("during", "p-2", "2026-11-28T10:00:00Z")).await;
            app.send_event(&quit("before", "p-1", "2026-11-28T10:01:00Z", 60))
                .await;
            assert_eq!(app.session("before").await.unwrap()["duration_seconds"], 60);
            assert_eq!(app.session("during").await.unwrap()["state"], "playing");
            assert_eq!(app.get("/readyz", None).await.status(), 200);
        },
    )
}

/// Another process holds SQLite's write lock longer than the busy timeout (a backup tool, a
/// stuck migration): events get 503 with `Retry-After`, never a 500, and go through once
/// the lock is released.
#[test]
fn a_locked_sqlite_file_means_503_not_500() {
    crate::helpers::run_scenario("a_locked_sqlite_file_means_503_not_500", async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let other = WriteLock::take(&app.db).await;

        let res = app
            .post_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
            .await;
        assert_unavailable(res).await;

        other.release().await;
        app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
            .await;
        assert_eq!(app.session("s-1").await.unwrap()["state"], "playing");
    })
}

/// Asserts cphub's "not now": 503 `CPHUB.UNAVAILABLE` with `Retry-After`.
async fn assert_unavailable(res: reqwest::Response) {
    let retry_after = res.headers().get("retry-after").cloned();
    assert_error(res, 503, "CPHUB.UNAVAILABLE").await;
    assert_eq!(retry_after.unwrap(), "1");
}

/// Sends `event` as a phone does until it is acknowledged: again 100 ms after each 503
/// (which must be cphub's "not now"), for at most ten seconds.
async fn redeliver(app: &TestApp, event: &serde_json::Value) {
    for _ in 0..100 {
        let res = app.post_event(event).await;
        if res.status() == 200 {
            return;
        }
        assert_unavailable(res).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cphub did not recover: still 503 after ten seconds");
}

/// One connection (`database.max_connections = 1`; SQLite writes always have one) held by a
/// write stuck behind another client's lock: a request needing a connection gets 503 once
/// `acquire_timeout_ms` has passed — it does not queue forever — and once the lock goes the
/// event is in the book exactly once.
async fn an_exhausted_pool_means_503_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        "[database]\nmax_connections = 1\nacquire_timeout_ms = 300\n",
    )
    .await;
    let mut lock = WriteLock::take(&app.db).await;
    // The stuck write: an event queued behind the lock, holding the one connection. Had a
    // background write held that connection when the event asked for it (the start-up's
    // partition upkeep can outlast the 300 ms acquire timeout on a busy machine), the event
    // got its 503 without queueing: then it is sent again, as a phone would.
    let mut stuck = None;
    for _ in 0..10 {
        let (client, url) = (app.client.clone(), format!("{}/cph/events", app.address));
        let body = enter("s-1", "p-1", "2026-11-28T10:00:00Z");
        let request =
            tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap() });
        if lock.queued(&request).await {
            stuck = Some(request);
            break;
        }
        assert_eq!(
            request.await.unwrap().status(),
            503,
            "answered without queueing"
        );
    }
    let stuck = stuck.expect("the event queued behind the lock");

    // Minting writes, so on both backends it needs the connection the stuck write holds.
    assert_unavailable(app.mint(&json!({"app_id": "game", "user_id": "u-1"})).await).await;

    lock.release().await;
    // Usually committed after the lock; on SQLite the background sweep may have held the
    // connection first, and then the event itself timed out waiting: a 503, not an ack.
    let first = stuck.await.unwrap().status().as_u16();
    assert!(first == 200 || first == 503, "{first}");
    // Sent again as a phone would, not once: the one connection may still be held by a
    // background write that waited out the lock (the release of lapsed holds, every
    // second), on a busy machine longer than the 300 ms acquire timeout. A CI run failed
    // in this test, most likely there.
    redeliver(&app, &enter("s-1", "p-1", "2026-11-28T10:00:00Z")).await;
    let session = app.session("s-1").await.unwrap();
    assert_eq!(session["state"], "playing");
    let accepted = session["events"].as_array().unwrap().iter();
    assert_eq!(accepted.filter(|e| e["outcome"] == "accepted").count(), 1);
}

/// The database away longer than the stale time (here its write lock held 6 s; phones are
/// stale after 4 s): the phone heartbeats throughout, answered from memory, and its
/// session is still playing once the backlog is written. Before, the first pass after the
/// outage (every 100 ms here) read the phone's `last_seen_at` from before it and closed
/// the session as abandoned (its player's reconnects refused, billing told it ended)
/// before the flush (every 500 ms) had written what the phone said meanwhile. No control
/// plane is configured: abandonment does not need one.
async fn a_database_outage_longer_than_the_stale_time_abandons_no_session(backend: Backend) {
    let overrides = "[fleet]\nheartbeat_interval_secs = 1\nmiss_threshold = 4\n\
        [heartbeats]\nflush_interval_ms = 500\n[database]\nwrite_timeout_ms = 300\n\
        [watchdog]\ninterval_ms = 100\nstartup_grace_secs = 0\n";
    let app = Arc::new(TestApp::spawn_with(backend, overrides).await);
    app.idle_phones(&["p-1"]).await;
    let minted = app
        .mint_ok(&json!({"app_id": "com.example.game", "user_id": "u-1"}))
        .await;
    let session = minted["session_id"].as_str().unwrap().to_owned();
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    app.send_event(&enter(&session, "p-1", &now())).await;
    let stop = Arc::new(AtomicBool::new(false));
    let beating = tokio::spawn({
        let (app, stop, session) = (Arc::clone(&app), Arc::clone(&stop), session.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                app.send_heartbeat(&heartbeat("p-1", Some(&session), &now()))
                    .await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    });
    app.wait_for_phone("p-1", |p| p["current_session_id"] == session.as_str())
        .await;

    let lock = WriteLock::take_phones_letting_reads(&app.db).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    lock.release().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    beating.await.unwrap();

    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    let failed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("cphub_heartbeat_flush_failures_total "))
        .map(|v| v.parse::<f64>().unwrap());
    assert!(
        failed.is_some_and(|n| n >= 1.0),
        "the outage failed a flush: {failed:?}"
    );
    let after = app.session(&session).await.unwrap();
    assert_eq!(after["state"], "playing", "{after}");
}

backend_tests!(
    an_exhausted_pool_means_503_with_retry_after,
    a_database_outage_longer_than_the_stale_time_abandons_no_session,
);

/// The players of an outage test: told when to stop, counting the 503s they get.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    unavailable: AtomicUsize,
}

/// Plays sessions on its own phone, redelivering on 503 as a phone would, until told to
/// stop; returns what was acknowledged.
async fn play_through_outage(
    app: Arc<TestApp>,
    n: usize,
    load: Arc<Load>,
) -> Vec<(String, &'static str)> {
    let mut acked = Vec::new();
    for k in 0.. {
        let (session, events) = played_session(n, k);
        for (kind, body) in events {
            loop {
                let res = app.post_event(&body).await;
                if res.status() == 200 {
                    acked.push((session.clone(), kind));
                    break;
                }
                assert_unavailable(res).await;
                load.unavailable.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if load.stop.load(Ordering::SeqCst) {
            break;
        }
    }
    acked
}

/// Eight players keep playing while `fault` strikes the link to PostgreSQL twice. Each
/// time the link is restored only after the players have been answered 503 sixteen more
/// times — if cphub hung on the fault they would not be, and the 20 s guard fails the
/// test. Every answer is a 200 or a 503 with `Retry-After`, every acknowledged event is
/// in the book exactly once (no 200 without a commit), and cphub serves again after each
/// fault without a restart.
async fn outage_under_load(fault: fn(&Proxy)) {
    if !crate::helpers::postgres_available() {
        return;
    }
    let (proxy, app) =
        behind_a_proxy("[database]\nacquire_timeout_ms = 300\nwrite_timeout_ms = 1000\n").await;
    let (app, load) = (Arc::new(app), Arc::new(Load::default()));
    let players: Vec<_> = (0..8)
        .map(|n| tokio::spawn(play_through_outage(Arc::clone(&app), n, Arc::clone(&load))))
        .collect();

    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = load.unavailable.load(Ordering::SeqCst);
        fault(&proxy);
        let answered = async {
            while load.unavailable.load(Ordering::SeqCst) < before + 16 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), answered)
            .await
            .expect("503s during the fault, not a hang");
        proxy.restore();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.stop.store(true, Ordering::SeqCst);
    let mut acked = Vec::new();
    for player in players {
        acked.extend(player.await.unwrap());
    }

    assert_applied_once(&app, &acked).await;
    let res = app.get("/api/v1/sessions?limit=1", Some(TOKEN)).await;
    assert_eq!(res.status(), 200, "serves again after the faults");
}

/// PostgreSQL stopped (connections closed, new ones refused) under load.
#[test]
fn postgres_cut_under_load_acknowledges_only_commits() {
    crate::helpers::run_scenario("postgres_cut_under_load_acknowledges_only_commits", async {
        outage_under_load(Proxy::cut).await;
    })
}

/// The network to PostgreSQL drops everything silently (a partition, not a stopped
/// server) under load: writes in the middle of a transaction wait for an answer that never
/// comes, so only cphub's own bound (`database.write_timeout_ms`) turns them into 503s.
#[test]
fn a_silent_postgres_under_load_means_503_not_a_hang() {
    crate::helpers::run_scenario("a_silent_postgres_under_load_means_503_not_a_hang", async {
        outage_under_load(Proxy::silence).await;
    })
}
