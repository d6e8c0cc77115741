//! Game version rollouts against the simulator (chapter 5.3, 4.4): phones are drained, the
//! sessions on them play to their end, each phone is updated once (5.3.7) and verified
//! (5.3.6) before it goes back to the pool; a version not on the phones' servers is refused
//! (5.3.1) unless pushed first (5.3.4); a failing canary pauses the rollout, and an abort
//! returns the phones. Timings are shortened (1 s heartbeats, 100 ms ticks), never asserted.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cphub::simulator::control_plane::Operation;
use cphub::simulator::fleet::{JobFailure, JobKind};
use cphub::simulator::{SimOptions, Simulator};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, TestDb, assert_error};
use crate::simulation::{configure_callbacks, start_cphub, start_simulator};
use crate::watchdog::{Pace, cphub_settings_paced, free_port, simulator_options};

backend_tests!(
    a_rollout_updates_every_phone_once_and_interrupts_no_session_5_3_7,
    a_version_not_on_the_servers_is_refused_naming_them_5_3_1,
    a_failing_canary_pauses_the_rollout_and_an_abort_returns_the_phones_4_4_1,
    a_restarted_cphub_finishes_the_rollout_updating_no_phone_twice_7_1_2,
    a_phone_being_updated_is_draining_and_refuses_a_manual_restart_or_reset_5_3_7,
    idle_phones_are_updated_at_once_and_busy_ones_only_after_their_sessions_5_3_7,
    a_phone_the_operator_stopped_is_waited_on_not_updated_4_3_1,
    a_phone_whose_server_is_released_mid_rollout_fails_and_the_rollout_ends_4_3_1,
    an_update_job_that_never_ends_frees_its_phone_at_the_job_deadline_4_4_1,
    an_outage_fails_no_phone_and_a_refused_account_pauses_the_rollout_7_2,
    an_update_whose_job_starts_late_is_waited_for_not_failed_at_the_drain_deadline_7_1_2,
    a_canary_paused_and_resumed_before_it_ran_is_a_canary_again,
    a_phone_whose_versions_cannot_be_read_after_its_job_is_not_failed_for_it_5_3_6,
    an_outage_holds_no_phone_out_of_the_pool_7_2,
    a_canary_failing_within_max_failures_lets_the_next_batch_take_batch_size,
    phones_listing_versions_without_ids_as_5_3_6_shows_are_done_after_their_jobs,
    a_version_refused_in_5_3_7s_answer_fails_the_phone_even_when_5_3_6_names_no_version,
    a_phone_whose_first_job_failed_stays_out_of_the_pool_until_its_others_end_5_3_7,
    a_drained_phone_still_stopped_at_the_drain_deadline_is_skipped_then_given_up_and_the_rollout_ends_4_3_1,
);

pub(crate) const APP: &str = "sim.game";

/// `version` on every server of the simulator as if pushed (5.3.4), without its job.
pub(crate) fn push_by_hand(simulator: &Simulator, version: &str) {
    let mut fleet = simulator.fleet.lock();
    for server in fleet.server_ids() {
        let pushed = fleet.pushed.entry(server).or_default();
        pushed.insert(version.to_owned());
    }
}

pub(crate) struct Rig {
    pub(crate) app: TestApp,
    pub(crate) simulator: Simulator,
    /// cphub's settings, to start it again on the same database and port.
    pub(crate) settings: String,
    pub(crate) options: SimOptions,
}

async fn start(backend: Backend, phones: usize, tune: impl FnOnce(&mut SimOptions)) -> Rig {
    start_with(backend, phones, "", tune).await
}

/// Phones count as silent after ten missed heartbeats here, not the watchdog tests' two: no
/// rollout scenario silences a phone, and on a loaded machine two seconds without a
/// heartbeat stored is enough for the watchdog to end a healthy phone's session.
const PACE: Pace = Pace {
    miss_threshold: 10,
    ..Pace::EAGER
};

/// With `extra` appended to cphub's settings (after its `[watchdog]` section).
pub(crate) async fn start_with(
    backend: Backend,
    phones: usize,
    extra: &str,
    tune: impl FnOnce(&mut SimOptions),
) -> Rig {
    start_paced(backend, phones, extra, PACE, tune).await
}

async fn start_paced(
    backend: Backend,
    phones: usize,
    extra: &str,
    pace: Pace,
    tune: impl FnOnce(&mut SimOptions),
) -> Rig {
    let port = free_port();
    let options = simulator_options(port, phones, tune);
    let simulator = start_simulator(&options).await;
    let settings = cphub_settings_paced(port, &simulator, &options, extra, pace);
    let db = TestDb::new(backend).await;
    let app = start_cphub(db, &settings).await;
    configure_callbacks(&app.address, &simulator, &options).await;
    let rig = Rig {
        app,
        simulator,
        settings,
        options,
    };
    rig.wait_for_phones_with_app(phones).await;
    rig
}

impl Rig {
    /// Phone sync has read which phones have the app (5.1.2) and each has heartbeat.
    async fn wait_for_phones_with_app(&self, count: usize) {
        self.wait(|| async {
            let page = self.get(&format!("/api/v1/phones?app_id={APP}")).await;
            let phones = page["phones"].as_array().cloned().unwrap_or_default();
            phones.len() == count && phones.iter().all(|p| !p["last_seen_at"].is_null())
        })
        .await;
    }

    /// A new version of the app, uploaded (5.2) but pushed nowhere.
    pub(crate) fn new_version(&self) -> String {
        self.simulator.fleet.lock().new_version(APP).unwrap()
    }

    /// `version` on every server without a 5.3.4 job (which takes the simulator's job delay).
    /// cphub stopped (as on SIGTERM) and started again on the same database and settings.
    pub(crate) async fn restart(self) -> Rig {
        let Rig {
            app,
            simulator,
            settings,
            options,
        } = self;
        let db = app.stop().await;
        let app = TestApp::spawn_on(db, &settings).await;
        Rig {
            app,
            simulator,
            settings,
            options,
        }
    }

