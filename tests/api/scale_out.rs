//! Scale-out: three `cphub serve` replicas (the built binary) on one PostgreSQL database,
//! behind a real haproxy balancing round-robin with health checks on `/readyz`, and the
//! simulator's fleet and control plane. Every callback and mint goes through haproxy, so one
//! session's mint, sign check (6.1), enter (6.2), heartbeats (6.4) and quit (6.3) land on
//! different replicas. Meanwhile the watchdog's leader is `kill -9`ed and later restarted,
//! and another replica is stopped with SIGTERM. Then the book must hold everything cphub
//! acknowledged, count nothing twice, never have given a phone to two sessions at once, and
//! have had one watchdog leader at a time, which restarted the phone that fell silent once.
//! A rollout of a new game version over every phone (5.3.7) runs through the kills, driven
//! by whichever replica leads: it ends done, each phone updated exactly once, and no session
//! was cut short by an update nor minted onto a drained phone.
//! Every replica sends webhooks to a receiver in the test: every session.started and
//! session.ended of the book must arrive, under one id per fact, and an event arrives twice
//! only if a replica died between its two arrivals (the lease of a delivery cut short lapses
//! and another replica sends it again): exactly once while no replica dies.
//!
//! Needs haproxy on PATH (`scripts/test` installs it); without it the test says so in one
//! line and passes, unless `CPHUB_TEST_REQUIRE_HAPROXY=1` (set by CI) makes that a failure.
//! `scripts/scale-out` runs the same scenario longer with more phones
//! (`CPHUB_SCALE_OUT_PHONES`, `CPHUB_SCALE_OUT_SESSIONS`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use cphub::cph::model::job_status;
use cphub::simulator::fleet::{JobKind, SimJob};
use cphub::simulator::{Acked, Acknowledged, DEFAULT_APP, SimOptions, Simulator};
use serde_json::{Value, json};
use tempfile::TempDir;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::binary::{Served, cphub, start_serve, stop};
use crate::helpers::{Backend, TOKEN, TestDb, postgres_available};
use crate::simulation::{configure_callbacks, players};
use crate::watchdog::free_port;

const REPLICAS: usize = 3;
/// Players who wait in the queue (through haproxy) while the replicas are killed.
const QUEUED: usize = 6;

/// Whether haproxy can be run; without it, one line on stderr, or a failure under
/// `CPHUB_TEST_REQUIRE_HAPROXY=1`: CI must not pass by skipping the scale-out test.
fn haproxy_available() -> bool {
    if Command::new("haproxy").arg("-v").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CPHUB_TEST_REQUIRE_HAPROXY").as_deref() != Ok("1"),
        "CPHUB_TEST_REQUIRE_HAPROXY=1 but haproxy is not on PATH: apt-get install -y haproxy"
    );
    eprintln!("skipping the scale-out test: haproxy is not installed (apt-get install -y haproxy)");
    false
}

/// The balancer as docs/scaling.md recommends it: round-robin, a replica out after two
/// failed `/readyz` checks (each given 2 s: a replica slowed by a busy machine is not dead); retries only when the connection failed (the request never
/// reached cphub, so resending it is safe on every route, a mint without `Idempotency-Key`
/// included), sent to another replica. A request whose replica died mid-way is answered 502
/// and resent by its sender, the phone's engine or the player, which knows what it sent.
fn haproxy_config(front: u16, replicas: &[u16]) -> String {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, port)| format!("  server r{i} 127.0.0.1:{port} check\n"))
        .collect();
    format!(
        "defaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  timeout server 30s\n\
         \x20 retries 3\n  option redispatch 1\n  retry-on conn-failure\n\
         frontend callbacks\n  bind 127.0.0.1:{front}\n  default_backend cphub\n\
         backend cphub\n  balance roundrobin\n  option httpchk GET /readyz\n\
         \x20 http-check expect status 200\n  timeout check 2s\n\
         \x20 default-server inter 500ms fall 2 rise 2\n{servers}"
    )
}

struct Haproxy {
    child: Child,
    address: String,
    _dir: TempDir,
}

impl Haproxy {
    fn start(replicas: &[u16]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let front = free_port();
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, haproxy_config(front, replicas)).unwrap();
        // -db: foreground, no daemon; its warnings go to the test's output.
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        // Owned by the guard at once, so a haproxy that never listens is killed too.
        let proxy = Haproxy {
            child,
            address: format!("http://127.0.0.1:{front}"),
            _dir: dir,
        };
        for _ in 0..100 {
            if TcpStream::connect(("127.0.0.1", front)).is_ok() {
                return proxy;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("haproxy did not listen on {front}");
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One replica's port (fixed, as haproxy's configuration names it) and process, if running.
struct Replica {
    port: u16,
    served: Option<Served>,
}

/// A replica left running by a failed assertion would outlive the test: ended with it.
impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(served) = &mut self.served {
            let _ = served.child.kill();
            let _ = served.child.wait();
        }
    }
}

