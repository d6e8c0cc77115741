//! The fleet watchdog against the simulator: silent phones are restarted, phones whose
//! restart fails are reset with their callbacks, sessions on silent phones end abandoned,
//! budgets hold, dry-run calls nothing, and one replica acts at a time.
//! Timings are shortened (1 s heartbeats, stale after 2 s), never asserted.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cphub::cph::properties::HEARTBEAT_URL;
use cphub::simulator::control_plane::{ControlPlaneFaults, LostAnswer, Operation};
use cphub::simulator::fleet::JobKind;
use cphub::simulator::{SimOptions, Simulator};
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, TestDb, assert_error, poll_until};
use crate::simulation::{configure_callbacks, start_cphub, start_simulator};

/// A simulator and a cphub (with its watchdog) wired to each other.
pub(crate) struct Fleet {
    port: u16,
    pub(crate) app: TestApp,
    pub(crate) simulator: Simulator,
    pub(crate) options: SimOptions,
    /// Each phone's boots once set up: pointing the phones at cphub restarts them (4.3.9's
    /// properties take effect at the next restart), which is no recovery.
    setup_boots: Vec<u64>,
}

impl Fleet {
    /// cphub stopped as on SIGTERM, left down for `down`, and started again on the same
    /// database and port with `watchdog`; the simulated fleet runs on throughout.
    async fn restart_cphub(self, watchdog: &str, down: Duration) -> Fleet {
        let settings = cphub_settings(self.port, &self.simulator, &self.options, watchdog);
        let db = self.app.stop().await;
        tokio::time::sleep(down).await;
        Fleet {
            app: TestApp::spawn_on(db, &settings).await,
            ..self
        }
    }

    /// Restarts and resets phone `i` went through since the fleet was set up.
    fn boots(&self, i: usize) -> u64 {
        self.simulator.fleet.lock().phones[i].boots - self.setup_boots[i]
    }
}

/// Each phone's boot count now.
fn boot_counts(simulator: &Simulator) -> Vec<u64> {
    let fleet = simulator.fleet.lock();
    fleet.phones.iter().map(|p| p.boots).collect()
}

/// A port nothing listens on, for a server whose address must be known before it starts
/// (the simulator's callbacks name cphub's). Drawn below Linux's ephemeral range
/// (32768-60999): a port the kernel hands out for `:0` is free again once the probe
/// closes, and the suite's own outgoing connections draw from that range too, so one of
/// them could take it before cphub binds it (CI saw `AddrInUse`). Below it only another
/// test's probe could, at random among 12,000 ports.
pub(crate) fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let start = RandomState::new().hash_one(std::process::id()) % 12_000;
    (0..12_000u64)
        .map(|i| 20_000 + ((start + i) % 12_000) as u16)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("a free port below the ephemeral range")
}

pub(crate) fn simulator_options(
    port: u16,
    phones: usize,
    tune: impl FnOnce(&mut SimOptions),
) -> SimOptions {
    let mut options = SimOptions::defaults();
    options.phones = phones;
    options.cph_listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    options.cphub = format!("http://127.0.0.1:{port}");
    options.job_delay_ms = 100;
    options.faults_after_secs = 2;
    options.token = None;
    tune(&mut options);
    options
}

/// How quickly cphub acts in a fleet scenario.
#[derive(Clone, Copy)]
pub(crate) struct Pace {
    /// Phone sync every this long.
    pub sync_secs: u64,
    /// Missed one-second heartbeats after which a phone is silent.
    pub miss_threshold: u32,
    /// The watchdog looks this often.
    pub watchdog_interval_ms: u64,
    /// `cph.job_deadline_secs`: a started job is followed this long.
    pub job_deadline_secs: u64,
    /// More `[cph]` keys, one per line.
    pub cph: &'static str,
}

impl Pace {
    /// The watchdog tests' pace: a phone is silent after two seconds, the watchdog looks
    /// every 100 ms and phone sync runs every second, so a scenario plays out in seconds.
    pub(crate) const EAGER: Pace = Pace {
        sync_secs: 1,
        miss_threshold: 2,
        watchdog_interval_ms: 100,
        job_deadline_secs: 600,
        cph: "",
    };
}

pub(crate) fn cphub_settings(
    port: u16,
    simulator: &Simulator,
    options: &SimOptions,
    watchdog: &str,
) -> String {
    cphub_settings_paced(port, simulator, options, watchdog, Pace::EAGER)
}

pub(crate) fn cphub_settings_paced(
    port: u16,
    simulator: &Simulator,
    options: &SimOptions,
    watchdog: &str,
    pace: Pace,
) -> String {
    let Pace {
        sync_secs,
        miss_threshold,
        watchdog_interval_ms,
        job_deadline_secs,
        cph,
    } = pace;
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\
         [callbacks]\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [fleet]\nheartbeat_interval_secs = 1\nmiss_threshold = {miss_threshold}\n\
         [cph]\nendpoint = \"{}\"\nproject_id = \"{}\"\njob_poll_interval_ms = 50\nsync_interval_secs = {sync_secs}\n\
         job_deadline_secs = {job_deadline_secs}\n{cph}\
         [cph.auth]\nak = \"{}\"\nsk = \"{}\"\n\
         [watchdog]\ninterval_ms = {watchdog_interval_ms}\n{recovery_grace}\
         cooldown_secs = 2\nhourly_cap = 3\n{grace}{watchdog}",
        simulator.cph_endpoint(),
        options.project_id,
        options.ak,
        options.sk,
        grace = if watchdog.contains("startup_grace_secs") {
            ""
        } else {
            "startup_grace_secs = 0\n"
        },
        recovery_grace = if watchdog.contains("grace_after_recovery_secs") {
            ""
        } else {
            "grace_after_recovery_secs = 2\n"
        },
    )
}

pub(crate) async fn start(
    backend: Backend,
    phones: usize,
    watchdog: &str,
    tune: impl FnOnce(&mut SimOptions),
) -> Fleet {
    start_on(TestDb::new(backend).await, phones, watchdog, tune).await
}

async fn start_on(
    db: TestDb,
    phones: usize,
    watchdog: &str,
    tune: impl FnOnce(&mut SimOptions),
) -> Fleet {
    start_synced(db, phones, watchdog, Pace::EAGER, tune).await
}

async fn start_synced(
    db: TestDb,
    phones: usize,
    watchdog: &str,
    pace: Pace,
    tune: impl FnOnce(&mut SimOptions),
) -> Fleet {
    let port = free_port();
    let options = simulator_options(port, phones, tune);
    let simulator = start_simulator(&options).await;
    let settings = cphub_settings_paced(port, &simulator, &options, watchdog, pace);
    let app = start_cphub(db, &settings).await;
    configure_callbacks(&app.address, &simulator, &options).await;
    Fleet {
        port,
        app,
        setup_boots: boot_counts(&simulator),
        simulator,
        options,
    }
}

pub(crate) async fn recoveries(app: &TestApp, phone_id: &str) -> Vec<Value> {
    let res = app
        .get(
            &format!("/api/v1/recoveries?phone_id={phone_id}"),
            Some(TOKEN),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["recoveries"].as_array().unwrap().clone()
}

/// Polls the recovery log of `phone_id` until `check` holds (300 polls, 30 s when answers
/// are quick, and never more than 90 s however slow they are).
pub(crate) async fn wait_for_recoveries(
    app: &TestApp,
    phone_id: &str,
    check: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let every = Duration::from_millis(100);
    let fetch = || recoveries(app, phone_id);
    match poll_until(300, every, Duration::from_secs(90), fetch, |log| check(log)).await {
        Ok(log) => log,
        Err(last) => panic!("recovery log never matched: {:?}", last.unwrap_or_default()),
    }
}

pub(crate) fn has(log: &[Value], action: &str, outcome: &str) -> bool {
    log.iter()
        .any(|r| r["action"] == action && r["outcome"] == outcome)
}

async fn a_silent_phone_is_restarted_and_comes_back(backend: Backend) {
    let fleet = start(backend, 3, "", |o| o.silent = 1).await;
    let silent = fleet.simulator.phone_ids()[0].clone();

    let log =
        wait_for_recoveries(&fleet.app, &silent, |log| has(log, "restart", "succeeded")).await;

    assert_eq!(log.last().unwrap()["reason"], "stale");
    assert!(log.last().unwrap()["job_id"].is_string());
    let phone = fleet
        .app
        .wait_for_phone(&silent, |p| p["state"] == "idle")
        .await;
    assert!(phone["last_recovery"]["action"] == "restart", "{phone}");
    assert!(fleet.boots(0) >= 1);
    for healthy in &fleet.simulator.phone_ids()[1..] {
        assert!(
            recoveries(&fleet.app, healthy).await.is_empty(),
            "no false recovery of {healthy}"
        );
    }
    let out = fleet
        .app
        .cli(&["recoveries", "list", "--format", "json"])
        .await;
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["phone_id"] == silent.as_str() && r["action"] == "restart")
    );
    fleet.simulator.stop().await;
}