    /// Jobs started from now on run `delay`: the set-up (pointing the phones at cphub, two
    /// jobs a phone) ran with the quick jobs of the options, a test's update need not.
    pub(crate) fn slow_jobs_from_now(&self, delay: std::time::Duration) {
        self.simulator.fleet.lock().job_delay_override = Some(delay);
    }

    pub(crate) fn push_by_hand(&self, version: &str) {
        push_by_hand(&self.simulator, version);
    }

    pub(crate) async fn get(&self, path: &str) -> Value {
        let res = self.app.get(path, Some(TOKEN)).await;
        assert_eq!(res.status(), 200, "GET {path}");
        res.json().await.unwrap()
    }

    pub(crate) async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        (self.app.client)
            .post(format!("{}{path}", self.app.address))
            .bearer_auth(TOKEN)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub(crate) async fn start_rollout(&self, body: &Value) -> Value {
        let res = self.post("/api/v1/rollouts", body).await;
        let status = res.status();
        let rollout: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{rollout}");
        rollout
    }

    pub(crate) async fn rollout(&self, id: &Value) -> Value {
        self.get(&format!("/api/v1/rollouts/{id}")).await
    }

    pub(crate) async fn wait_for_rollout(&self, id: &Value, state: &str) -> Value {
        for _ in 0..600 {
            let rollout = self.rollout(id).await;
            if rollout["state"] == state {
                return rollout;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // What it is stuck at says why, where a bare "never" would not.
        panic!(
            "the rollout never became {state}: {}",
            self.rollout(id).await
        );
    }

    /// Waits for the rollout to leave `running`: done, paused or aborted.
    pub(crate) async fn wait_for_end(&self, id: &Value) -> Value {
        for _ in 0..600 {
            let rollout = self.rollout(id).await;
            if rollout["state"] != "running" {
                return rollout;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the rollout never ended: {}", self.rollout(id).await);
    }

    pub(crate) async fn wait<F, Fut>(&self, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        // A wall-clock bound as well as a count: 600 checks of a slow answer each would
        // outlive the scenario's own limit, and fail as "it hangs" instead of here.
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        for _ in 0..600 {
            if check().await {
                return;
            }
            if std::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("condition never held");
    }

    /// Every job the simulator ran on the phone, of any kind.
    fn jobs_of(&self, phone_id: &str) -> usize {
        let fleet = self.simulator.fleet.lock();
        (fleet.jobs.values())
            .filter(|j| j.phone_id.as_deref() == Some(phone_id))
            .count()
    }

    /// 5.3.7 jobs the simulator ran per phone: one per call (one version per rollout).
    pub(crate) fn updates_of(&self, phone_id: &str) -> usize {
        let fleet = self.simulator.fleet.lock();
        (fleet.jobs.values())
            .filter(|j| j.kind == JobKind::UpdateAppVersion)
            .filter(|j| j.phone_id.as_deref() == Some(phone_id))
            .count()
    }
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value.as_str().and_then(|t| t.parse().ok())
}

/// 8 phones, 12 sessions of 3 s coming in every 200 ms: the rollout takes all 8 in one
/// batch, updates the free ones at once and the busy ones when their session ends.
async fn a_rollout_updates_every_phone_once_and_interrupts_no_session_5_3_7(backend: Backend) {
    let sessions = 12;
    let rig = start(backend, 8, |o| {
        o.token = Some(TOKEN.to_owned());
        o.sessions = sessions;
        o.player_interval_ms = 200;
        o.session_min_secs = 3;
        o.session_max_secs = 3;
    })
    .await;
    let version = rig.new_version();
    rig.wait(|| async { rig.simulator.stats.played().len() >= 2 })
        .await;

    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 8,
            "drain_deadline_secs": 60, "push_first": true,
        }))
        .await;
    let done = rig.wait_for_rollout(&rollout["id"], "done").await;

    let phones = done["phones"].as_array().unwrap();
    assert_eq!(phones.len(), 8);
    for phone in phones {
        let phone_id = phone["phone_id"].as_str().unwrap();
        assert_eq!(phone["state"], "done", "{phone}");
        assert_eq!(rig.updates_of(phone_id), 1, "updated once: {phone_id}");
        let installed = rig.simulator.fleet.lock().phone(phone_id).unwrap().versions[APP].clone();
        assert_eq!(installed, version);
        // None allocated while drained: no session of the phone was minted while its
        // update ran. A session's `created_at` is its request's arrival, which precedes its
        // allocation by the mint's queue wait, so the drain's own edges are no proof: a
        // request that came just before `finished_at` may rightly take the phone just after
        // it. The update window is: `submitted_at` is taken a tick after the drain
        // committed, and the phone stays drained until a tick after `job_ended_at`.
        let (drained, back) = (time(&phone["submitted_at"]), time(&phone["job_ended_at"]));
        let list = rig
            .get(&format!("/api/v1/sessions?phone_id={phone_id}&limit=100"))
            .await;
        for session in list["sessions"].as_array().unwrap() {
            let created = time(&session["created_at"]).unwrap();
            assert!(
                !(drained.unwrap() < created && created < back.unwrap()),
                "{session} minted on {phone_id} while it was updated ({phone})"
            );
        }
    }
    // None interrupted: an update restarts the game (the simulator loses the session, as
    // a real phone would), so every started session ending with its quit proves none was.
    rig.wait(|| async {
        let stats = &rig.simulator.stats;
        stats
            .sessions_started
            .load(std::sync::atomic::Ordering::Relaxed)
            == sessions
            && stats.played().len() as u64 == sessions
    })
    .await;
    rig.simulator.stop().await;
}

async fn a_version_not_on_the_servers_is_refused_naming_them_5_3_1(backend: Backend) {
    let rig = start(backend, 3, |o| o.phones_per_server = 2).await;
    let version = rig.new_version();

    let res = rig
        .post(
            "/api/v1/rollouts",
            &json!({"app_id": APP, "app_version_ids": [version]}),
        )
        .await;

    let body = assert_error(res, 409, "CPHUB.VERSION_NOT_PUSHED").await;
    let servers = rig.simulator.fleet.lock().server_ids();
    assert_eq!(servers.len(), 2);
    for server in servers {
        assert!(
            body["error_msg"].as_str().unwrap().contains(&server),
            "{body}"
        );
    }
    // Plans and targets out of bounds are the operator's 400, naming the field; the CLI
    // takes the same bounds (the domain's unit tests).
    let many = |n: usize| (0..n).map(|i| format!("x{i}")).collect::<Vec<_>>();
    for (bad, field) in [
        (
            json!({"app_id": APP, "app_version_ids": []}),
            "app_version_ids",
        ),
        (
            json!({"app_id": APP, "app_version_ids": many(17)}),
            "app_version_ids",
        ),
        // 5.3.7 starts a job per id: one listed twice would install twice.
        (
            json!({"app_id": APP, "app_version_ids": [version, version]}),
            "app_version_ids",
        ),
        (
            json!({"app_id": APP, "app_version_ids": [version], "batch_size": 0}),
            "batch_size",
        ),
        (
            json!({"app_id": APP, "app_version_ids": [version], "canary": 2_000_000}),
            "canary",
        ),
        (
            json!({"app_id": APP, "app_version_ids": [version], "target": {"percent": 0}}),
            "target.percent",
        ),
        (
            json!({"app_id": APP, "app_version_ids": [version], "target": {"phones": many(1_001)}}),
            "target.phones",
        ),
    ] {
        let body = assert_error(
            rig.post("/api/v1/rollouts", &bad).await,
            400,
            "CPHUB.INVALID_FIELD",
        )
        .await;
        assert!(
            body["error_msg"].as_str().unwrap().starts_with(field),
            "{field}: {body}"
        );
    }
    // The longest list of phones the schema allows is read, not refused as too large (413:
    // 67 KB, over `api.body_limit`'s 64 KiB): none of them has the app.
    let longest: Vec<String> = (0..1_000).map(|i| format!("{i:064}")).collect();
    let res = (rig.post(
        "/api/v1/rollouts",
        &json!({"app_id": APP, "app_version_ids": [version],
        "target": {"phones": longest}}),
    ))
    .await;
    assert_error(res, 409, "CPHUB.NO_TARGET_PHONES").await;
    // A mistyped version: pushing it is refused (7.2 `CPS.0200`), which is the operator's
    // field, not a failure of the control plane.
    let typo = json!({"app_id": APP, "app_version_ids": ["0123abcd"], "push_first": true});
    let body = assert_error(
        rig.post("/api/v1/rollouts", &typo).await,
        400,
        "CPHUB.INVALID_FIELD",
    )
    .await;
    let message = body["error_msg"].as_str().unwrap();
    assert!(
        message.starts_with("app_version_ids") && message.contains("CPS.0200"),
        "{body}"
    );
    assert_eq!(rig.get("/api/v1/rollouts").await["rollouts"], json!([]));
    rig.simulator.stop().await;
}

async fn a_failing_canary_pauses_the_rollout_and_an_abort_returns_the_phones_4_4_1(
    backend: Backend,
) {
    let rig = start(backend, 4, |_| {}).await;
    let version = rig.new_version();
    // The canary is the first phone in id order.
    let canary = {
        let mut fleet = rig.simulator.fleet.lock();
        fleet.phones[0].faults.update_fails = true;
        fleet.phones[0].phone_id.clone()
    };

    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 1, "batch_size": 3,
            "max_failures": 0, "push_first": true,
        }))
        .await;
    let paused = rig.wait_for_rollout(&rollout["id"], "paused").await;

    assert_eq!(paused["paused_by"], "cphub");
    let phones = paused["phones"].as_array().unwrap();
    let step = |id: &str| phones.iter().find(|p| p["phone_id"] == id).unwrap()["state"].clone();
    assert_eq!(step(&canary), "failed");
    assert!(
        phones[0]["error"].as_str().unwrap().contains("4.4.1"),
        "{paused}"
    );
    // A pause body that does not parse is refused as such, not taken as none (a good one
    // is told the rollout is paused already).
    let pause = format!("/api/v1/rollouts/{}/pause", rollout["id"]);
    // A NUL, which PostgreSQL's text refuses, is the operator's 400 too, not a 500.
    for bad in [
        json!({"reason": 5}),
        json!({"reasn": "misspelt"}),
        json!({"reason": "x\u{0}"}),
    ] {
        assert_error(rig.post(&pause, &bad).await, 400, "CPHUB.INVALID_FIELD").await;
    }
    let big = json!({"reason": "x".repeat(2 << 20)});
    assert_error(rig.post(&pause, &big).await, 413, "CPHUB.PAYLOAD_TOO_LARGE").await;
    let good = json!({"reason": "again"});
    assert_error(rig.post(&pause, &good).await, 409, "CPHUB.ROLLOUT_CONFLICT").await;
    for phone in &phones[1..] {
        assert_eq!(
            phone["state"], "pending",
            "no batch after a failed canary: {paused}"
        );
        assert_eq!(rig.updates_of(phone["phone_id"].as_str().unwrap()), 0);
    }

    let res = rig
        .post(
            &format!("/api/v1/rollouts/{}/abort", rollout["id"]),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let aborted = rig.rollout(&rollout["id"]).await;
    assert_eq!(aborted["state"], "aborted");
    // Every phone is in the pool again: four mints get four phones.
    for user in 0..4 {
        rig.app
            .mint_ok(&json!({"app_id": APP, "user_id": format!("u-{user}")}))
            .await;
    }
    let res = rig
        .post(
            &format!("/api/v1/rollouts/{}/resume", rollout["id"]),
            &json!({}),
        )
        .await;
    assert_error(res, 409, "CPHUB.ROLLOUT_CONFLICT").await;
    rig.simulator.stop().await;
}