/// How each replica is started: the simulator's control plane for phone sync and the
/// watchdog, shortened timings (1 s heartbeats, stale after 8 missed: neither a heartbeat lost
/// with a killed replica's buffer nor a machine busy with the rest of the suite may make a
/// healthy phone look stale), short holds so a mint
/// whose answer died with its replica frees its phone soon.
fn replica_command(cluster: &Cluster, port: u16) -> Command {
    let (db, simulator, options) = (&cluster.db, &cluster.simulator, &cluster.options);
    let mut cmd = cphub(db);
    cmd.arg("--config").arg(cluster.hooks.config());
    for (key, value) in [
        ("SERVER__LISTEN", format!("127.0.0.1:{port}")),
        ("SERVER__WORKERS", "2".into()),
        ("SERVER__SHUTDOWN_TIMEOUT_SECS", "5".into()),
        ("DATABASE__MAX_CONNECTIONS", "4".into()),
        ("HEARTBEATS__FLUSH_INTERVAL_MS", "200".into()),
        ("FLEET__HEARTBEAT_INTERVAL_SECS", "1".into()),
        ("FLEET__MISS_THRESHOLD", "8".into()),
        ("ACCESS__TICKET_TTL_SECS", "10".into()),
        ("ACCESS__ENTER_TIMEOUT_SECS", "10".into()),
        ("CPH__ENDPOINT", simulator.cph_endpoint()),
        ("CPH__PROJECT_ID", options.project_id.clone()),
        ("CPH__JOB_POLL_INTERVAL_MS", "50".into()),
        ("CPH__SYNC_INTERVAL_SECS", "1".into()),
        ("CPH__AUTH__AK", options.ak.clone()),
        ("CPH__AUTH__SK", options.sk.clone()),
        ("WATCHDOG__INTERVAL_MS", "100".into()),
        ("WATCHDOG__STARTUP_GRACE_SECS", "0".into()),
    ] {
        cmd.env(format!("CPHUB__{key}"), value);
    }
    cmd
}

/// The replicas and what is needed to restart one.
struct Cluster {
    db: TestDb,
    replicas: Vec<Replica>,
    simulator: Simulator,
    options: SimOptions,
    client: reqwest::Client,
    /// The most replicas seen leading at once, over every scrape.
    most_leaders: usize,
    hooks: Hooks,
    /// When each replica was gone (`kill -9` or SIGTERM done).
    deaths: Vec<Instant>,
    /// The rollout's id, once started (just before the first `kill -9`).
    rollout: Option<i64>,
}

impl Cluster {
    /// Started one after the other, so that only the first applies the migrations. Waiting
    /// for its port blocks a thread: not one of the runtime's, where the simulated phones
    /// heartbeat (stalled, they would look stale to the watchdog).
    async fn start_replica(&mut self, i: usize) {
        let port = self.replicas[i].port;
        let mut cmd = replica_command(self, port);
        let served = tokio::task::spawn_blocking(move || start_serve(&mut cmd));
        self.replicas[i].served = Some(served.await.unwrap());
    }

