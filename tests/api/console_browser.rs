//! The web console in a real browser: `tools/browser/console.py` drives headless Chromium
//! (Debian's, through Playwright) against cphub and the simulator's fleet, one browser
//! session walking through the checks of docs/console.md ("Tests"). The full walk runs on
//! SQLite, a smoke run (sign in, fleet counts, no foreign request) on PostgreSQL.
//!
//! Without Chromium or the venv's Playwright the tests are skipped with one line, unless
//! `CPHUB_TEST_REQUIRE_BROWSER=1` (set by `.ci/run`) makes that a failure.

use std::path::{Path, PathBuf};

use cphub::simulator::Simulator;
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use crate::console::{ADMIN, READER, tokens};
use crate::helpers::{Backend, TOKEN, TestApp, TestDb, postgres_available};
use crate::rollouts::{APP, push_by_hand};
use crate::simulation::configure_callbacks;
use crate::watchdog::{Pace, cphub_settings_paced, free_port, simulator_options};
use crate::webhooks::{hook_url, receiver, webhooks};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CPHUB_TEST_CHROMIUM").map_or("/usr/bin/chromium".into(), PathBuf::from)
}

/// Whether the browser tests can run; says why not once, or fails when they are required.
fn browser_available() -> bool {
    static NOTICE: std::sync::Once = std::sync::Once::new();
    let python = root().join(".venv/bin/python");
    let playwright = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", "import playwright.sync_api"])
            .status()
            .is_ok_and(|s| s.success());
    let missing = match (chromium().exists(), playwright) {
        (true, true) => return true,
        (false, _) => format!("{} (Debian's chromium)", chromium().display()),
        (true, false) => "Playwright in .venv (tools/browser/requirements.txt)".to_owned(),
    };
    let required = std::env::var("CPHUB_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "CPHUB_TEST_REQUIRE_BROWSER=1 but {missing} is missing: scripts/test installs it"
    );
    NOTICE.call_once(|| {
        eprintln!("skipping the console's browser tests: no {missing}; scripts/test installs it")
    });
    false
}

/// cphub with its watchdog and console, and a simulated fleet of 4 phones; players play a
/// few short sessions. The first phone goes silent when the browser watches the fleet page. The watchdog looks every 2.5 s and a
/// restart takes the simulator 2.5 s, so the silent phone is stale, then recovering, each
/// for longer than the console's refresh (250 ms): the browser can see both.
const PHONES: usize = 4;

/// The webhook endpoint that answers every delivery 500, and so keeps a backlog.
const REFUSING: &str = "refusing";

struct Rig {
    app: TestApp,
    simulator: Simulator,
    /// A new version of the fleet's game, on every server (5.3.4), for the walk's rollout.
    version: String,
    /// Kept alive for the walk: the endpoint's socket.
    _refusing: wiremock::MockServer,
}

/// `[webhooks]` with the one endpoint, retried only an hour after its first attempt, so its
/// deliveries stay pending (a backlog) while the walk reads them.
async fn refusing_endpoint() -> (wiremock::MockServer, String) {
    let server = receiver(ResponseTemplate::new(500).set_body_string("down")).await;
    let extra = "retry_schedule_secs = [0, 3600]\n";
    let settings = webhooks(&[(REFUSING, hook_url(&server))], extra);
    (server, settings)
}

async fn rig(backend: Backend) -> Rig {
    let port = free_port();
    let options = simulator_options(port, PHONES, |o| {
        o.job_delay_ms = 2500;
        o.token = Some(TOKEN.into());
        o.sessions = 4;
        o.session_min_secs = 1;
        o.session_max_secs = 2;
        o.player_interval_ms = 300;
    });
    let simulator = Simulator::start(options.clone()).await.unwrap();
    let pace = Pace {
        watchdog_interval_ms: 2500,
        ..Pace::EAGER
    };
    let settings = cphub_settings_paced(port, &simulator, &options, "", pace);
    let (refusing, hooks) = refusing_endpoint().await;
    let settings = format!(
        "{settings}\n[console]\nrefresh_ms = 250\n{}\n{hooks}",
        tokens()
    );
    let app = TestApp::spawn_on(TestDb::new(backend).await, &settings).await;
    configure_callbacks(&app.address, &simulator, &options).await;
    let version = simulator.fleet.lock().new_version(APP).unwrap();
    push_by_hand(&simulator, &version);
    Rig {
        app,
        simulator,
        version,
        _refusing: refusing,
    }
}