/// cphub stops while a batch's updates run (their jobs take 1.5 s), and the answers of
/// the first two 5.3.7 calls are lost (7.1.2: performed, answered 502): a new cphub on the
/// same database follows the updates it finds (by request id, 4.4.2) and finishes the
/// rollout, and the simulator ran exactly one update per phone.
async fn a_restarted_cphub_finishes_the_rollout_updating_no_phone_twice_7_1_2(backend: Backend) {
    use cphub::simulator::control_plane::LostAnswer;
    let rig = start(backend, 6, |o| o.job_delay_ms = 1500).await;
    let version = rig.new_version();
    (rig.simulator.faults).lose_answers(Operation::UpdateAppVersion, 2, LostAnswer::BadGateway);

    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 3,
            "push_first": true,
        }))
        .await;
    rig.wait(|| async {
        let now = rig.rollout(&rollout["id"]).await;
        let phones = now["phones"].as_array().cloned().unwrap_or_default();
        phones.iter().filter(|p| p["state"] == "updating").count() == 3
    })
    .await;
    let rig = rig.restart().await;

    let done = rig.wait_for_rollout(&rollout["id"], "done").await;

    for phone in done["phones"].as_array().unwrap() {
        let phone_id = phone["phone_id"].as_str().unwrap();
        assert_eq!(phone["state"], "done", "{phone}");
        assert_eq!(phone["attempts"], 1, "{phone}");
        assert_eq!(rig.updates_of(phone_id), 1, "updated once: {phone_id}");
    }
    rig.simulator.stop().await;
}