    /// Which live replicas report `cphub_watchdog_leader 1`. Scraped between kills and
    /// restarts, never during one, so a replica cannot die between two scrapes.
    async fn leaders(&mut self) -> Vec<usize> {
        let mut leaders = Vec::new();
        for (i, replica) in self.replicas.iter().enumerate() {
            let Some(served) = &replica.served else {
                continue;
            };
            let url = format!("{}/metrics", served.address);
            let text = self
                .client
                .get(url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.lines().any(|line| line == "cphub_watchdog_leader 1") {
                leaders.push(i);
            }
        }
        self.most_leaders = self.most_leaders.max(leaders.len());
        leaders
    }

    /// Scrapes every 200 ms for `secs`, then waits (without bound on the scrapes, within a
    /// minute) until one replica leads.
    async fn watch(&mut self, secs: u64) -> usize {
        for _ in 0..secs * 5 {
            self.leaders().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        for _ in 0..300 {
            if let [leader] = self.leaders().await[..] {
                return leader;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("no replica took the watchdog's lease");
    }

    /// One round: the leader `kill -9`ed, restarted once another leads, then that one
    /// stopped with SIGTERM and restarted. In the first, a phone falls silent just before
    /// the leader dies: it is noticed by the next leader, and must be restarted once.
    async fn kill_and_restart(&mut self, round: u64, api: &Api) {
        let leader = self.watch(3).await;
        if round == 0 {
            let phones = self.simulator.phone_ids();
            let rollout = api.start_rollout(&self.simulator, phones.len()).await;
            // Updated before it falls silent: the watchdog leaves a phone the rollout is
            // updating alone, so a phone silent during its update fails it only at the
            // drain deadline (a minute), and the rollout pauses.
            api.wait_until_updated(rollout, &phones[0]).await;
            self.rollout = Some(rollout);
            self.simulator.fleet.lock().phones[0].faults.silent = true;
        }
        self.kill_9(leader);
        let next = self.watch(4).await;
        self.start_replica(leader).await;
        self.watch(3).await;
        self.sigterm(next).await;
        self.watch(2).await;
        self.start_replica(next).await;
        eprintln!(
            "round {round}: replica {leader} killed -9 and restarted, {next} stopped and restarted"
        );
    }

    fn kill_9(&mut self, i: usize) {
        let mut served = self.replicas[i].served.take().unwrap();
        served.child.kill().unwrap();
        served.child.wait().unwrap();
        self.deaths.push(Instant::now());
    }

    async fn sigterm(&mut self, i: usize) {
        let served = self.replicas[i].served.take().unwrap();
        let status = stop(served.child).await;
        assert!(
            status.success(),
            "SIGTERM ends a replica with 0: {status:?}"
        );
        self.deaths.push(Instant::now());
    }
}

/// The scenario's size (phones, sessions, rounds of kill -9 and SIGTERM): the test's is
/// small; `scripts/scale-out` raises it.
fn sizes() -> (usize, u64, u64) {
    let read = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        read("CPHUB_SCALE_OUT_PHONES", 8) as usize,
        read("CPHUB_SCALE_OUT_SESSIONS", 60),
        read("CPHUB_SCALE_OUT_ROUNDS", 1).max(1),
    )
}

#[test]
fn three_replicas_behind_haproxy_survive_kill_9_and_sigterm() {
    crate::helpers::run_scenario(
        "three_replicas_behind_haproxy_survive_kill_9_and_sigterm",
        async {
            if !postgres_available() || !haproxy_available() {
                return;
            }
            let (phones, sessions, rounds) = sizes();
            let ports: Vec<u16> = (0..REPLICAS).map(|_| free_port()).collect();
            let proxy = Haproxy::start(&ports);
            let mut cluster = start_cluster(&ports, &proxy.address, phones, sessions).await;
            configure_callbacks(&proxy.address, &cluster.simulator, &cluster.options).await;
            let setup_boots = boots(&cluster.simulator);
            let api = Api::new(&proxy.address);

            let queued = tokio::spawn(queue_players(proxy.address.clone(), QUEUED));
            for round in 0..rounds {
                cluster.kill_and_restart(round, &api).await;
            }
            let rollout = cluster.rollout.expect("started in the first round");

            let queued = queued.await.unwrap();
            api.wait_until_quiet(&cluster, sessions).await;
            api.wait_for_restart(&cluster.simulator.phone_ids()[0])
                .await;
            let acked = cluster.simulator.stats.acknowledged();
            let played = cluster.simulator.stats.played();
            let book = api.all_sessions().await;
            eprintln!(
                "scale-out: {} acknowledgements, {} sessions played, {} in the book; {}",
                acked.len(),
                played.len(),
                book.len(),
                cluster.simulator.stats.summary(&cluster.simulator.fleet)
            );

            assert_acknowledged_kept(&acked, &book);
            assert_played_as_recorded(&played, &book);
            assert_events_once(&api, &played).await;
            assert_counted_once(&book, &api.usage_totals().await);
            assert_no_phone_shared(&book);
            assert_queue_served_each_once(&queued, &book);
            let received = cluster.hooks.wait_for(&expected_hooks(&book)).await;
            assert_hooks_once_but_across_deaths(&received, &cluster.deaths);
            assert_eq!(cluster.most_leaders, 1, "one watchdog leader at a time");
            assert_eq!(cluster.leaders().await.len(), 1);
            checked("cphub_watchdog_leader summed over the live replicas never exceeded 1");
            let rolled = api.wait_for_rollout_done(rollout).await;
            assert_rollout_acted_once(&cluster, &rolled, &book, &queued);
            assert_no_session_cut_by_update(&cluster.simulator, &acked, &played);
            let restarts = restarts_by_phone(&cluster.simulator, &setup_boots);
            assert_one_recovery(&api.recoveries().await, &restarts, &cluster.simulator);
            cluster.simulator.stop().await;
        },
    )
}

/// The simulator first (the replicas need its control plane), its players minting through
/// haproxy from the start (answered 503 until phones heartbeat), then the replicas.
async fn start_cluster(ports: &[u16], proxy: &str, phones: usize, sessions: u64) -> Cluster {
    let db = TestDb::new(Backend::Postgres).await;
    let mut options = players(proxy, phones, sessions, 3);
    // The engine's habits: re-deliveries, a quit overtaking its enter.
    options.duplicate_rate = 0.2;
    options.reorder_rate = 0.1;
    let simulator = Simulator::start(options.clone()).await.unwrap();
    let mut cluster = Cluster {
        db,
        replicas: ports
            .iter()
            .map(|&port| Replica { port, served: None })
            .collect(),
        simulator,
        options,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        most_leaders: 0,
        hooks: Hooks::start().await,
        deaths: Vec::new(),
        rollout: None,
    };
    for i in 0..REPLICAS {
        cluster.start_replica(i).await;
    }
    cluster
}

/// Each phone's boot count now.
fn boots(simulator: &Simulator) -> Vec<u64> {
    simulator
        .fleet
        .lock()
        .phones
        .iter()
        .map(|p| p.boots)
        .collect()
}

/// Restarts and resets each phone went through since the fleet was set up, by phone id: its
/// boots less the rollout's installs (an install restarts the game too, 5.3.7).
fn restarts_by_phone(simulator: &Simulator, setup: &[u64]) -> BTreeMap<String, u64> {
    let installed = update_jobs(simulator, true);
    let fleet = simulator.fleet.lock();
    let pairs = fleet.phones.iter().zip(setup);
    pairs
        .map(|(p, before)| {
            let installs = installed.get(&p.phone_id).map_or(0, Vec::len) as u64;
            (p.phone_id.clone(), p.boots - before - installs)
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The 5.3.7 jobs the control plane ran, by phone (one per call: the rollout has one
/// version, Table 5-36), only those that installed when `succeeded`.
fn update_jobs(simulator: &Simulator, succeeded: bool) -> BTreeMap<String, Vec<SimJob>> {
    let fleet = simulator.fleet.lock();
    let mut by_phone: BTreeMap<String, Vec<SimJob>> = BTreeMap::new();
    let updates = (fleet.jobs.values()).filter(|j| j.kind == JobKind::UpdateAppVersion);
    for job in updates.filter(|j| !succeeded || j.status == job_status::SUCCEEDED) {
        let phone = job.phone_id.clone().expect("an update names its phone");
        by_phone.entry(phone).or_default().push(job.clone());
    }
    by_phone
}

/// The operator API through haproxy, as an operator would read it.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(proxy: &str) -> Api {
        Api {
            base: format!("{proxy}/api/v1"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    async fn get(&self, path_and_query: &str) -> Value {
        let res = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "GET {path_and_query}");
        res.json().await.unwrap()
    }

    /// Every session of the book, paging through the list.
    async fn all_sessions(&self) -> Vec<Value> {
        let mut sessions = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = self.get(&format!("/sessions?limit=1000{cursor}")).await;
            sessions.extend(page["sessions"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return sessions,
            }
        }
    }

    /// Once phone sync lists every phone with the game (5.1.2), a rollout of a new version
    /// over all of them, pushed first (5.3.4): a canary, then batches of a quarter of the
    /// fleet (at least two); a drain deadline far above a session (3 s) and the silent
    /// phone's recovery, so no phone is skipped. Its id. Started right before the first
    /// `kill -9` (once its canary is done), so the leader dies while it runs: started before
    /// the kills, it ended before the first one in one run of ten under CPU load.
    async fn start_rollout(&self, simulator: &Simulator, phones: usize) -> i64 {
        // Answered 503 until haproxy has seen the replicas ready.
        let listed = || async {
            let url = format!("{}/phones?app_id={DEFAULT_APP}", self.base);
            let res = self
                .client
                .get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            let page: Value = res.json().await.unwrap_or_default();
            page["phones"].as_array().map_or(0, Vec::len)
        };
        for _ in 0..300 {
            if listed().await == phones {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let version = simulator.fleet.lock().new_version(DEFAULT_APP).unwrap();
        let body = json!({
            "app_id": DEFAULT_APP, "app_version_ids": [version], "canary": 1,
            "batch_size": (phones / 4).max(2), "max_failures": 0,
            "drain_deadline_secs": 60, "push_first": true,
        });
        let res = (self.client.post(format!("{}/rollouts", self.base)))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let rollout: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{rollout}");
        rollout["id"].as_i64().unwrap()
    }

    /// Until the rollout's phone `phone_id` is done (the canary: phones are taken in id
    /// order), within a minute.
    async fn wait_until_updated(&self, id: i64, phone_id: &str) {
        for _ in 0..300 {
            let rollout = self.get(&format!("/rollouts/{id}")).await;
            let phones = rollout["phones"].as_array().cloned().unwrap_or_default();
            let phone = phones.iter().find(|p| p["phone_id"] == phone_id);
            if phone.is_some_and(|p| p["state"] == "done") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{phone_id} not updated by rollout {id} within a minute");
    }

    /// Until the rollout ended (done, aborted, or paused by a failure), within a minute.
    async fn wait_for_rollout_done(&self, id: i64) -> Value {
        for _ in 0..300 {
            let rollout = self.get(&format!("/rollouts/{id}")).await;
            if rollout["state"] != "running" {
                return rollout;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("rollout {id} still running after a minute");
    }

    async fn recoveries(&self) -> Vec<Value> {
        let log = self.get("/recoveries?limit=1000").await;
        log["recoveries"].as_array().unwrap().clone()
    }

    async fn usage_totals(&self) -> Value {
        let usage = self.get("/usage?from=2000-01-01&to=2100-01-01").await;
        usage["totals"].clone()
    }

    /// Until the players minted every session, no session is minted, verified or playing
    /// any more (quit, expired or abandoned), and none that a quit ended still waits for
    /// its enter: then nothing is still on its way. The last matters because the phones
    /// reorder (`reorder_rate`; 6.2 and 6.3 say nothing of delivery order): a quit that
    /// overtook its enter ends the session with no start, and the enter then starts it and
    /// bills it after the book was read (one run in CI counted 60 sessions in the usage
    /// report and 59 in the book so).
    async fn wait_until_quiet(&self, cluster: &Cluster, sessions: u64) {
        // A guard against a hang, not a timing: 60 s plus 2 s per session.
        for _ in 0..300 + sessions * 10 {
            let minted = cluster
                .simulator
                .stats
                .acknowledged()
                .iter()
                .filter(|a| a.what == Acked::Mint)
                .count() as u64;
            if minted >= sessions && self.unsettled().await == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let open = self.get("/sessions?state=playing").await;
        let rollout = match cluster.rollout {
            Some(id) => self.get(&format!("/rollouts/{id}")).await,
            None => Value::Null,
        };
        panic!(
            "the fleet never settled: {}; playing: {open}; rollout: {rollout}; phones: {}",
            cluster.simulator.stats.summary(&cluster.simulator.fleet),
            self.get("/phones").await
        );
    }

    /// Until the silent phone's restart succeeded (it is noticed 8 s after its last
    /// heartbeat, possibly after the sessions settled).
    async fn wait_for_restart(&self, phone_id: &str) {
        for _ in 0..300 {
            let log = self.get(&format!("/recoveries?phone_id={phone_id}")).await;
            let mut recoveries = log["recoveries"].as_array().unwrap().iter();
            if recoveries.any(|r| r["action"] == "restart" && r["outcome"] == "succeeded") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("{phone_id} fell silent and was never restarted");
    }

    /// Sessions still open (minted, verified or playing) or that a quit ended before their
    /// enter came (`domain::Session::missing_start`): one read of the book for both.
    async fn unsettled(&self) -> usize {
        let book = self.all_sessions().await;
        let open =
            |s: &&Value| ["minted", "verified", "playing"].contains(&s["state"].as_str().unwrap());
        let missing_start = |s: &&Value| s["started_at"].is_null() && s["ended_at"].is_string();
        book.iter().filter(|s| open(s) || missing_start(s)).count()
    }
}

fn by_id(book: &[Value]) -> HashMap<&str, &Value> {
    book.iter()
        .map(|s| (s["session_id"].as_str().unwrap(), s))
        .collect()
}

/// Every 2xx the fleet got is in the book, whichever replica gave it and whatever became of
/// that replica: a mint's session on its phone, a sign check's `verified_at`, an enter's
/// start, a quit's end (or its run_time on a session abandoned before it came).
fn assert_acknowledged_kept(acked: &[Acknowledged], book: &[Value]) {
    let book = by_id(book);
    for ack in acked {
        let session = book
            .get(ack.session_id.as_str())
            .unwrap_or_else(|| panic!("{ack:?} acknowledged, not in the book"));
        assert_eq!(
            session["phone_id"],
            ack.phone_id.as_str(),
            "{ack:?}: {session}"
        );
        let kept = match ack.what {
            Acked::Mint => true,
            Acked::SignCheck => session["verified_at"].is_string(),
            Acked::Enter => session["started_at"].is_string(),
            // A session the watchdog abandoned first keeps that verdict; the quit then
            // leaves its run_time (domain::Session::apply).
            Acked::Quit => session["state"] == "ended" || session["reported_run_time"].is_i64(),
        };
        assert!(kept, "{ack:?} acknowledged, lost: {session}");
    }
    let kinds: HashSet<Acked> = acked.iter().map(|a| a.what).collect();
    assert_eq!(kinds.len(), 4, "the run exercised every kind: {kinds:?}");
    checked(&format!(
        "{} acknowledged mints, sign checks, enters and quits are all in the book",
        acked.len()
    ));
}

/// What `scripts/scale-out` prints.
fn checked(what: &str) {
    eprintln!("checked: {what}");
}

/// Each session the phones played to its quit is recorded with the length they played.
fn assert_played_as_recorded(played: &[cphub::simulator::PlayedSession], book: &[Value]) {
    assert!(!played.is_empty());
    let book = by_id(book);
    for session in played {
        let recorded = book[session.session_id.as_str()];
        assert_eq!(
            recorded["duration_seconds"], session.duration_secs,
            "{recorded}"
        );
    }
    checked(&format!(
        "{} played sessions recorded with the length played",
        played.len()
    ));
}

/// However often the phones delivered an enter or quit, and to whichever replicas, each
/// played session has exactly one accepted enter and one accepted quit.
async fn assert_events_once(api: &Api, played: &[cphub::simulator::PlayedSession]) {
    for session in played {
        let recorded = api.get(&format!("/sessions/{}", session.session_id)).await;
        let events = recorded["events"].as_array().unwrap();
        for kind in ["enter", "quit"] {
            let accepted = events
                .iter()
                .filter(|e| e["kind"] == kind && e["outcome"] == "accepted")
                .count();
            assert_eq!(accepted, 1, "one accepted {kind}: {recorded}");
        }
    }
    checked("each played session has one accepted enter and one accepted quit");
}

/// Sessions and seconds counted once: the usage report (rollups written by triggers in each
/// replica's transactions) equals the book's sessions.
fn assert_counted_once(book: &[Value], totals: &Value) {
    let started: Vec<&Value> = book
        .iter()
        .filter(|s| s["started_at"].is_string())
        .collect();
    let seconds: i64 = started
        .iter()
        .filter_map(|s| s["duration_seconds"].as_i64())
        .sum();
    assert_eq!(totals["sessions"], started.len(), "{totals}");
    assert_eq!(totals["seconds"], seconds, "{totals}");
    assert_eq!(totals["open_sessions"], 0, "{totals}");
    checked(&format!(
        "usage counts {} sessions, {seconds} s, as the book holds them: nothing twice",
        started.len()
    ));
}

/// No phone played two sessions at once: on each phone, each session started after the
/// previous one ended (phone-clock times, whole seconds).
fn assert_no_phone_shared(book: &[Value]) {
    let mut by_phone: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for s in book.iter().filter(|s| s["started_at"].is_string()) {
        let ended = s["ended_at"].as_str().expect("every started session ended");
        by_phone
            .entry(s["phone_id"].as_str().unwrap())
            .or_default()
            .push((s["started_at"].as_str().unwrap(), ended));
    }
    for (phone, mut spans) in by_phone {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "{phone} played {:?} and {:?} at once",
                pair[0],
                pair[1]
            );
        }
    }
    checked("no phone played two sessions at once");
}

/// The rollout ran through the first `kill -9` of the leader and ended done, every phone
/// done after one attempt, and the control plane ran exactly one 5.3.7 update per phone:
/// the replicas that led in turn never sent one twice. No session was minted onto a phone
/// between its drain and its return to the pool, and none was being played when its phone's
/// update installed (times in whole seconds, as the jobs show them, 4.4.1).
fn assert_rollout_acted_once(
    cluster: &Cluster,
    rollout: &Value,
    book: &[Value],
    queued: &[QueuedPlayer],
) {
    assert_eq!(rollout["state"], "done", "{rollout}");
    let updates = update_jobs(&cluster.simulator, false);
    let phones = rollout["phones"].as_array().unwrap();
    assert_eq!(
        phones.len(),
        cluster.simulator.phone_ids().len(),
        "{rollout}"
    );
    for phone in phones {
        let phone_id = phone["phone_id"].as_str().unwrap();
        assert_eq!(phone["state"], "done", "{phone}");
        assert_eq!(phone["attempts"], 1, "{phone}");
        let jobs = updates.get(phone_id).map_or(&[][..], Vec::as_slice);
        assert_eq!(jobs.len(), 1, "one 5.3.7 update of {phone_id}: {jobs:?}");
        let on_phone: Vec<&Value> = (book.iter())
            .filter(|s| s["phone_id"] == phone_id)
            .collect();
        assert_none_minted_while_drained(phone, &on_phone, queued);
        assert_none_played_across(&jobs[0], &on_phone);
    }
    checked(&format!(
        "the rollout ran through the leader's kill -9 and updated each of {} phones once; \
         no session minted on a drained phone or cut short by its update",
        phones.len()
    ));
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().and_then(|t| t.parse().ok())
}

/// No session of the phone was minted between its drain and its return to the pool. When
/// the pick happened is bounded, not known: not before the session's `created_at` (the
/// replica's clock read before its transaction, which may wait for a connection: a mint
/// read at 48.4 s can pick at 48.7 s, after the phone came back at 48.6 s), and not after
/// the first thing that followed it: the sign check (`verified_at`) or, for a queued
/// player, the poll's answer. Both bounds inside the drain prove a pick inside it; a
/// session never verified nor queued has no upper bound and is not judged here.
fn assert_none_minted_while_drained(phone: &Value, sessions: &[&Value], queued: &[QueuedPlayer]) {
    let drained = time(&phone["drained_at"]).expect("drained");
    let back = time(&phone["finished_at"]).expect("finished");
    for session in sessions {
        let created = time(&session["created_at"]).unwrap();
        let answered = (queued.iter())
            .find(|q| session["session_id"] == q.session_id.as_str())
            .map(|q| q.answered_at);
        let Some(picked_by) = time(&session["verified_at"]).or(answered) else {
            continue;
        };
        assert!(
            !(drained < created && picked_by < back),
            "{session} minted while drained: {phone}"
        );
    }
}

/// Every session started on the phone ended before its update was sent or started after
/// it installed. Book times are cut to whole seconds as the job's are: a phone's enter time
/// is already whole (cut down), so the cut can hide an overlap shorter than a second, never
/// invent one.
fn assert_none_played_across(job: &SimJob, sessions: &[&Value]) {
    let second = |t: DateTime<Utc>| t.duration_trunc(TimeDelta::seconds(1)).unwrap();
    let sent: DateTime<Utc> = job.begin_time.parse().unwrap();
    let installed: DateTime<Utc> = job.end_time.as_deref().unwrap().parse().unwrap();
    for session in sessions.iter().filter(|s| s["started_at"].is_string()) {
        let started = second(time(&session["started_at"]).unwrap());
        let ended = second(time(&session["ended_at"]).expect("every started session ended"));
        assert!(
            ended <= sent || started >= installed,
            "{session} in play across the update {job:?}"
        );
    }
}

/// The simulator's own view: a session whose sign check was answered and that the phone
/// did not play to its quit was cut short on the phone. Only the phone that fell silent
/// may have lost one (the session it was playing then); an update that restarted a game
/// mid-session would show here, whatever the book recorded.
fn assert_no_session_cut_by_update(
    simulator: &Simulator,
    acked: &[Acknowledged],
    played: &[cphub::simulator::PlayedSession],
) {
    let played: HashSet<&str> = played.iter().map(|p| p.session_id.as_str()).collect();
    let cut: Vec<&Acknowledged> = (acked.iter())
        .filter(|a| a.what == Acked::SignCheck && !played.contains(a.session_id.as_str()))
        .collect();
    let silent = &simulator.phone_ids()[0];
    assert!(
        cut.len() <= 1 && cut.iter().all(|a| &a.phone_id == silent),
        "sessions cut short on the phones: {cut:?}"
    );
    checked("no session cut short on a phone but the silent one's");
}

/// The phone that fell silent was restarted exactly once (one incident, one action, though
/// the leader that noticed it was killed), and no other phone was touched: the control
/// plane's boots and the recovery log agree.
fn assert_one_recovery(log: &[Value], restarts: &BTreeMap<String, u64>, simulator: &Simulator) {
    let silent = simulator.phone_ids()[0].clone();
    assert_eq!(restarts, &BTreeMap::from([(silent.clone(), 1)]), "{log:?}");
    let actions: Vec<&Value> = log
        .iter()
        .filter(|r| r["action"] == "restart" || r["action"] == "reset")
        .collect();
    assert_eq!(actions.len(), 1, "{actions:?}");
    assert_eq!(actions[0]["phone_id"], silent.as_str());
    checked(&format!(
        "{silent} fell silent and was restarted once; no other phone was touched"
    ));
}

/// A player served from the wait queue: who, and the session and phone it was given.
#[derive(Debug)]
struct QueuedPlayer {
    user_id: String,
    session_id: String,
    phone_id: String,
    /// When the poll's answer came: the phone was picked before.
    answered_at: DateTime<Utc>,
}

/// `count` players join the queue and long-poll it through haproxy until each is given a
/// phone, resending what a dying replica did not answer (a resent poll is safe: it issues
/// the same session again, see docs/api.md).
async fn queue_players(proxy: String, count: usize) -> Vec<QueuedPlayer> {
    let tasks: Vec<_> = (0..count)
        .map(|i| tokio::spawn(wait_in_queue(proxy.clone(), format!("queued-{i}"))))
        .collect();
    let mut served = Vec::new();
    for task in tasks {
        served.push(task.await.unwrap());
    }
    served
}

async fn wait_in_queue(proxy: String, user_id: String) -> QueuedPlayer {
    let client = reqwest::Client::new();
    let body = serde_json::json!({"app_id": DEFAULT_APP, "user_id": user_id});
    let place = until_answered(|| {
        client
            .post(format!("{proxy}/api/v1/queue"))
            .bearer_auth(TOKEN)
            .json(&body)
    })
    .await;
    let queue_id = place["queue_id"].as_str().unwrap().to_owned();
    let session = until_answered(|| {
        client
            .get(format!("{proxy}/api/v1/queue/{queue_id}?wait_secs=2"))
            .bearer_auth(TOKEN)
    })
    .await;
    QueuedPlayer {
        answered_at: Utc::now(),
        user_id,
        session_id: session["session_id"].as_str().unwrap().to_owned(),
        phone_id: session["phone_id"].as_str().unwrap().to_owned(),
    }
}

/// Sends the request until it is answered 201: a 200 is a place still waiting, a 502 or
/// 503 a replica dying or the database busy. Anything else fails the test.
async fn until_answered(request: impl Fn() -> reqwest::RequestBuilder) -> Value {
    for _ in 0..600 {
        match request().send().await {
            Ok(res) if res.status() == 201 => return res.json().await.unwrap(),
            Ok(res) if [200, 502, 503].contains(&res.status().as_u16()) => {}
            Ok(res) => panic!(
                "queue answered {}: {}",
                res.status(),
                res.text().await.unwrap()
            ),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the queue never served");
}

/// Each queued player was given one session, on the phone the answer named, and the book
/// holds exactly that one session for them: the queue served nobody twice.
fn assert_queue_served_each_once(queued: &[QueuedPlayer], book: &[Value]) {
    let sessions: HashSet<&str> = queued.iter().map(|q| q.session_id.as_str()).collect();
    assert_eq!(sessions.len(), queued.len(), "{queued:?}");
    for player in queued {
        let theirs: Vec<&Value> = book
            .iter()
            .filter(|s| s["user_id"] == player.user_id.as_str())
            .collect();
        assert_eq!(theirs.len(), 1, "{player:?}: {theirs:?}");
        assert_eq!(theirs[0]["session_id"], player.session_id.as_str());
        assert_eq!(theirs[0]["phone_id"], player.phone_id.as_str());
    }
    checked(&format!(
        "{} queued players served once each, through replicas that died",
        queued.len()
    ));
}

/// The webhook receiver: a wiremock server recording each delivery with the moment it came.
struct Hooks {
    _server: MockServer,
    received: Arc<Mutex<Vec<Received>>>,
    dir: TempDir,
}

#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    id: String,
    data: Value,
}

struct Record(Arc<Mutex<Vec<Received>>>);

impl Respond for Record {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let envelope: Value = serde_json::from_slice(&request.body).expect("a JSON envelope");
        self.0.lock().unwrap().push(Received {
            at: Instant::now(),
            id: envelope["id"].as_str().expect("an id").to_owned(),
            data: envelope["data"].clone(),
        });
        ResponseTemplate::new(200)
    }
}

impl Hooks {
    async fn start() -> Hooks {
        let server = MockServer::start().await;
        let received = Arc::new(Mutex::new(Vec::new()));
        Mock::given(method("POST"))
            .and(path("/hook"))
            .respond_with(Record(Arc::clone(&received)))
            .mount(&server)
            .await;
        let dir = tempfile::tempdir().unwrap();
        // Sessions only; a short attempt timeout, so the lease of a delivery whose replica
        // died (timeout + 30 s) lapses sooner.
        let config = format!(
            "[webhooks]\nendpoints = [{{ name = \"billing\", url = \"{}/hook\", \
             secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"], \
             events = [\"session.started\", \"session.ended\"] }}]\n\
             poll_interval_ms = 100\ntimeout_ms = 2000\n",
            server.uri()
        );
        std::fs::write(dir.path().join("hooks.toml"), config).unwrap();
        Hooks {
            _server: server,
            received,
            dir,
        }
    }

    fn config(&self) -> std::path::PathBuf {
        self.dir.path().join("hooks.toml")
    }

    /// Until every expected id arrived (a delivery cut short by a death comes again once
    /// its lease lapses, 32 s later); what arrived.
    async fn wait_for(&self, expected: &HashSet<String>) -> Vec<Received> {
        for _ in 0..600 {
            let received = self.received.lock().unwrap().clone();
            let ids: HashSet<String> = received.iter().map(|r| r.id.clone()).collect();
            if expected.is_subset(&ids) {
                assert_eq!(&ids, expected, "only the book's facts arrive");
                checked(&format!(
                    "{} webhook events, every one the book holds",
                    ids.len()
                ));
                return received;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ids: HashSet<String> = (self.received.lock().unwrap().iter())
            .map(|r| r.id.clone())
            .collect();
        let missing: Vec<_> = expected.difference(&ids).collect();
        panic!("webhook events never delivered: {missing:?}");
    }
}

/// The ids of the session.started and session.ended events the book implies (docs/webhooks.md):
/// started once a session has its start, ended once it also has its end and end reason.
fn expected_hooks(book: &[Value]) -> HashSet<String> {
    let mut ids = HashSet::new();
    for s in book.iter().filter(|s| s["started_at"].is_string()) {
        let id = s["session_id"].as_str().unwrap();
        ids.insert(format!("evt_session.started_{id}"));
        if s["ended_at"].is_string() && s["end_reason"].is_string() {
            ids.insert(format!("evt_session.ended_{id}"));
        }
    }
    ids
}

/// One fact per id (every arrival of an id carries the same data), and an id arrives again
/// only across a replica's death: its first arrival before that death, the next after.
/// Between deaths, each event arrives once.
fn assert_hooks_once_but_across_deaths(received: &[Received], deaths: &[Instant]) {
    let mut by_id: HashMap<&str, Vec<&Received>> = HashMap::new();
    for r in received {
        by_id.entry(&r.id).or_default().push(r);
    }
    let mut again = 0;
    for (id, arrivals) in &by_id {
        assert!(
            arrivals.iter().all(|a| a.data == arrivals[0].data),
            "{id}: one fact per id: {arrivals:?}"
        );
        for pair in arrivals.windows(2) {
            let across = (deaths.iter()).any(|d| pair[0].at < *d && *d < pair[1].at);
            assert!(across, "{id} delivered twice with no replica dying between");
            again += 1;
        }
    }
    checked(&format!(
        "each webhook event delivered once, {again} again across a replica's death"
    ));
}