/// Runs the walk; its JSON summary. The first phone is silenced (a simulator fault) once
/// the script says, through the `--ready` file, that the fleet page watches it.
async fn walk(rig: &Rig, extra: &[&str]) -> Value {
    let silent = rig.simulator.phone_ids()[0].clone();
    let ready = tempfile::tempdir().unwrap();
    let ready_file = ready.path().join("watching");
    let mut args: Vec<String> = vec![
        root()
            .join("tools/browser/console.py")
            .display()
            .to_string(),
        "--base".into(),
        rig.app.address.clone(),
        "--admin".into(),
        ADMIN.into(),
        "--reader".into(),
        READER.into(),
        "--api".into(),
        TOKEN.into(),
        "--silent".into(),
        silent,
        "--phones".into(),
        PHONES.to_string(),
        "--ready".into(),
        ready_file.display().to_string(),
        "--app".into(),
        APP.into(),
        "--version".into(),
        rig.version.clone(),
        "--webhook".into(),
        REFUSING.into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    if let Some(dir) = std::env::var_os("CPHUB_CONSOLE_SCREENSHOTS") {
        args.extend(["--screenshots".into(), dir.to_string_lossy().into_owned()]);
    }
    let child = std::process::Command::new(root().join(".venv/bin/python"))
        .args(&args)
        .env("CPHUB_TEST_CHROMIUM", chromium())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output());
    if !extra.contains(&"--smoke") {
        silence_when_watched(rig, &ready_file, &out).await;
    }
    let out = out.await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser walk failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"))
}

/// Silences the first phone once `ready` exists; gives up when the script has ended.
async fn silence_when_watched<T>(rig: &Rig, ready: &Path, script: &tokio::task::JoinHandle<T>) {
    while !script.is_finished() {
        if ready.exists() {
            rig.simulator.fleet.lock().phones[0].faults.silent = true;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Sign in; fleet counts as the API's; the silent phone's cell turns stale then recovering
/// without a reload; its page shows the recovery (reason stale); a forged POST without the
/// CSRF token gets 403; the usage chart's totals and the CSV are the API's; a token without
/// phones:operate sees no restart button; the queue page places two waiting players as
/// their polls do, the rollout page shows each phone's step as `GET /api/v1/rollouts/{id}`
/// (5.3.7), the webhooks page counts the refusing endpoint's backlog as the deliveries API
/// lists it; on a 390 px screen sign-in and the page links work with the keyboard alone,
/// with focus rings, and no page is wider than the screen; every request went to cphub.
#[test]
fn sqlite_an_operator_walks_the_console_in_chromium() {
    crate::helpers::run_scenario("sqlite_an_operator_walks_the_console_in_chromium", async {
        if !browser_available() {
            return;
        }
        let rig = rig(Backend::Sqlite).await;

        let summary = walk(&rig, &[]).await;

        let seen: Vec<&str> = (summary["silent_phone_states"].as_array().unwrap().iter())
            .map(|s| s.as_str().unwrap())
            .collect();
        let stale = seen.iter().position(|s| *s == "stale").unwrap();
        assert!(seen[stale..].contains(&"recovering"), "{seen:?}");
        assert_eq!(summary["forged_post"], 403);
        assert!(summary["usage_totals"]["sessions"].as_i64().unwrap() > 0);
        assert!(summary["requests"].as_u64().unwrap() > 10, "{summary}");
        let positions = &summary["queue_positions"];
        assert_eq!(positions, &json!({"walker-high": 1, "walker-low": 2}));
        let steps = summary["rollout_steps"].as_object().unwrap();
        let targets: u64 = steps.values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(targets, PHONES as u64, "{summary}");
        assert!(
            steps.keys().any(|s| s != "pending"),
            "no progress: {summary}"
        );
        assert!(
            summary["webhook_pending"].as_u64().unwrap() > 0,
            "{summary}"
        );
        assert_eq!(summary["keyboard_pages"], 4, "{summary}");
        rig.simulator.stop().await;
    })
}

#[test]
fn postgres_the_console_signs_in_and_counts_the_fleet_in_chromium() {
    crate::helpers::run_scenario(
        "postgres_the_console_signs_in_and_counts_the_fleet_in_chromium",
        async {
            if !postgres_available() || !browser_available() {
                return;
            }
            let rig = rig(Backend::Postgres).await;

            let summary = walk(&rig, &["--smoke"]).await;

            assert_eq!(summary["fleet_counts"]["total"], PHONES, "{summary}");
            rig.simulator.stop().await;
        },
    )
}