/// 5.3.6's (and 5.3.1's) example answers `""` for every version id. A control plane that
/// does leaves nothing to compare: a phone that listed the app after its update job
/// succeeded (4.4.1) and heartbeat is done, not failed "the phone does not list the new
/// version" (which failed every phone and paused the rollout).
async fn phones_listing_versions_without_ids_as_5_3_6_shows_are_done_after_their_jobs(
    backend: Backend,
) {
    let rig = start(backend, 3, |_| {}).await;
    let version = rig.new_version();
    rig.simulator.faults.set_blank_versions(true);

    // 5.3.1 names no version either: pushed (5.3.4), as it cannot be seen to be there.
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 3,
            "push_first": true,
        }))
        .await;
    let ended = rig.wait_for_end(&rollout["id"]).await;

    assert_eq!(ended["state"], "done", "{ended}");
    for phone in ended["phones"].as_array().unwrap() {
        let phone_id = text(&phone["phone_id"]);
        assert_eq!(phone["state"], "done", "{phone}");
        assert_eq!(rig.updates_of(&phone_id), 1, "updated once: {phone_id}");
    }
    rig.simulator.stop().await;
}

/// Of 20 phones, 6 carry long sessions when the rollout starts (one batch of all 20): the
/// 14 idle ones are updated (5.3.7) at once, each of the 6 only once its session has ended
/// with its player's quit — drained, not interrupted — and every phone exactly once.
async fn idle_phones_are_updated_at_once_and_busy_ones_only_after_their_sessions_5_3_7(
    backend: Backend,
) {
    let rig = start(backend, 20, |o| {
        o.token = Some(TOKEN.to_owned());
        o.sessions = 6;
        o.player_interval_ms = 100;
        o.session_min_secs = 15;
        o.session_max_secs = 15;
    })
    .await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    let playing = || async {
        let list = rig.get("/api/v1/sessions?state=playing&limit=100").await;
        list["sessions"].as_array().unwrap().clone()
    };
    rig.wait(|| async { playing().await.len() == 6 }).await;
    let busy: BTreeMap<String, String> = playing()
        .await
        .iter()
        .map(|s| (text(&s["phone_id"]), text(&s["session_id"])))
        .collect();

    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 20,
            "drain_deadline_secs": 120,
        }))
        .await;
    let done = rig.wait_for_rollout(&rollout["id"], "done").await;

    let mut first_end = None;
    let mut ends = BTreeMap::new();
    for (phone_id, session_id) in &busy {
        let session = rig.get(&format!("/api/v1/sessions/{session_id}")).await;
        assert_eq!(session["end_reason"], "quit", "not interrupted: {session}");
        let ended = time(&session["ended_at"]).unwrap();
        first_end = Some(first_end.map_or(ended, |first: DateTime<Utc>| first.min(ended)));
        ends.insert(phone_id.clone(), ended);
    }
    let phones = done["phones"].as_array().unwrap();
    assert_eq!(phones.len(), 20);
    for phone in phones {
        let phone_id = text(&phone["phone_id"]);
        assert_eq!(phone["state"], "done", "{phone}");
        assert_eq!(rig.updates_of(&phone_id), 1, "updated once: {phone_id}");
        let submitted = time(&phone["submitted_at"]).unwrap();
        match ends.get(&phone_id) {
            Some(ended) => assert!(
                submitted >= *ended,
                "busy, updated after its session: {phone}"
            ),
            None => assert!(
                submitted < first_end.unwrap(),
                "idle, updated at once: {phone}"
            ),
        }
    }
    rig.simulator.stop().await;
}

fn text(value: &Value) -> String {
    value.as_str().unwrap().to_owned()
}