async fn a_phone_whose_restart_fails_is_reset_with_its_callbacks(backend: Backend) {
    let fleet = start(backend, 2, "", |o| {
        o.silent = 1;
        o.restart_fails = 1;
    })
    .await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let log =
        wait_for_recoveries(&fleet.app, &phone_id, |log| has(log, "reset", "succeeded")).await;

    assert!(has(&log, "restart", "failed"), "{log:?}");
    fleet
        .app
        .wait_for_phone(&phone_id, |p| p["state"] == "idle")
        .await;
    let heartbeat_url = fleet.simulator.fleet.lock().phones[0]
        .properties
        .get(HEARTBEAT_URL)
        .cloned();
    assert_eq!(
        heartbeat_url,
        Some(format!("{}/cph/heartbeat", fleet.options.cphub))
    );
    fleet.simulator.stop().await;
}

async fn a_session_on_a_silent_phone_ends_abandoned_at_its_last_heartbeat(backend: Backend) {
    let fleet = start(backend, 1, "", |o| {
        o.silent = 1;
        o.faults_after_secs = 4;
        o.token = Some(TOKEN.to_owned());
        o.sessions = 1;
        o.player_interval_ms = 100;
        o.session_min_secs = 60;
        o.session_max_secs = 60;
    })
    .await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let phone = fleet
        .app
        .wait_for_phone(&phone_id, |p| !p["current_session_id"].is_null())
        .await;
    let session_id = phone["current_session_id"].as_str().unwrap().to_owned();
    let session = fleet
        .app
        .wait_for_session(&session_id, |s| s["state"] == "abandoned")
        .await;

    assert_eq!(session["end_reason"], "abandoned");
    assert!(session["last_heartbeat_at"].is_string(), "{session}");
    assert_eq!(session["ended_at"], session["last_heartbeat_at"]);
    let started =
        chrono::DateTime::parse_from_rfc3339(session["started_at"].as_str().unwrap()).unwrap();
    let ended =
        chrono::DateTime::parse_from_rfc3339(session["ended_at"].as_str().unwrap()).unwrap();
    assert_eq!(session["duration_seconds"], (ended - started).num_seconds());
    fleet.simulator.stop().await;
}

/// Chapter 6.4: "After you exit a cloud game, the value of session_id is left blank." A
/// session whose quit is refused (6.3: `run_time` is mandatory) on a phone that goes on
/// heartbeating with blank ids is closed as abandoned once the phone has said so for the
/// stale time (2 s here), and the phone is given out again. The simulated phone plays no
/// session of its own here: the test enters one on it, as its engine would, and the
/// phone's heartbeats never name it. Before, the session stayed `playing` and the phone
/// `occupied` for as long as it heartbeat.
async fn a_game_gone_without_a_quit_6_4_ends_abandoned_and_frees_its_phone(backend: Backend) {
    use chrono::{SecondsFormat, Utc};
    use serde_json::json;
    let fleet = start(backend, 1, "", |_| {}).await;
    let app = &fleet.app;
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    app.wait_for_phone(&phone_id, |p| p["state"] == "idle")
        .await;
    let game = json!({"app_id": "sim.game", "user_id": "u-1"});
    let minted = app.mint_ok(&game).await;
    assert_eq!(minted["phone_id"], phone_id.as_str());
    let session_id = minted["session_id"].as_str().unwrap().to_owned();
    let check = json!({
        "session_id": session_id, "ticket": minted["ticket"], "auth_ts": minted["auth_ts"],
        "encrypted_data": "", "aes_iv": "",
    });
    assert_eq!(app.sign_check(&check).await.status(), 200);
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut entered = crate::helpers::enter(&session_id, &phone_id, &now);
    entered["event"]["app_id"] = json!("sim.game");
    app.send_event(&entered).await;
    let mut quit = crate::helpers::quit(&session_id, &phone_id, &now, 0);
    quit["event"]["app_id"] = json!("sim.game");
    quit["event"].as_object_mut().unwrap().remove("run_time");
    assert_eq!(app.post_event(&quit).await.status(), 400);

    let session = app
        .wait_for_session(&session_id, |s| s["state"] == "abandoned")
        .await;

    assert_eq!(session["end_reason"], "abandoned");
    assert_eq!(
        session["ended_at"], session["started_at"],
        "no heartbeat named it: {session}"
    );
    app.wait_for_phone(&phone_id, |p| p["state"] == "idle")
        .await;
    let again = app
        .mint_ok(&json!({"app_id": "sim.game", "user_id": "u-2"}))
        .await;
    assert_eq!(again["phone_id"], phone_id.as_str());
    fleet.simulator.stop().await;
}

async fn dry_run_records_decisions_and_calls_nothing(backend: Backend) {
    let fleet = start(backend, 2, "dry_run = true\n", |o| o.silent = 1).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let log =
        wait_for_recoveries(&fleet.app, &phone_id, |log| has(log, "restart", "dry_run")).await;

    assert_eq!(log.last().unwrap()["dry_run"], true);
    assert_eq!(fleet.boots(0), 0, "no restart reached the control plane");
    fleet.simulator.stop().await;
}

async fn a_phone_that_keeps_failing_is_marked_broken_and_left_alone(backend: Backend) {
    let fleet = start(backend, 1, "", |o| {
        o.silent = 1;
        o.restart_fails = 1;
        o.job_failure_rate = 1.0;
    })
    .await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let log = wait_for_recoveries(&fleet.app, &phone_id, |log| {
        has(log, "mark_broken", "succeeded")
    })
    .await;

    let actions = log.iter().filter(|r| r["action"] != "mark_broken").count();
    assert_eq!(actions, 3, "the hourly cap of 3 held: {log:?}");
    fleet
        .app
        .wait_for_phone(&phone_id, |p| p["state"] == "broken")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        recoveries(&fleet.app, &phone_id).await.len(),
        log.len(),
        "a broken phone is left alone"
    );
    fleet.simulator.stop().await;
}