/// The canary's update (5.3.7) runs 20 s (jobs are slowed once the fleet is set up; the
/// checks below take a second or two): while it runs
/// the phone shows `draining` (the others stay `idle`) and a manual restart or reset of it,
/// through the API or the CLI, is refused naming the rollout, and nothing is sent or logged.
async fn a_phone_being_updated_is_draining_and_refuses_a_manual_restart_or_reset_5_3_7(
    backend: Backend,
) {
    let rig = start(backend, 3, |_| {}).await;
    rig.slow_jobs_from_now(std::time::Duration::from_secs(20));
    let version = rig.new_version();
    // Pushed by hand: a 5.3.4 job would take its 20 s too.
    rig.push_by_hand(&version);
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 1, "batch_size": 2,
        }))
        .await;
    let id = &rollout["id"];
    rig.wait(|| async { rig.rollout(id).await["phones"][0]["state"] == "updating" })
        .await;
    let phones = rig.rollout(id).await["phones"].clone();
    let canary = phones[0]["phone_id"].as_str().unwrap().to_owned();
    let other = phones[1]["phone_id"].as_str().unwrap().to_owned();

    let at = &rig;
    let state = |phone: String| async move {
        at.get(&format!("/api/v1/phones/{phone}")).await["state"].clone()
    };
    assert_eq!(state(canary.clone()).await, "draining");
    rig.wait(|| async { state(other.clone()).await == "idle" })
        .await;
    let listed = rig.get("/api/v1/phones").await;
    let listed_state = |phone: &str| {
        let all = listed["phones"].as_array().unwrap();
        all.iter().find(|p| p["phone_id"] == phone).unwrap()["state"].clone()
    };
    assert_eq!(listed_state(&canary), "draining", "{listed}");
    let metrics = rig.app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("cphub_phones{state=\"draining\"} 1"),
        "{metrics}"
    );

    let jobs_before = rig.jobs_of(&canary);
    for action in ["restart", "reset"] {
        let res = rig
            .post(&format!("/api/v1/phones/{canary}/{action}"), &json!({}))
            .await;
        let body = assert_error(res, 409, "CPHUB.RECOVERY_REFUSED").await;
        let message = body["error_msg"].as_str().unwrap();
        assert!(message.contains(&format!("rollout {id}")), "{body}");
    }
    let out = crate::cli::cphub_on_simulator(
        &rig.simulator,
        &rig.options,
        &rig.app.db.url,
        &["phones", "restart", &canary],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.starts_with(&format!("{canary}\trefused\trollout {id} is updating")),
        "{printed}"
    );
    let log = rig
        .get(&format!("/api/v1/recoveries?phone_id={canary}"))
        .await;
    assert_eq!(log["recoveries"], json!([]), "nothing logged: {log}");
    assert_eq!(
        rig.jobs_of(&canary),
        jobs_before,
        "no restart or reset sent"
    );
    rig.simulator.stop().await;
}

/// Chapter 4.3.1: a phone the operator stopped (8) after it joined the fleet is drained
/// with the others but never sent the update (5.3.7) while it is stopped; the others are
/// updated. The engine sent it the update, as to any idle phone, before it read the phone's
/// status and freshness.
async fn a_phone_the_operator_stopped_is_waited_on_not_updated_4_3_1(backend: Backend) {
    let (rig, ids, rollout) = a_rollout_past_a_stopped_phone(backend, 1).await;
    let stopped = &ids[0];

    let now = rig.rollout(&rollout["id"]).await;
    assert_eq!(text(&phone_of(&now, stopped)["state"]), "draining", "{now}");
    assert_eq!(
        rig.updates_of(stopped),
        0,
        "the stopped phone was sent the update"
    );
    for other in &ids[1..] {
        assert_eq!(rig.updates_of(other), 1, "{other}");
    }
    rig.simulator.stop().await;
}

/// Three phones, each on a server of its own, the first stopped (4.3.1 status 8) once every
/// phone has been heard from (the rig waits for that first); with the phone ids.
async fn three_phones_the_first_stopped(backend: Backend) -> (Rig, Vec<String>) {
    let rig = start(backend, 3, |o| {
        o.stopped = 1;
        o.faults_after_secs = 10;
        o.phones_per_server = 1;
    })
    .await;
    let ids = rig.simulator.phone_ids();
    (rig.app)
        .wait_for_phone(&ids[0], |p| p["state"] == "out_of_service")
        .await;
    (rig, ids)
}

/// [`three_phones_the_first_stopped`], in a rollout of one batch of all three allowing
/// `max_failures`; returns once the two running phones are done, with the phone ids and
/// the rollout.
async fn a_rollout_past_a_stopped_phone(
    backend: Backend,
    max_failures: i64,
) -> (Rig, Vec<String>, Value) {
    let (rig, ids) = three_phones_the_first_stopped(backend).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 3,
            "drain_deadline_secs": 120, "max_failures": max_failures,
        }))
        .await;
    rig.wait(|| async {
        let now = rig.rollout(&rollout["id"]).await;
        ids[1..]
            .iter()
            .all(|id| text(&phone_of(&now, id)["state"]) == "done")
    })
    .await;
    (rig, ids, rollout)
}

/// The rollout's entry for `phone_id`.
fn phone_of(rollout: &Value, phone_id: &str) -> Value {
    let phones = rollout["phones"].as_array().unwrap();
    let phone = phones.iter().find(|p| p["phone_id"] == phone_id);
    phone.expect("the phone is in the rollout").clone()
}

/// A server released outside cphub (the reference has no call for it) takes its phones off
/// the 4.3.1 list. A drained phone waited on (stopped here, so not updated) whose server is
/// then released fails, "no longer lists", and the rollout ends `done`: the gone phone says
/// nothing of the version, so it does not count against `max_failures` (0). Before, it
/// stayed `draining` and the rollout never moved on.
async fn a_phone_whose_server_is_released_mid_rollout_fails_and_the_rollout_ends_4_3_1(
    backend: Backend,
) {
    let (rig, ids, rollout) = a_rollout_past_a_stopped_phone(backend, 0).await;
    let stopped = &ids[0];
    let server = rig
        .simulator
        .fleet
        .lock()
        .phone(stopped)
        .unwrap()
        .server_id
        .clone();

    rig.simulator.fleet.lock().release_server(&server);

    rig.wait(|| async { text(&rig.rollout(&rollout["id"]).await["state"]) == "done" })
        .await;
    let now = rig.rollout(&rollout["id"]).await;
    let gone = phone_of(&now, stopped);
    assert_eq!(text(&gone["state"]), "failed", "{now}");
    assert!(text(&gone["error"]).contains("no longer lists"), "{gone}");
    assert_eq!(rig.updates_of(stopped), 0);
    rig.simulator.stop().await;
}

/// Chapter 4.4.1: a job stays at status 1 (running) until it ends, and one the control plane
/// no longer knows cannot be read at all. Past `cph.job_deadline_secs` (5 s here) an update
/// whose job has not ended is judged by the phone's versions (5.3.6), read again while the
/// read fails: the phone whose job never ends fails and goes back to the pool, the one
/// whose job vanished after installing the version is verified and done; neither is sent
/// its update again. Before, both stayed `updating` for good: out of the pool and holding a
/// `max_in_flight` slot each.
async fn an_update_job_that_never_ends_frees_its_phone_at_the_job_deadline_4_4_1(backend: Backend) {
    let pace = Pace {
        job_deadline_secs: 5,
        ..PACE
    };
    let rig = start_paced(backend, 2, "", pace, |_| {}).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    rig.slow_jobs_from_now(Duration::from_secs(3600));
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 2,
            "max_failures": 1,
        }))
        .await;
    let ids = rig.simulator.phone_ids();
    let (stuck, purged) = (&ids[0], &ids[1]);
    rig.wait(|| async {
        let now = rig.rollout(&rollout["id"]).await;
        let phones = now["phones"].as_array().unwrap().clone();
        phones
            .iter()
            .all(|p| p["state"] == "updating" && p["job_id"].is_string())
    })
    .await;
    {
        // The purged phone's job ran and was then forgotten by the control plane.
        let mut fleet = rig.simulator.fleet.lock();
        fleet
            .jobs
            .retain(|_, job| job.phone_id.as_deref() != Some(purged.as_str()));
        let phone = fleet.phone_mut(purged).unwrap();
        phone.versions.insert(APP.to_owned(), version.clone());
    }
    // The first reads of the phones' versions past the deadline fail (7.2's system error):
    // that says nothing of the updates, so they are asked again, not failed.
    (rig.simulator.faults).system_errors(Operation::PhoneApps, 8);

    let done = rig.wait_for_rollout(&rollout["id"], "done").await;
    let phone = |id: &str| {
        let phones = done["phones"].as_array().unwrap();
        phones.iter().find(|p| p["phone_id"] == id).unwrap().clone()
    };
    let failed = phone(stuck);
    assert_eq!(failed["state"], "failed", "{done}");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("status 1") && error.contains("job_deadline_secs"),
        "{error}"
    );
    assert_eq!(phone(purged)["state"], "done", "{done}");
    assert_eq!(phone(stuck)["attempts"], 1);
    assert_eq!(phone(purged)["attempts"], 1);
    assert_eq!(
        rig.updates_of(stuck),
        1,
        "the stuck phone was sent its update again"
    );
    // Both are in the pool again.
    for user in ["u-1", "u-2"] {
        rig.app
            .mint_ok(&json!({"app_id": APP, "user_id": user}))
            .await;
    }
    rig.simulator.stop().await;
}

/// 7.2: an update refused without anything done (`CPS.0003` to the last retry, then the
/// breaker open) says nothing of the phone: it is pending again and sent later, not failed
/// (with `max_failures` 0 that would also have paused the rollout). The account refused
/// (`CPS.0006`, arrears) says nothing of any phone either: the rollout pauses itself naming
/// the code, fails no phone, and a resume once the account is paid finishes it, every phone
/// updated once.
async fn an_outage_fails_no_phone_and_a_refused_account_pauses_the_rollout_7_2(backend: Backend) {
    let pace = Pace {
        cph: "breaker_open_secs = 1\n",
        ..PACE
    };
    let rig = start_paced(backend, 4, "", pace, |_| {}).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    (rig.simulator.faults).system_errors(Operation::UpdateAppVersion, 10_000);
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 4,
            "max_failures": 0,
        }))
        .await;
    let id = &rollout["id"];
    every_phone_tried_again(&rig, id).await;
    assert_eq!(rig.rollout(id).await["state"], "running");

    rig.simulator.faults.set_arrears(true);
    (rig.simulator.faults).system_errors(Operation::UpdateAppVersion, 0);
    let paused = rig.wait_for_rollout(id, "paused").await;

    assert_eq!(paused["paused_by"], "cphub", "{paused}");
    let reason = paused["pause_reason"].as_str().unwrap();
    assert!(reason.contains("CPS.0006"), "{reason}");
    for phone in paused["phones"].as_array().unwrap() {
        assert_eq!(phone["state"], "pending", "returned to the pool: {phone}");
        assert_eq!(rig.updates_of(&text(&phone["phone_id"])), 0);
    }

    rig.simulator.faults.set_arrears(false);
    let res = rig
        .post(&format!("/api/v1/rollouts/{id}/resume"), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let done = rig.wait_for_rollout(id, "done").await;
    for phone in done["phones"].as_array().unwrap() {
        assert_eq!(phone["state"], "done", "{phone}");
        assert_eq!(rig.updates_of(&text(&phone["phone_id"])), 1, "{phone}");
    }
    rig.simulator.stop().await;
}

/// 7.1.2: the update's answer is a 504 at once and the control plane starts its job only
/// 10 s later; the drain deadline is 8 s. No job is found by request (4.4.2) and the version
/// is not on the phone until then, and that is not a failure before `cph.job_deadline_secs`:
/// failed at the drain deadline, the phone would go back to the pool while its job was
/// still to install, and the game would restart under the next player.
async fn an_update_whose_job_starts_late_is_waited_for_not_failed_at_the_drain_deadline_7_1_2(
    backend: Backend,
) {
    let rig = start(backend, 1, |_| {}).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    (rig.simulator.faults).late_starts(Operation::UpdateAppVersion, 1, Duration::from_secs(10));

    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 1,
            "drain_deadline_secs": 8,
        }))
        .await;
    let done = rig.wait_for_rollout(&rollout["id"], "done").await;

    let phone = &done["phones"][0];
    assert_eq!(phone["state"], "done", "{done}");
    assert_eq!(phone["attempts"], 1, "{done}");
    assert_eq!(rig.updates_of(&text(&phone["phone_id"])), 1);
    rig.simulator.stop().await;
}