/// `POST /api/v1/phones/{phone_id}/{action}` (restart or reset), as an operator.
pub(crate) async fn manual(app: &TestApp, phone_id: &str, action: &str) -> reqwest::Response {
    let url = format!("{}/api/v1/phones/{phone_id}/{action}", app.address);
    app.client
        .post(&url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
}

/// With `watchdog.enabled = false` the control plane is still configured: a restart or
/// reset through the API is refused as such (409 naming the setting and the CLI's
/// `--wait`; nothing would follow its job), not as a control plane that is not configured
/// (a 503 with `Retry-After` for a condition that does not pass); a command (4.7.5) still
/// runs, being answered at once.
async fn with_the_watchdog_off_a_manual_recovery_is_refused_naming_it_and_exec_runs(
    backend: Backend,
) {
    let fleet = start(backend, 1, "enabled = false\n", |_| {}).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    for action in ["restart", "reset"] {
        let res = manual(&fleet.app, &phone_id, action).await;
        let body = assert_error(res, 409, "CPHUB.RECOVERY_REFUSED").await;
        let message = body["error_msg"].as_str().unwrap();
        assert!(
            message.contains("watchdog.enabled = false") && message.contains("--wait"),
            "{body}"
        );
    }
    assert_eq!(recoveries(&fleet.app, &phone_id).await, Vec::<Value>::new());
    let url = format!("{}/api/v1/phones/{phone_id}/exec", fleet.app.address);
    let res = (fleet.app.client.post(&url).bearer_auth(TOKEN))
        .json(&serde_json::json!({"command": "getprop ro.product.model"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    fleet.simulator.stop().await;
}

async fn an_operator_can_restart_a_phone_through_the_same_log(backend: Backend) {
    let fleet = start(backend, 1, "", |_| {}).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let res = manual(&fleet.app, &phone_id, "restart").await;

    assert_eq!(res.status(), 202);
    let recovery: Value = res.json().await.unwrap();
    assert_eq!(recovery["reason"], "manual");
    let again = manual(&fleet.app, &phone_id, "restart").await;
    assert_error(again, 409, "CPHUB.RECOVERY_REFUSED").await;
    wait_for_recoveries(&fleet.app, &phone_id, |log| {
        has(log, "restart", "succeeded")
    })
    .await;
    assert_eq!(fleet.boots(0), 1);
    fleet.simulator.stop().await;
}

async fn without_a_control_plane_manual_recovery_is_unavailable(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let res = app
        .client
        .post(format!("{}/api/v1/phones/p-1/reset", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();

    assert_error(res, 503, "CPHUB.CPH_NOT_CONFIGURED").await;
}

async fn the_in_flight_cap_holds_when_many_phones_go_silent_at_once(backend: Backend) {
    // Each phone on a server of its own: five silent phones of one server would be a server
    // incident, not five recoveries.
    let fleet = start(backend, 5, "max_in_flight = 2\n", |o| {
        o.phones_per_server = 1;
        o.silent = 5;
        o.job_delay_ms = 700;
    })
    .await;

    let mut restarted = 0;
    // Up to a minute: five restarts two at a time take a few seconds, more on a busy machine.
    for _ in 0..1200 {
        let res = fleet
            .app
            .get("/api/v1/recoveries?limit=100", Some(TOKEN))
            .await;
        let log: Value = res.json().await.unwrap();
        let log = log["recoveries"].as_array().unwrap();
        let pending = log.iter().filter(|r| r["outcome"] == "pending").count();
        assert!(pending <= 2, "{pending} jobs in flight: {log:?}");
        restarted = log
            .iter()
            .filter(|r| r["action"] == "restart" && r["outcome"] == "succeeded")
            .count();
        if restarted == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(restarted, 5, "every silent phone was restarted in the end");
    fleet.simulator.stop().await;
}

async fn an_excluded_phone_is_never_touched(backend: Backend) {
    let seed = SimOptions::defaults().seed;
    let excluded = format!("{seed:08x}{:024x}", 0);
    let fleet = start(backend, 2, &format!("exclude = [\"{excluded}\"]\n"), |o| {
        o.silent = 2
    })
    .await;
    let other = fleet.simulator.phone_ids()[1].clone();
    assert_eq!(fleet.simulator.phone_ids()[0], excluded);

    wait_for_recoveries(&fleet.app, &other, |log| has(log, "restart", "succeeded")).await;

    assert!(recoveries(&fleet.app, &excluded).await.is_empty());
    assert_eq!(fleet.boots(0), 0);
    fleet.simulator.stop().await;
}

/// An excluded phone, silent for good, is not one of its server's silent phones: with it
/// counted, one more silent phone of a server of four made half of it silent, an incident
/// held (and the second phone never recovered) for as long as the excluded phone stayed
/// silent. (A phone marked broken is set aside the same way: `incidents.rs`'s unit test.)
async fn an_excluded_silent_phone_does_not_make_its_server_an_incident(backend: Backend) {
    let seed = SimOptions::defaults().seed;
    let excluded = format!("{seed:08x}{:024x}", 0);
    let fleet = start(backend, 4, &format!("exclude = [\"{excluded}\"]\n"), |o| {
        o.phones_per_server = 4;
        o.silent = 2;
    })
    .await;
    let other = fleet.simulator.phone_ids()[1].clone();
    assert_eq!(fleet.simulator.phone_ids()[0], excluded);

    wait_for_recoveries(&fleet.app, &other, |log| has(log, "restart", "succeeded")).await;

    let server = fleet.simulator.fleet.lock().server_ids()[0].clone();
    assert_eq!(recoveries(&fleet.app, &server).await, Vec::<Value>::new());
    assert_eq!(
        metric_value(&fleet.app, "cphub_server_incidents_total").await,
        Some(0.0)
    );
    fleet.simulator.stop().await;
}

async fn assert_no_recoveries(fleet: &Fleet, app: &TestApp) {
    for phone in fleet.simulator.phone_ids() {
        assert_eq!(
            recoveries(app, &phone).await,
            Vec::<Value>::new(),
            "false recovery of {phone}"
        );
    }
}

async fn jittered_heartbeats_within_the_threshold_recover_nothing(backend: Backend) {
    // Stale after 2 s; heartbeats every 1 s plus up to 0.9 s.
    let fleet = start(backend, 4, "", |o| o.heartbeat_jitter_ms = 900).await;

    tokio::time::sleep(Duration::from_secs(6)).await;

    assert_no_recoveries(&fleet, &fleet.app).await;
    fleet.simulator.stop().await;
}

async fn restarting_cphub_mid_run_recovers_nothing(backend: Backend) {
    let fleet = start(backend, 3, "startup_grace_secs = 4\n", |_| {}).await;
    for phone in fleet.simulator.phone_ids() {
        fleet
            .app
            .wait_for_phone(&phone, |p| !p["last_seen_at"].is_null())
            .await;
    }
    // Down longer than the stale threshold: every phone looks silent when cphub returns.
    let down = Duration::from_secs(3);
    let fleet = fleet.restart_cphub("startup_grace_secs = 4\n", down).await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    for phone in fleet.simulator.phone_ids() {
        fleet
            .app
            .wait_for_phone(&phone, |p| p["state"] == "idle")
            .await;
    }
    assert_no_recoveries(&fleet, &fleet.app).await;
    fleet.simulator.stop().await;
}

async fn a_control_plane_outage_recovers_nothing(backend: Backend) {
    let fleet = start(backend, 3, "", |_| {}).await;

    fleet.simulator.stop_control_plane().await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    assert_no_recoveries(&fleet, &fleet.app).await;
    for phone in fleet.simulator.phone_ids() {
        assert_eq!(
            fleet.app.phone(&phone).await.unwrap()["state"],
            "idle",
            "phones still heartbeat"
        );
    }
    fleet.simulator.stop().await;
}

/// Restarts and resets that reached the control plane (a skipped decision did not).
fn acted_on(log: &[Value]) -> Vec<&Value> {
    log.iter()
        .filter(|r| r["action"] != "mark_broken" && r["outcome"] != "skipped")
        .collect()
}

/// Mints pinned to `phone_id`; asserts it is refused.
async fn assert_not_allocated(app: &TestApp, phone_id: &str) {
    let res = app
        .mint(&serde_json::json!({"app_id": "game", "user_id": "u-1", "phone_id": phone_id}))
        .await;
    assert_error(res, 409, "CPHUB.PHONE_BUSY").await;
}

/// Chapter 4.3.1: a phone stopped (8), frozen (6), stopping (7) or being restarted by
/// someone else (4) is silent for a reason: never restarted or reset, never allocated, and
/// shown as out of service (6, 8) or unavailable (7, 4).
async fn status_4_3_1_stopped_frozen_stopping_or_restarting_phones_are_left_alone(
    backend: Backend,
) {
    let fleet = start(backend, 5, "", |o| {
        o.stopped = 1;
        o.frozen = 1;
        o.stopping = 1;
        o.restarting_elsewhere = 1;
    })
    .await;
    let ids = fleet.simulator.phone_ids();
    let expected = [
        (8, "out_of_service"),
        (6, "out_of_service"),
        (7, "unavailable"),
        (4, "unavailable"),
    ];
    for (id, (status, state)) in ids.iter().zip(expected) {
        fleet
            .app
            .wait_for_phone(id, |p| p["cph_status"] == status && p["state"] == state)
            .await;
    }
    // Silent for longer than the stale threshold (2 s), several times over.
    tokio::time::sleep(Duration::from_secs(5)).await;

    for (i, id) in ids.iter().enumerate().take(4) {
        let log = recoveries(&fleet.app, id).await;
        assert!(acted_on(&log).is_empty(), "phone {i} was acted on: {log:?}");
        assert_eq!(fleet.boots(i), 0, "phone {i}");
        assert_not_allocated(&fleet.app, id).await;
    }
    let metrics = fleet.app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("cphub_phones{state=\"out_of_service\"} 2"),
        "{metrics}"
    );
    let minted = fleet
        .app
        .mint_ok(&serde_json::json!({"app_id": cphub::simulator::DEFAULT_APP, "user_id": "u-2"}))
        .await;
    assert_eq!(
        minted["phone_id"],
        ids[4].as_str(),
        "only the running phone"
    );
    fleet.simulator.stop().await;
}

/// Two phones synced once at start (the next sync an hour away), the first running and idle:
/// what the book then says of it is a sync old.
async fn two_phones_synced_once(backend: Backend) -> (Fleet, String) {
    let pace = Pace {
        sync_secs: 3600,
        ..Pace::EAGER
    };
    let fleet = start_synced(TestDb::new(backend).await, 2, "", pace, |_| {}).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    fleet
        .app
        .wait_for_phone(&phone_id, |p| p["cph_status"] == 2 && p["state"] == "idle")
        .await;
    (fleet, phone_id)
}

/// Chapter 4.3.2: the book's status is a phone sync old (here: synced only at start). A
/// phone stopped since then is re-read before acting, and left alone: the skip is logged
/// once and the fresh status is in the book at once.
async fn status_change_between_sync_and_decision_4_3_2_leaves_the_phone_alone(backend: Backend) {
    let (fleet, phone_id) = two_phones_synced_once(backend).await;

    fleet
        .simulator
        .fleet
        .lock()
        .set_status(0, cphub::cph::model::status::STOPPED);

    let log =
        wait_for_recoveries(&fleet.app, &phone_id, |log| has(log, "restart", "skipped")).await;
    assert!(
        log[0]["detail"].as_str().unwrap().contains("status 8"),
        "{log:?}"
    );
    let phone = fleet
        .app
        .wait_for_phone(&phone_id, |p| p["state"] == "out_of_service")
        .await;
    assert_eq!(phone["cph_status"], 8);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = recoveries(&fleet.app, &phone_id).await;
    assert!(acted_on(&log).is_empty(), "{log:?}");
    assert_eq!(log.len(), 1, "one skip, not one per pass: {log:?}");
    assert_eq!(fleet.boots(0), 0);
    assert_not_allocated(&fleet.app, &phone_id).await;
    fleet.simulator.stop().await;
}

/// Properties of a phone's own that a reset must keep (appendix A.1): its app port and its
/// screen orientation.
const APP_PORT_AND_SCREEN: [(&str, &str); 2] = [
    ("com.cph.cg.app_port", "8888"),
    ("ro.horizontal.screen", "1"),
];

/// A phone's `properties` after a reset hold [`APP_PORT_AND_SCREEN`] and point the phone
/// at the fleet's cphub.
fn assert_kept_with_the_callbacks(fleet: &Fleet, properties: &BTreeMap<String, String>) {
    for (key, value) in APP_PORT_AND_SCREEN {
        assert_eq!(
            properties.get(key).map(String::as_str),
            Some(value),
            "{properties:?}"
        );
    }
    assert_eq!(
        properties.get(HEARTBEAT_URL),
        Some(&format!("{}/cph/heartbeat", fleet.options.cphub))
    );
}

/// A fleet of two phones that carry `properties` of their own, tuned by `tune`.
async fn start_carrying(
    backend: Backend,
    properties: &[(&str, &str)],
    tune: impl FnOnce(&mut SimOptions),
) -> Fleet {
    start(backend, 2, "", |o| {
        o.properties = (properties.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tune(o);
    })
    .await
}

/// The recovery that reset phone 0 of a fleet whose phones carry `properties` of their own
/// (phone 0 falls silent and fails its restart, so it is reset), with the fleet and phone
/// 0's properties after it.
async fn reset_carrying(
    backend: Backend,
    properties: &[(&str, &str)],
) -> (Fleet, Value, BTreeMap<String, String>) {
    let fleet = start_carrying(backend, properties, |o| {
        o.silent = 1;
        o.restart_fails = 1;
    })
    .await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    let log =
        wait_for_recoveries(&fleet.app, &phone_id, |log| has(log, "reset", "succeeded")).await;
    let reset = log.into_iter().find(|r| r["action"] == "reset").unwrap();
    let after = fleet.simulator.fleet.lock().phones[0].properties.clone();
    (fleet, reset, after)
}

/// Chapters 4.3.5, 4.3.2 and appendix A.1: a reset restores factory settings, so it carries
/// the phone's own properties (its app port, its screen orientation) and the callback ones.
async fn reset_4_3_5_carries_the_phones_own_properties_and_the_callbacks(backend: Backend) {
    let (fleet, reset, properties) = reset_carrying(backend, &APP_PORT_AND_SCREEN).await;

    assert_kept_with_the_callbacks(&fleet, &properties);
    let detail = reset["detail"].as_str().unwrap();
    assert!(
        detail.contains("com.cph.cg.app_port") && detail.contains("ro.horizontal.screen"),
        "{detail}"
    );
    fleet.simulator.stop().await;
}

/// Chapters 4.3.5, 7.2 and appendix A.1: the phone carries a key of its own the reset
/// refuses (CPS.0200, the key named). cphub sends the reset again without it, keeps every
/// other property, and the recovery's detail names the key dropped and why.
async fn reset_4_3_5_refused_for_one_property_drops_it_and_says_so(backend: Backend) {
    let own = [("vendor.fan", "2"), ("ro.horizontal.screen", "1")];
    let (fleet, reset, properties) = reset_carrying(backend, &own).await;

    let detail = reset["detail"].as_str().unwrap();
    assert!(
        detail.contains("vendor.fan dropped: the reset refused it (CPS.0200:"),
        "{detail}"
    );
    assert!(
        detail.contains("re-applied the phone's own properties ro.horizontal.screen and"),
        "{detail}"
    );
    assert_eq!(properties.get("ro.horizontal.screen").unwrap(), "1");
    assert_eq!(properties.get("vendor.fan"), None);
    assert!(properties.contains_key(HEARTBEAT_URL));
    let phone_id = &fleet.simulator.phone_ids()[0];
    assert_eq!(
        jobs_of(&fleet.simulator, phone_id, JobKind::Reset),
        1,
        "the refused reset started nothing; the second one is the one reset"
    );
    fleet.simulator.stop().await;
}

/// The book of `app`, opened as cphub opens it, to read what phone sync recorded.
async fn book_of(app: &TestApp) -> std::sync::Arc<dyn cphub::store::Store> {
    let settings = format!("[database]\nurl = \"{}\"\n", app.db.url);
    let settings = cphub::config::Settings::with_overrides(&settings).unwrap();
    cphub::store::connect(&settings.database).await.unwrap()
}

/// Issue #15 part 2, chapters 4.3.5 and 4.3.2: when the phone cannot be read right before
/// a reset (400 CPS.0003 on every attempt), the reset re-applies the properties phone sync
/// last read from the phone's detail, with cphub's callback ones, and the log says so.
async fn reset_4_3_5_falls_back_to_the_properties_phone_sync_read(backend: Backend) {
    let fleet = start_carrying(backend, &APP_PORT_AND_SCREEN, |_| {}).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    let book = book_of(&fleet.app).await;
    let id = cphub::domain::PhoneId::parse("phone_id", phone_id.clone()).unwrap();
    let mut synced = None;
    for _ in 0..300 {
        synced = book.synced_property(&id).await.unwrap();
        let updated = fleet.simulator.fleet.lock().phones[0].updated;
        if synced.as_ref().is_some_and(|s| {
            s.property.contains("ro.horizontal.screen")
                && updated.is_none_or(|updated| s.read_at.datetime() > updated)
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(synced.is_some(), "phone sync never read the phone's detail");
    // Sync has read the detail since the phone's last change (4.3.1 `update_time`), and reads
    // it again only when that moves: these errors meet the reset's read alone, each of its
    // attempts (cph.max_attempts).
    (fleet.simulator.faults).system_errors(Operation::ShowPhone, 4);

    let res = manual(&fleet.app, &phone_id, "reset").await;

    assert_eq!(res.status(), 202);
    let log =
        wait_for_recoveries(&fleet.app, &phone_id, |log| has(log, "reset", "succeeded")).await;
    let detail = log[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(
            "reset re-applied the phone's own properties com.cph.cg.app_port, \
             ro.horizontal.screen and cphub's callback properties (the phone's properties \
             cannot be read (chapter 4.3.2): "
        ) && detail.contains("; as phone sync read them at "),
        "{detail}"
    );
    let properties = fleet.simulator.fleet.lock().phones[0].properties.clone();
    assert_kept_with_the_callbacks(&fleet, &properties);
    fleet.simulator.stop().await;
}

/// `cphub phones stop` (chapter 4.3.7) records the phone as stopped at once: out of service
/// before the next phone sync (here: none), so neither recovered nor allocated.
async fn a_phone_stopped_through_cphub_is_out_of_service_at_once(backend: Backend) {
    let (fleet, phone_id) = two_phones_synced_once(backend).await;

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cphub"));
    cmd.env_clear()
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .env("DATABASE_URL", &fleet.app.db.url)
        .env("CPHUB__CPH__ENDPOINT", fleet.simulator.cph_endpoint())
        .env("CPHUB__CPH__PROJECT_ID", &fleet.options.project_id)
        .env("CPHUB__CPH__AUTH__AK", &fleet.options.ak)
        .env("CPHUB__CPH__AUTH__SK", &fleet.options.sk)
        .args(["phones", "stop", &phone_id]);
    let out = crate::helpers::child_output(cmd).await;
    assert!(out.status.success(), "{out:?}");

    let phone = fleet.app.phone(&phone_id).await.unwrap();
    assert_eq!(phone["state"], "out_of_service", "{phone}");
    assert_eq!(phone["cph_status"], 8);
    assert_not_allocated(&fleet.app, &phone_id).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(recoveries(&fleet.app, &phone_id).await, Vec::<Value>::new());
    fleet.simulator.stop().await;
}

/// The value of an unlabelled metric on `/metrics`.
pub(crate) async fn metric_value(app: &TestApp, name: &str) -> Option<f64> {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

pub(crate) async fn wait_for_metric(app: &TestApp, name: &str, value: f64) {
    for _ in 0..300 {
        if metric_value(app, name).await == Some(value) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{name} never read {value}: {:?}",
        metric_value(app, name).await
    );
}

/// The jobs of `kind` the simulated control plane started for `phone_id`.
pub(crate) fn jobs_of(simulator: &Simulator, phone_id: &str, kind: JobKind) -> usize {
    simulator
        .fleet
        .lock()
        .jobs
        .values()
        .filter(|job| job.phone_id.as_deref() == Some(phone_id) && job.kind == kind)
        .count()
}

/// 7.2 CPS.0006 (arrears): every recovery pauses, nothing is restarted, nothing marked broken
/// or failed, the gauge says so; once the account is served again recoveries resume.
async fn arrears_7_2_pause_recoveries_until_the_account_is_served_again(backend: Backend) {
    let fleet = start(backend, 2, "", |o| o.silent = 1).await;
    let silent = fleet.simulator.phone_ids()[0].clone();
    // Set-up restarted every phone once (4.3.9's properties take effect at a restart).
    let setup_restarts = jobs_of(&fleet.simulator, &silent, JobKind::Restart);
    assert_eq!(
        metric_value(&fleet.app, "cphub_cph_account_blocked").await,
        Some(0.0)
    );

    fleet.simulator.faults.set_arrears(true);
    wait_for_metric(&fleet.app, "cphub_cph_account_blocked", 1.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(
        jobs_of(&fleet.simulator, &silent, JobKind::Restart),
        setup_restarts
    );
    let log = recoveries(&fleet.app, &silent).await;
    assert!(
        log.iter()
            .all(|r| r["outcome"] != "failed" && r["action"] != "mark_broken"),
        "{log:?}"
    );
    assert_ne!(fleet.app.phone(&silent).await.unwrap()["state"], "broken");
    assert_eq!(
        metric_value(&fleet.app, "cphub_cph_account_blocked").await,
        Some(1.0)
    );

    fleet.simulator.faults.set_arrears(false);
    wait_for_recoveries(&fleet.app, &silent, |log| has(log, "restart", "succeeded")).await;
    wait_for_metric(&fleet.app, "cphub_cph_account_blocked", 0.0).await;
    fleet.simulator.stop().await;
}

/// 7.1.2: the restart is done but its answer lost (502). The recovery stays pending, is
/// reconciled (4.4.2 by request id, or the phone's status) and the phone gets one restart.
async fn a_lost_restart_answer_7_1_2_is_reconciled_not_resent(backend: Backend) {
    let fleet = start(backend, 2, "", |o| o.silent = 1).await;
    let silent = fleet.simulator.phone_ids()[0].clone();
    // Lost from now on, so that it is the watchdog's restart whose answer is lost, not the
    // set-up's (which restarted every phone once: 4.3.9's properties need a restart).
    let setup_restarts = jobs_of(&fleet.simulator, &silent, JobKind::Restart);
    (fleet.simulator.faults).lose_answers(Operation::Restart, 1, LostAnswer::BadGateway);

    wait_for_recoveries(&fleet.app, &silent, |log| {
        log.iter()
            .any(|r| r["action"] == "restart" && r["outcome"] != "pending")
    })
    .await;
    fleet
        .app
        .wait_for_phone(&silent, |p| p["state"] == "idle")
        .await;

    assert_eq!(
        jobs_of(&fleet.simulator, &silent, JobKind::Restart),
        setup_restarts + 1
    );
    let log = recoveries(&fleet.app, &silent).await;
    assert_eq!(
        log.iter().filter(|r| r["action"] == "restart").count(),
        1,
        "{log:?}"
    );
    assert!(has(&log, "restart", "succeeded"), "{log:?}");
    fleet.simulator.stop().await;
}

/// 7.1.2 with 4.4.2 refused for good (every listing of the request's jobs answered
/// `CPS.0200`, as for a request id the control plane does not know): the phone's status
/// settles the recovery once the send would have ended. It stayed pending for ever, the
/// phone `recovering` and never recovered again.
async fn a_lost_restart_answer_whose_jobs_cannot_be_listed_is_settled_by_the_phone_7_1_2(
    backend: Backend,
) {
    let fleet = one_silent_with_quick_calls(backend).await;
    let silent = fleet.simulator.phone_ids()[0].clone();
    let setup_restarts = jobs_of(&fleet.simulator, &silent, JobKind::Restart);
    (fleet.simulator.faults).lose_answers(Operation::Restart, 1, LostAnswer::BadGateway);
    (fleet.simulator.faults).invalid_requests(Operation::ListJobs, u32::MAX);

    let log = wait_for_recoveries(&fleet.app, &silent, |log| {
        log.iter()
            .any(|r| r["action"] == "restart" && r["outcome"] != "pending")
    })
    .await;

    // Running again (2) after a restart whose job cannot be seen: the restart may not have
    // run, so it is an error (no reset follows it), settled, never sent again.
    let settled = &log[0];
    assert_eq!(settled["outcome"], "error", "{log:?}");
    assert!(
        settled["error"]
            .as_str()
            .unwrap()
            .contains("re-read: status 2"),
        "{settled}"
    );
    assert_eq!(
        jobs_of(&fleet.simulator, &silent, JobKind::Restart),
        setup_restarts + 1
    );
    fleet.simulator.stop().await;
}

/// Two phones, the first silent, and calls to the control plane that give up quickly: the
/// bound on a send (after which a lost answer's phone may be read) is short.
async fn one_silent_with_quick_calls(backend: Backend) -> Fleet {
    let pace = Pace {
        cph: "request_timeout_ms = 100\nretry_max_ms = 10\n",
        ..Pace::EAGER
    };
    let db = TestDb::new(backend).await;
    start_synced(db, 2, "", pace, |o| o.silent = 1).await
}

/// 7.1.2: a 504 is the gateway timing out, not the backend refusing: the restart it
/// answered starts 3 s later here, its job appearing to 4.4.2 only then. The recovery waits
/// for that job and ends with its outcome; closed from the phone's status at once, it was
/// "succeeded" (status 2, the restart not begun) with no job, seconds before the restart.
async fn a_restart_answered_504_before_it_starts_7_1_2_waits_for_its_job_4_4_2(backend: Backend) {
    let fleet = start(backend, 2, "", |o| o.silent = 1).await;
    let silent = fleet.simulator.phone_ids()[0].clone();
    let setup_restarts = jobs_of(&fleet.simulator, &silent, JobKind::Restart);
    let late = Duration::from_secs(3);
    (fleet.simulator.faults).late_starts(Operation::Restart, 1, late);

    let log = wait_for_recoveries(&fleet.app, &silent, |log| {
        log.iter()
            .any(|r| r["action"] == "restart" && r["outcome"] != "pending")
    })
    .await;

    let restart = log.iter().find(|r| r["action"] == "restart").unwrap();
    assert_eq!(restart["outcome"], "succeeded", "{log:?}");
    assert!(
        restart["job_id"].is_string(),
        "closed without its job: {log:?}"
    );
    assert!(restart["request_id"].is_string(), "{log:?}");
    assert_eq!(
        jobs_of(&fleet.simulator, &silent, JobKind::Restart),
        setup_restarts + 1
    );
    fleet.simulator.stop().await;
}

/// 7.1.2: a POST answered 500, 503 or 504 may have started nothing, and 4.4.2 then never
/// shows a job. Once the send's bound has passed (about 12 s with these timeouts), the phone
/// still reads running (4.3.2): whether the restart ran is not known, so the recovery ends
/// in an error and the next one is a restart again. Closed as `succeeded`, it was followed
/// by a reset (4.3.5, factory settings) with no restart ever done.
async fn a_restart_whose_job_never_shows_ends_in_an_error_and_is_tried_again_7_1_2(
    backend: Backend,
) {
    let fleet = one_silent_with_quick_calls(backend).await;
    let silent = fleet.simulator.phone_ids()[0].clone();
    let setup_restarts = jobs_of(&fleet.simulator, &silent, JobKind::Restart);
    let never = Duration::from_secs(600);
    (fleet.simulator.faults).late_starts(Operation::Restart, 1, never);

    let log = wait_for_recoveries(&fleet.app, &silent, |log| {
        has(log, "restart", "error") && has(log, "restart", "succeeded")
    })
    .await;

    assert!(
        log.iter().all(|r| r["action"] == "restart"),
        "no reset: {log:?}"
    );
    let unknown = log.iter().find(|r| r["outcome"] == "error").unwrap();
    assert!(unknown["job_id"].is_null(), "{unknown}");
    assert_eq!(jobs_of(&fleet.simulator, &silent, JobKind::Reset), 0);
    assert_eq!(
        jobs_of(&fleet.simulator, &silent, JobKind::Restart),
        setup_restarts + 1,
        "the retried restart; the first never started"
    );
    fleet.simulator.stop().await;
}

/// 7.2 CPS.0003 ("System error … Try again later"): the restart was not done, on each of its
/// `cph.max_attempts` (4) attempts. The recovery ends in an error, and the next one, after
/// the grace, is a restart again: the reset (4.3.5, factory settings) is for a restart that
/// failed or did not help, and this one never reached the phone.
async fn a_restart_refused_try_again_later_7_2_is_tried_again_not_answered_with_a_reset(
    backend: Backend,
) {
    refused_then_restarted(backend, |faults| {
        faults.system_errors(Operation::Restart, 4)
    })
    .await;
}

/// A restart the control plane refuses in the phone's entry of its 201 answer (4.3.6's
/// answer refuses a phone beside the others' jobs; here with 7.2's `CPS.0003`) started no
/// job: nothing is known against the phone, so it is an `error`, backed off and tried
/// again as a restart. Recorded as `failed`, it was answered with a factory reset (4.3.5)
/// at the next pass.
async fn a_restart_refused_in_its_entry_4_3_6_is_an_error_tried_again_not_a_reset(
    backend: Backend,
) {
    let log = refused_then_restarted(backend, |f| f.item_errors(Operation::Restart, 1)).await;

    let refused = (log.iter().find(|r| r["outcome"] == "error")).unwrap();
    assert!(
        refused["error"].as_str().unwrap().starts_with("CPS.0003"),
        "{refused}"
    );
}

/// A silent phone whose first restart `refuse` makes the control plane refuse: its log
/// once it has an error and then a restart that succeeded, no reset sent, one restart job.
async fn refused_then_restarted(
    backend: Backend,
    refuse: impl FnOnce(&ControlPlaneFaults),
) -> Vec<Value> {
    let fleet = start(backend, 2, "", |o| o.silent = 1).await;
    let silent = fleet.simulator.phone_ids()[0].clone();
    let setup_restarts = jobs_of(&fleet.simulator, &silent, JobKind::Restart);
    refuse(&fleet.simulator.faults);

    let log = wait_for_recoveries(&fleet.app, &silent, |log| {
        has(log, "restart", "error") && has(log, "restart", "succeeded")
    })
    .await;
    fleet
        .app
        .wait_for_phone(&silent, |p| p["state"] == "idle")
        .await;

    assert!(
        log.iter().all(|r| r["action"] == "restart"),
        "no reset: {log:?}"
    );
    assert_eq!(jobs_of(&fleet.simulator, &silent, JobKind::Reset), 0);
    assert_eq!(
        jobs_of(&fleet.simulator, &silent, JobKind::Restart),
        setup_restarts + 1
    );
    fleet.simulator.stop().await;
    log
}

/// 7.1.2's reconciliation is for a recovery whose answer was lost, not for one still being
/// sent: a manual reset whose POST takes 3 s to be answered, while the watchdog passes
/// every 100 ms, ends with its own job's outcome. Reconciled during the send, it was closed
/// as succeeded ("outcome unknown … no job found") from the phone re-read still running,
/// before its reset was even accepted; `cphub phones reset --wait` then returned while the
/// reset had not happened yet.
async fn a_recovery_still_being_sent_is_not_reconciled_7_1_2(backend: Backend) {
    let fleet = start(backend, 2, "", |_| {}).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    let slow = Some(Duration::from_secs(3));
    fleet.simulator.faults.slow_answers(Operation::Reset, slow);

    let res = manual(&fleet.app, &phone_id, "reset").await;

    assert_eq!(res.status(), 202);
    let log = wait_for_recoveries(&fleet.app, &phone_id, |log| {
        log.iter().any(|r| r["outcome"] != "pending")
    })
    .await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["outcome"], "succeeded", "{log:?}");
    assert_eq!(log[0]["error"], Value::Null, "{log:?}");
    assert!(log[0]["job_id"].is_string(), "{log:?}");
    assert_eq!(jobs_of(&fleet.simulator, &phone_id, JobKind::Reset), 1);
    fleet.simulator.stop().await;
}

/// Restart and reset jobs the simulated control plane started for each of `phone_ids`.
fn recovery_jobs(simulator: &Simulator, phone_ids: &[String]) -> Vec<usize> {
    (phone_ids.iter())
        .map(|p| jobs_of(simulator, p, JobKind::Restart) + jobs_of(simulator, p, JobKind::Reset))
        .collect()
}

/// Waits until one of `phone_ids` is in a session; returns that session.
async fn a_session_on_one_of(app: &TestApp, phone_ids: &[String]) -> String {
    for _ in 0..300 {
        for phone_id in phone_ids {
            let phone = app.phone(phone_id).await;
            if let Some(session) =
                phone.and_then(|p| p["current_session_id"].as_str().map(str::to_owned))
            {
                return session;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no session ever reached {phone_ids:?}");
}

/// Issue #15 part 5, servers of chapter 4.3.1 (`server_id`): a server whose phones all go
/// dark while the control plane still lists them running (2) is ONE incident: one recovery
/// log row for the server, no restart or reset of any of its phones, and the sessions on
/// them still closed as abandoned. The rule does not over-trigger: a single silent phone on
/// a healthy server of the same size is restarted as before. When the server comes back,
/// the incident closes and nothing was restarted: the phones that come back last get the
/// grace after a recovery (long here, so that a slow machine cannot make it flaky).
async fn a_dead_server_produces_one_incident_and_no_per_phone_restarts(backend: Backend) {
    let fleet = start(backend, 8, "grace_after_recovery_secs = 10\n", |o| {
        o.phones_per_server = 4;
        o.dark_servers = 1;
        o.silent = 1;
        o.faults_after_secs = 4;
        o.token = Some(TOKEN.to_owned());
        o.player_interval_ms = 100;
        o.session_min_secs = 60;
        o.session_max_secs = 60;
    })
    .await;
    let ids = fleet.simulator.phone_ids();
    let dark = ids[4..].to_vec();
    let server = fleet.simulator.fleet.lock().server_ids()[1].clone();
    assert!(
        (fleet.simulator.fleet.lock().phones[4..])
            .iter()
            .all(|p| p.server_id == server)
    );
    // Set-up restarted every phone once (4.3.9's properties take effect at a restart).
    let setup_jobs = recovery_jobs(&fleet.simulator, &dark);
    assert_eq!(
        metric_value(&fleet.app, "cphub_server_incidents_total").await,
        Some(0.0)
    );
    let session = a_session_on_one_of(&fleet.app, &dark).await;

    let log = wait_for_recoveries(&fleet.app, &server, |log| !log.is_empty()).await;
    fleet
        .app
        .wait_for_session(&session, |s| s["state"] == "abandoned")
        .await;
    // The silent phone of the healthy server is restarted, well after the incident began:
    // by then any per-phone restart of the dark server's phones would have been sent too.
    wait_for_recoveries(&fleet.app, &ids[0], |log| has(log, "restart", "succeeded")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["reason"], "server_incident");
    assert_eq!(log[0]["action"], "hold");
    assert_eq!(log[0]["outcome"], "open");
    let detail = log[0]["detail"].as_str().unwrap();
    // Opened once the share (0.5) is reached: 2, 3 or 4 of the 4 phones, as they fell silent.
    assert!(detail.contains(" of 4 phones of server"), "{detail}");
    assert_eq!(
        recoveries(&fleet.app, &server).await.len(),
        1,
        "one incident, not one per pass"
    );
    for phone_id in &dark {
        assert_eq!(
            recoveries(&fleet.app, phone_id).await,
            Vec::<Value>::new(),
            "{phone_id}"
        );
    }
    assert_eq!(
        recovery_jobs(&fleet.simulator, &dark),
        setup_jobs,
        "no restart or reset sent"
    );
    assert_eq!(
        metric_value(&fleet.app, "cphub_server_incidents_total").await,
        Some(1.0)
    );
    assert_eq!(
        metric_value(&fleet.app, "cphub_server_incidents_open").await,
        Some(1.0)
    );

    fleet.simulator.fleet.lock().set_server_dark(&server, false);

    let log = wait_for_recoveries(&fleet.app, &server, |log| {
        log.iter().any(|r| r["outcome"] == "closed")
    })
    .await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0]["ended_at"].is_string(), "{log:?}");
    wait_for_metric(&fleet.app, "cphub_server_incidents_open", 0.0).await;
    for phone_id in &dark {
        fleet
            .app
            .wait_for_phone(phone_id, |p| p["state"] != "stale")
            .await;
    }
    assert_eq!(recovery_jobs(&fleet.simulator, &dark), setup_jobs);
    fleet.simulator.stop().await;
}

/// A server's incident closes while one of its phones is still silent (booting, say): that
/// phone gets the grace after a recovery (20 s here) before it is restarted. The grace
/// was kept in the memory of the replica that closed the incident; cphub restarted right
/// after (or another replica taking the watchdog over) restarted the phone at once. It is
/// now read from the recovery log: the phone is left alone through the restart and is
/// restarted only once the grace has passed.
async fn the_grace_after_a_closed_incident_outlives_a_restart_of_cphub(backend: Backend) {
    const WATCHDOG: &str = "grace_after_recovery_secs = 20\nstartup_grace_secs = 0\n";
    let fleet = start(backend, 8, WATCHDOG, |o| {
        o.phones_per_server = 4;
        o.dark_servers = 1;
        o.faults_after_secs = 4;
    })
    .await;
    let ids = fleet.simulator.phone_ids();
    let server = fleet.simulator.fleet.lock().server_ids()[1].clone();
    let booting = ids[7].clone();
    wait_for_recoveries(&fleet.app, &server, |log| !log.is_empty()).await;
    let setup_jobs = recovery_jobs(&fleet.simulator, std::slice::from_ref(&booting));
    {
        let mut sim = fleet.simulator.fleet.lock();
        sim.set_server_dark(&server, false);
        let phone = sim.phone_mut(&booting).unwrap();
        assert_eq!(phone.server_id, server);
        phone.faults.silent = true;
    }
    wait_for_recoveries(&fleet.app, &server, |log| {
        log.iter().any(|r| r["outcome"] == "closed")
    })
    .await;
    let closed_at = std::time::Instant::now();

    let fleet = fleet.restart_cphub(WATCHDOG, Duration::ZERO).await;
    // Well past the stale threshold (2 s) and several passes, well within the grace.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        closed_at.elapsed() < Duration::from_secs(18),
        "the machine was too slow"
    );
    assert_eq!(
        recoveries(&fleet.app, &booting).await,
        Vec::<Value>::new(),
        "restarted within the grace after its server's incident"
    );

    wait_for_recoveries(&fleet.app, &booting, |log| has(log, "restart", "succeeded")).await;
    // `closed_at` was taken once the close was seen, a pass or so after it was logged.
    assert!(closed_at.elapsed() >= Duration::from_secs(19));
    assert_eq!(
        recovery_jobs(&fleet.simulator, std::slice::from_ref(&booting)),
        [setup_jobs[0] + 1]
    );
    fleet.simulator.stop().await;
}

/// Chapter 4.3.1 lists the phones the control plane has, and 4.3.2 answers `CPS.0005` (7.2)
/// for one it does not: a server released outside cphub (the reference has no call for it)
/// takes its phones away. They fall silent, and without the listing they would be stale for
/// good, candidates every pass, and their server one open incident. Left out of two
/// listings in a row, they are `unlisted`: not allocated, not recovered, and their server
/// holds nothing; the other server's phones play on.
async fn a_released_servers_phones_are_unlisted_and_left_alone_4_3_1(backend: Backend) {
    let fleet = start(backend, 8, "", |o| o.phones_per_server = 4).await;
    let ids = fleet.simulator.phone_ids();
    let server = fleet.simulator.fleet.lock().server_ids()[1].clone();
    let released = &ids[4..];
    for phone_id in &ids {
        fleet
            .app
            .wait_for_phone(phone_id, |p| p["state"] == "idle")
            .await;
    }
    let setup_jobs = recovery_jobs(&fleet.simulator, released);

    fleet.simulator.fleet.lock().release_server(&server);

    for phone_id in released {
        fleet
            .app
            .wait_for_phone(phone_id, |p| p["state"] == "unlisted")
            .await;
    }
    // Silent well past the threshold (2 s), with a sync and twenty watchdog passes a second.
    tokio::time::sleep(Duration::from_secs(4)).await;
    wait_for_metric(&fleet.app, "cphub_server_incidents_open", 0.0).await;

    for phone_id in released {
        let phone = fleet.app.phone(phone_id).await.unwrap();
        assert_eq!(phone["state"], "unlisted", "{phone}");
        let log = recoveries(&fleet.app, phone_id).await;
        assert!(acted_on(&log).is_empty(), "{phone_id}: {log:?}");
        assert_not_allocated(&fleet.app, phone_id).await;
    }
    assert_eq!(recovery_jobs(&fleet.simulator, released), setup_jobs);
    let res = manual(&fleet.app, &released[0], "reset").await;
    let body = assert_error(res, 409, "CPHUB.RECOVERY_REFUSED").await;
    assert!(body.to_string().contains("no longer lists"), "{body}");
    for phone_id in &ids[..4] {
        let phone = fleet.app.phone(phone_id).await.unwrap();
        assert_eq!(phone["state"], "idle", "{phone}");
    }
    let metrics = fleet.app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("cphub_phones{state=\"unlisted\"} 4"),
        "{metrics}"
    );
    fleet.simulator.stop().await;
}

/// `cphub phones reset PHONE ARGS` against the fleet's control plane and book.
async fn cli_reset(fleet: &Fleet, phone_id: &str, args: &[&str]) -> std::process::Output {
    crate::helpers::child_output(cli_reset_command(fleet, phone_id, args)).await
}

fn cli_reset_command(fleet: &Fleet, phone_id: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cphub"));
    cmd.env_clear()
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .env("DATABASE_URL", &fleet.app.db.url)
        .env("CPHUB__CALLBACKS__PUBLIC_URL", &fleet.options.cphub)
        .env("CPHUB__CPH__ENDPOINT", fleet.simulator.cph_endpoint())
        .env("CPHUB__CPH__PROJECT_ID", &fleet.options.project_id)
        .env("CPHUB__CPH__AUTH__AK", &fleet.options.ak)
        .env("CPHUB__CPH__AUTH__SK", &fleet.options.sk)
        .args(["phones", "reset", phone_id])
        .args(args);
    cmd
}

/// 7.2 CPS.0006 (arrears): a manual reset that hits it, through the operator API or
/// `cphub phones reset` (a process of its own, which records the refusal in the recovery
/// log), starts the recovery pause just as the watchdog's own calls do. Here no phone is
/// silent, so nothing but the manual reset can start it.
async fn a_manual_reset_refused_for_arrears_7_2_pauses_recoveries(backend: Backend) {
    let fleet = start(backend, 2, "", |_| {}).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    fleet.simulator.faults.set_arrears(true);

    // A restart (no property read first) is refused the same way: the answer is the record
    // as it stands, its refusal in it (it said `pending`, no job, as first inserted).
    for action in ["reset", "restart"] {
        let res = manual(&fleet.app, &phone_id, action).await;

        assert_eq!(res.status(), 202);
        let recovery: Value = res.json().await.unwrap();
        assert_eq!(recovery["outcome"], "error", "{recovery}");
        assert!(
            recovery["error"].as_str().unwrap().starts_with("CPS.0006"),
            "{recovery}"
        );
        wait_for_metric(&fleet.app, "cphub_cph_account_blocked", 1.0).await;
    }
    fleet.simulator.faults.set_arrears(false);
    wait_for_metric(&fleet.app, "cphub_cph_account_blocked", 0.0).await;

    fleet.simulator.faults.set_arrears(true);
    let out = cli_reset(&fleet, &phone_id, &[]).await;

    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CPS.0006"),
        "{out:?}"
    );
    wait_for_metric(&fleet.app, "cphub_cph_account_blocked", 1.0).await;
    let log = recoveries(&fleet.app, &phone_id).await;
    assert!(
        log.iter()
            .all(|r| r["outcome"] == "error" && r["reason"] == "manual"),
        "{log:?}"
    );
    assert_ne!(fleet.app.phone(&phone_id).await.unwrap()["state"], "broken");
    fleet.simulator.faults.set_arrears(false);
    wait_for_metric(&fleet.app, "cphub_cph_account_blocked", 0.0).await;
    fleet.simulator.stop().await;
}

/// `cphub phones reset --wait` of phone 0 of a fleet whose phones carry `properties` of
/// their own (none falls silent: the CLI is the only one to reset): the fleet, the line
/// printed for the phone (split at its tabs), and phone 0's properties after it.
async fn cli_reset_carrying(
    backend: Backend,
    properties: &[(&str, &str)],
) -> (Fleet, Vec<String>, BTreeMap<String, String>) {
    let fleet = start_carrying(backend, properties, |_| {}).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();

    let out = cli_reset(&fleet, &phone_id, &["--wait"]).await;

    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(printed.lines().count(), 1, "{printed}");
    let line: Vec<String> = printed.trim_end().split('\t').map(str::to_owned).collect();
    assert_eq!(line[0], phone_id, "{printed}");
    let after = fleet.simulator.fleet.lock().phones[0].properties.clone();
    (fleet, line, after)
}

/// `cphub phones reset --wait` whose job (4.4.1) has not ended by `cph.job_deadline_secs`
/// fails: the script asked for the end and did not get it. The command's own watchdog
/// follows the job and records it `error`, saying it was still running; read just before
/// that, the recovery is still `pending`, which with `--wait` fails the command as well
/// (it exited 0 then).
async fn cli_reset_wait_fails_when_the_job_has_not_ended_by_the_deadline_4_3_5(backend: Backend) {
    let fleet = start_carrying(backend, &APP_PORT_AND_SCREEN, |o| o.job_delay_ms = 8000).await;
    let phone_id = fleet.simulator.phone_ids()[0].clone();
    let mut cmd = cli_reset_command(&fleet, &phone_id, &["--wait"]);
    cmd.env("CPHUB__CPH__JOB_DEADLINE_SECS", "1")
        .env("CPHUB__CPH__JOB_POLL_INTERVAL_MS", "200");

    let out = crate::helpers::child_output(cmd).await;

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let line: Vec<&str> = printed.trim_end().split('\t').collect();
    assert_eq!(line[0], phone_id.as_str(), "{printed}");
    match line[1] {
        "error" => assert!(line[5].contains("still running after"), "{printed}"),
        outcome => assert_eq!(outcome, "pending", "{printed}"),
    }
    fleet.simulator.stop().await;
}

/// Chapters 4.3.5, 4.3.2 and appendix A.1, through the CLI: `cphub phones reset` takes the
/// watchdog's path, so the reset carries the phone's own properties and the callback ones,
/// says which it re-applied, and is in the recovery log as a manual reset.
async fn cli_reset_4_3_5_keeps_the_phones_own_properties_and_is_logged(backend: Backend) {
    let (fleet, line, properties) = cli_reset_carrying(backend, &APP_PORT_AND_SCREEN).await;

    let reapplied = "reset re-applied the phone's own properties com.cph.cg.app_port, \
                     ro.horizontal.screen and cphub's callback properties";
    assert_eq!(line[1], "succeeded", "{line:?}");
    assert!(line[3].starts_with("job="), "{line:?}");
    assert_eq!(line[4], reapplied, "{line:?}");
    assert_kept_with_the_callbacks(&fleet, &properties);
    let phone_id = &fleet.simulator.phone_ids()[0];
    assert_eq!(jobs_of(&fleet.simulator, phone_id, JobKind::Reset), 1);
    let log = recoveries(&fleet.app, phone_id).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(
        (&log[0]["reason"], &log[0]["action"], &log[0]["outcome"]),
        (&"manual".into(), &"reset".into(), &"succeeded".into()),
        "{log:?}"
    );
    assert_eq!(log[0]["detail"], reapplied);
    fleet.simulator.stop().await;
}

/// Chapters 4.3.5, 7.2 and appendix A.1, through the CLI: a key of the phone's own that the
/// reset refuses (CPS.0200) is dropped, and the line printed names it and the refusal.
async fn cli_reset_4_3_5_reports_a_refused_key(backend: Backend) {
    let own = [("vendor.fan", "2"), ("ro.horizontal.screen", "1")];
    let (fleet, line, properties) = cli_reset_carrying(backend, &own).await;

    assert_eq!(line[1], "succeeded", "{line:?}");
    assert!(
        line[4].contains("vendor.fan dropped: the reset refused it (CPS.0200:"),
        "{line:?}"
    );
    assert!(
        line[4].contains("re-applied the phone's own properties ro.horizontal.screen and"),
        "{line:?}"
    );
    assert_eq!(properties.get("vendor.fan"), None);
    assert_eq!(properties.get("ro.horizontal.screen").unwrap(), "1");
    assert!(properties.contains_key(HEARTBEAT_URL));
    fleet.simulator.stop().await;
}

backend_tests!(
    reset_4_3_5_falls_back_to_the_properties_phone_sync_read,
    cli_reset_4_3_5_keeps_the_phones_own_properties_and_is_logged,
    cli_reset_4_3_5_reports_a_refused_key,
    cli_reset_wait_fails_when_the_job_has_not_ended_by_the_deadline_4_3_5,
    reset_4_3_5_refused_for_one_property_drops_it_and_says_so,
    a_manual_reset_refused_for_arrears_7_2_pauses_recoveries,
    a_dead_server_produces_one_incident_and_no_per_phone_restarts,
    the_grace_after_a_closed_incident_outlives_a_restart_of_cphub,
    a_released_servers_phones_are_unlisted_and_left_alone_4_3_1,
    a_lost_restart_answer_7_1_2_is_reconciled_not_resent,
    a_restart_refused_try_again_later_7_2_is_tried_again_not_answered_with_a_reset,
    a_restart_refused_in_its_entry_4_3_6_is_an_error_tried_again_not_a_reset,
    a_lost_restart_answer_whose_jobs_cannot_be_listed_is_settled_by_the_phone_7_1_2,
    a_restart_answered_504_before_it_starts_7_1_2_waits_for_its_job_4_4_2,
    a_restart_whose_job_never_shows_ends_in_an_error_and_is_tried_again_7_1_2,
    a_recovery_still_being_sent_is_not_reconciled_7_1_2,
    arrears_7_2_pause_recoveries_until_the_account_is_served_again,
    status_4_3_1_stopped_frozen_stopping_or_restarting_phones_are_left_alone,
    status_change_between_sync_and_decision_4_3_2_leaves_the_phone_alone,
    reset_4_3_5_carries_the_phones_own_properties_and_the_callbacks,
    a_phone_stopped_through_cphub_is_out_of_service_at_once,
    jittered_heartbeats_within_the_threshold_recover_nothing,
    restarting_cphub_mid_run_recovers_nothing,
    a_control_plane_outage_recovers_nothing,
    an_excluded_phone_is_never_touched,
    an_excluded_silent_phone_does_not_make_its_server_an_incident,
    the_in_flight_cap_holds_when_many_phones_go_silent_at_once,
    a_silent_phone_is_restarted_and_comes_back,
    a_phone_whose_restart_fails_is_reset_with_its_callbacks,
    a_session_on_a_silent_phone_ends_abandoned_at_its_last_heartbeat,
    a_game_gone_without_a_quit_6_4_ends_abandoned_and_frees_its_phone,
    dry_run_records_decisions_and_calls_nothing,
    a_phone_that_keeps_failing_is_marked_broken_and_left_alone,
    an_operator_can_restart_a_phone_through_the_same_log,
    with_the_watchdog_off_a_manual_recovery_is_refused_naming_it_and_exec_runs,
    without_a_control_plane_manual_recovery_is_unavailable,
);

async fn is_leader(app: &TestApp) -> bool {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines().any(|line| line == "cphub_watchdog_leader 1")
}

/// Two replicas on one PostgreSQL: one acts; when it dies the other takes over; no phone is
/// restarted twice for one incident.
#[test]
fn one_replica_acts_and_another_takes_over_when_it_dies() {
    crate::helpers::run_scenario(
        "one_replica_acts_and_another_takes_over_when_it_dies",
        async {
            if !crate::helpers::postgres_available() {
                return;
            }
            let db = TestDb::new(Backend::Postgres).await;
            let second_db = db.same_database();
            let fleet = start_on(db, 2, "", |o| o.silent = 1).await;
            let other_port = free_port();
            let second = TestApp::spawn_on(
                second_db,
                &cphub_settings(other_port, &fleet.simulator, &fleet.options, ""),
            )
            .await;
            let [first_phone, second_phone] =
                [0, 1].map(|i| fleet.simulator.phone_ids()[i].clone());

            let log = wait_for_recoveries(&fleet.app, &first_phone, |log| {
                has(log, "restart", "succeeded")
            })
            .await;
            assert_eq!(
                log.iter().filter(|r| r["action"] == "restart").count(),
                1,
                "one restart for one incident: {log:?}"
            );
            let (leader, survivor) = match (is_leader(&fleet.app).await, is_leader(&second).await) {
                (true, false) => (fleet.app, second),
                (false, true) => (second, fleet.app),
                both => panic!("exactly one replica must lead, saw {both:?}"),
            };

            leader.stop().await;
            fleet.simulator.fleet.lock().phones[1].faults.silent = true;

            let log = wait_for_recoveries(&survivor, &second_phone, |log| {
                has(log, "restart", "succeeded")
            })
            .await;
            assert_eq!(
                log.iter().filter(|r| r["action"] == "restart").count(),
                1,
                "{log:?}"
            );
            assert!(is_leader(&survivor).await);
            fleet.simulator.stop().await;
        },
    )
}