/// The canary's phone is held for a player when the rollout drains it; the operator
/// pauses (the phone goes back to the pool) and resumes. The next batch is the canary
/// again, one phone, not `batch_size`: nothing has run the version yet.
async fn a_canary_paused_and_resumed_before_it_ran_is_a_canary_again(backend: Backend) {
    let rig = start(backend, 4, |_| {}).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    let ids = rig.simulator.phone_ids();
    let canary = &ids[0];
    rig.app
        .mint_ok(&json!({"app_id": APP, "user_id": "u-1", "phone_id": canary}))
        .await;
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 1, "batch_size": 3,
            "drain_deadline_secs": 600,
        }))
        .await;
    let id = &rollout["id"];
    let draining = |rollout: Value| {
        let phones = rollout["phones"].as_array().cloned().unwrap_or_default();
        (phones.into_iter())
            .filter(|p| p["state"] != "pending")
            .map(|p| (text(&p["phone_id"]), text(&p["state"])))
            .collect::<Vec<_>>()
    };
    let canary_drained = vec![(canary.clone(), "draining".to_owned())];
    rig.wait(|| async { draining(rig.rollout(id).await) == canary_drained })
        .await;
    for action in ["pause", "resume"] {
        let res = rig
            .post(&format!("/api/v1/rollouts/{id}/{action}"), &json!({}))
            .await;
        assert_eq!(res.status(), 200, "{action}");
    }
    rig.wait(|| async { !draining(rig.rollout(id).await).is_empty() })
        .await;
    // Ten ticks: a batch of three would have drained and updated two idle phones by then.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let now = rig.rollout(id).await;
    assert_eq!(draining(now.clone()), canary_drained, "{now}");
    for phone in &ids[1..] {
        assert_eq!(rig.updates_of(phone), 0, "{phone}");
    }
    rig.simulator.stop().await;
}

/// 5.3.6 unreadable (7.2 `CPS.0003` on every call) from the moment the update's job ended
/// until past the verification's deadline (the drain deadline, 8 s, or `fleet.stale_after`
/// if longer, 10 s here: a heartbeat that changes nothing reaches the phone's row only
/// every few beats): that says nothing of the phone, whose job succeeded,
/// so it is asked again for one more deadline and found updated, not failed.
async fn a_phone_whose_versions_cannot_be_read_after_its_job_is_not_failed_for_it_5_3_6(
    backend: Backend,
) {
    let pace = Pace {
        cph: "breaker_open_secs = 1\n",
        ..PACE
    };
    let rig = start_paced(backend, 1, "", pace, |_| {}).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    (rig.simulator.faults).system_errors(Operation::PhoneApps, 1_000_000);
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 1,
            "drain_deadline_secs": 8,
        }))
        .await;
    let id = &rollout["id"];
    rig.wait(|| async { rig.rollout(id).await["phones"][0]["state"] == "verifying" })
        .await;
    tokio::time::sleep(Duration::from_secs(13)).await;
    (rig.simulator.faults).system_errors(Operation::PhoneApps, 0);

    let done = rig.wait_for_rollout(id, "done").await;

    assert_eq!(done["phones"][0]["state"], "done", "{done}");
    rig.simulator.stop().await;
}

/// 7.2: 5.3.7 refused without anything done (`CPS.0003`, for as long as the test lasts):
/// the refused phones go back to the pool between tries, so players still get them while
/// the control plane is out; held drained, they were lost to allocation for the outage.
async fn an_outage_holds_no_phone_out_of_the_pool_7_2(backend: Backend) {
    let pace = Pace {
        cph: "breaker_open_secs = 1\n",
        ..PACE
    };
    let rig = start_paced(backend, 2, "", pace, |_| {}).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    (rig.simulator.faults).system_errors(Operation::UpdateAppVersion, 1_000_000);
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 2,
        }))
        .await;
    let id = &rollout["id"];
    every_phone_tried_again(&rig, id).await;

    // A phone is out of the pool only from a batch's drain to its send's refusal: a mint
    // finds both within a few tries.
    for user in ["u-1", "u-2"] {
        let body = json!({"app_id": APP, "user_id": user});
        rig.wait(|| async { rig.app.mint(&body).await.status() == 201 })
            .await;
    }
    assert_eq!(rig.rollout(id).await["state"], "running");
    rig.simulator.stop().await;
}

/// The canary's update fails (4.4.1) with `max_failures` 1: within the operator's
/// allowance, so the next batch takes `batch_size` phones, as before the canary size was
/// held for a canary that proved nothing. Repeating the canary after each failure would
/// take the fleet one failing phone at a time and never pause.
async fn a_canary_failing_within_max_failures_lets_the_next_batch_take_batch_size(
    backend: Backend,
) {
    let rig = start(backend, 4, |_| {}).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    rig.simulator.fleet.lock().phones[0].faults.update_fails = true;
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 1, "batch_size": 3,
            "max_failures": 1,
        }))
        .await;

    let done = rig.wait_for_rollout(&rollout["id"], "done").await;

    assert_eq!(
        done["batch"], 2,
        "the canary, then one batch of three: {done}"
    );
    let phones = done["phones"].as_array().unwrap();
    assert_eq!(phones[0]["state"], "failed", "{done}");
    assert!(
        phones[1..]
            .iter()
            .all(|p| p["state"] == "done" && p["batch"] == 2),
        "{done}"
    );
    rig.simulator.stop().await;
}

/// Waits until every phone of the rollout had its update refused without anything done.
async fn every_phone_tried_again(rig: &Rig, id: &Value) {
    rig.wait(|| async {
        let now = rig.rollout(id).await;
        let phones = now["phones"].as_array().cloned().unwrap_or_default();
        (phones.iter()).all(|p| (p["error"].as_str()).is_some_and(|e| e.contains("tried again")))
    })
    .await;
}

/// 5.3.7 answers one entry per version (Table 5-36); one refused in its entry, the other's
/// job succeeding (the reference is silent on refusing one version of several: the
/// simulator writes it as 4.3.5 writes a refused phone). With 5.3.6 naming no version, as
/// its example answers, only the refusal tells the phone lacks one: it fails, saying so.
/// Before, the move to verifying wiped the refusal, and the phone was done.
async fn a_version_refused_in_5_3_7s_answer_fails_the_phone_even_when_5_3_6_names_no_version(
    backend: Backend,
) {
    let rig = start(backend, 1, |_| {}).await;
    let (refused, installed) = (rig.new_version(), rig.new_version());
    rig.push_by_hand(&refused);
    rig.push_by_hand(&installed);
    rig.simulator
        .faults
        .item_errors(Operation::UpdateAppVersion, 1);

    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [refused, installed], "canary": 0,
            "batch_size": 1, "max_failures": 1,
        }))
        .await;
    // 5.3.1 and 5.3.6 blank from here on: the start checked the versions on the servers.
    rig.simulator.faults.set_blank_versions(true);
    let ended = rig.wait_for_end(&rollout["id"]).await;

    let phone = &ended["phones"][0];
    assert_eq!(phone["state"], "failed", "{ended}");
    assert!(text(&phone["error"]).contains("refused (5.3.7)"), "{phone}");
    rig.simulator.stop().await;
}

/// 5.3.7 starts a job per version (Table 5-36). The first failing (4.4.1: -1) while the
/// second still runs (1) does not fail the phone yet: failed, it went back to the pool while
/// the second installed, and the install restarted the game under the next player. It fails
/// once the second has ended too, naming the job that failed.
async fn a_phone_whose_first_job_failed_stays_out_of_the_pool_until_its_others_end_5_3_7(
    backend: Backend,
) {
    let rig = start(backend, 1, |_| {}).await;
    let (first, second) = (rig.new_version(), rig.new_version());
    rig.push_by_hand(&first);
    rig.push_by_hand(&second);
    rig.slow_jobs_from_now(Duration::from_secs(3600));
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [first, second], "canary": 0,
            "batch_size": 1, "max_failures": 1,
        }))
        .await;
    let id = &rollout["id"];
    rig.wait(|| async {
        let rollout = rig.rollout(id).await;
        (rollout["phones"][0]["job_id"].as_str()).is_some_and(|jobs| jobs.contains(','))
    })
    .await;
    // In the order of 5.3.7's answer: a job per version, in the order asked.
    let jobs = text(&rig.rollout(id).await["phones"][0]["job_id"]);
    let (failing, running) = jobs.split_once(',').unwrap();

    end_job(
        &rig,
        failing,
        Err(JobFailure::system(
            "The application version failed to install.",
        )),
    );
    // Read by the engine at least twice since (each tick reads both jobs).
    let reads = show_job_reads(&rig).await;
    rig.wait(|| async { show_job_reads(&rig).await >= reads + 4.0 })
        .await;

    let now = rig.rollout(id).await;
    assert_eq!(now["phones"][0]["state"], "updating", "{now}");
    let refused = rig
        .app
        .mint(&json!({"app_id": APP, "user_id": "u-1"}))
        .await;
    assert_error(refused, 503, "CPHUB.NO_FREE_PHONE").await;

    end_job(&rig, running, Ok(()));
    rig.wait(|| async { rig.rollout(id).await["phones"][0]["state"] == "failed" })
        .await;
    let failed = rig.rollout(id).await;
    let error = text(&failed["phones"][0]["error"]);
    assert!(
        error.contains(&format!("job {failing} failed (4.4.1)")),
        "{error}"
    );
    rig.simulator.stop().await;
}

/// Ends the simulator's job `job_id` now, as the control plane would.
fn end_job(rig: &Rig, job_id: &str, outcome: Result<(), JobFailure>) {
    let mut fleet = rig.simulator.fleet.lock();
    let job = fleet.jobs.get_mut(job_id).expect("the job");
    job.end(Utc::now().to_rfc3339(), outcome);
}

/// 4.4.1 reads cphub made that the control plane answered.
async fn show_job_reads(rig: &Rig) -> f64 {
    let samples = crate::metrics::scrape(&rig.app).await;
    let series = r#"cphub_cph_requests_total{operation="show_job",status="200"}"#;
    crate::metrics::value(&samples, series)
}

/// Chapter 4.3.1: a phone the operator stopped (8), drained alone in the first batch, is not
/// updated; at the drain deadline it is skipped, saying why, and the batches after it go on.
/// Before, it was waited on for good: its batch never ended, and no other phone was updated.
/// Taken again by the later batches and still stopped, it is given up at the third drain
/// deadline (migration 0037): failed, not counted against `max_failures` (0 here, so a
/// counted failure would pause the rollout), and the rollout ends. Before, it went drained
/// → skipped → drained for as long as the operator kept it stopped, and the rollout never
/// ended.
async fn a_drained_phone_still_stopped_at_the_drain_deadline_is_skipped_then_given_up_and_the_rollout_ends_4_3_1(
    backend: Backend,
) {
    let (rig, ids) = three_phones_the_first_stopped(backend).await;
    let stopped = &ids[0];
    assert_eq!(
        ids.iter().min(),
        Some(stopped),
        "batches take phones in id order"
    );
    let version = rig.new_version();
    rig.push_by_hand(&version);
    let rollout = rig
        .start_rollout(&json!({
            "app_id": APP, "app_version_ids": [version], "canary": 0, "batch_size": 1,
            "drain_deadline_secs": 2,
        }))
        .await;
    let id = &rollout["id"];

    rig.wait(|| async { text(&phone_of(&rig.rollout(id).await, stopped)["state"]) == "skipped" })
        .await;
    let skipped = phone_of(&rig.rollout(id).await, stopped);
    assert!(
        text(&skipped["error"]).contains("4.3.1 status 8"),
        "{skipped}"
    );
    rig.wait(|| async {
        let now = rig.rollout(id).await;
        ids[1..]
            .iter()
            .all(|id| text(&phone_of(&now, id)["state"]) == "done")
    })
    .await;

    rig.wait(|| async { rig.rollout(id).await["state"] != "running" })
        .await;
    let ended = rig.rollout(id).await;
    assert_eq!(ended["state"], "done", "{ended}");
    let given_up = phone_of(&ended, stopped);
    assert_eq!(given_up["state"], "failed", "{given_up}");
    assert_eq!(given_up["not_serving_skips"], 3, "{given_up}");
    let why = text(&given_up["error"]);
    assert!(
        why.contains("4.3.1 status 8") && why.contains("3 times: given up"),
        "{given_up}"
    );
    assert_eq!(
        rig.updates_of(stopped),
        0,
        "the stopped phone was sent the update"
    );
    rig.simulator.stop().await;
}
