//! cphub and the simulator against each other: cphub's own client configures the simulated
//! phones' callbacks, the phones heartbeat and play sessions minted by simulated players, and
//! cphub's records must match what the simulator played.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use cphub::config::Settings;
use cphub::cph::{CphClient, PhoneItem, model::job_status};
use cphub::simulator::{SimOptions, Simulator};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, TestDb, within};

/// A simulator of `phones` phones whose callbacks go to the cphub at `cphub`, no players.
pub(crate) fn simulator_options(cphub: &str, phones: usize) -> SimOptions {
    let mut options = SimOptions::defaults();
    options.phones = phones;
    options.cph_listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    options.cphub = cphub.to_owned();
    options.job_delay_ms = 50;
    options.token = None;
    options
}

/// [`simulator_options`] whose players mint `sessions` sessions, one every 100 ms, each
/// played for 1 to `longest_secs` seconds.
pub(crate) fn players(cphub: &str, phones: usize, sessions: u64, longest_secs: u64) -> SimOptions {
    let mut options = simulator_options(cphub, phones);
    options.token = Some(TOKEN.to_owned());
    options.sessions = sessions;
    options.player_interval_ms = 100;
    options.session_min_secs = 1;
    options.session_max_secs = longest_secs;
    options
}

/// cphub's settings for talking to the simulator's control plane.
pub(crate) fn cph_settings(simulator: &Simulator, options: &SimOptions) -> Settings {
    Settings::with_overrides(&format!(
        "[cph]\nendpoint = \"{}\"\nproject_id = \"{}\"\njob_poll_interval_ms = 20\njob_deadline_secs = 60\n\
         [cph.auth]\nak = \"{}\"\nsk = \"{}\"\n",
        simulator.cph_endpoint(),
        options.project_id,
        options.ak,
        options.sk
    ))
    .unwrap()
}

/// Points every simulated phone at the cphub at `address` through cphub's own client, as
/// `phones configure-callbacks --all --wait` does, and waits for the jobs; then restarts the
/// phones, as 4.3.9's properties take effect only after a restart (4.3.6), and waits again.
/// Bounded well below the scenario's limit, so that a set-up that never ends says so.
pub(crate) async fn configure_callbacks(
    address: &str,
    simulator: &Simulator,
    options: &SimOptions,
) {
    let set_up = configure_and_restart(address, simulator, options);
    within(
        "configuring the simulated phones' callbacks",
        SET_UP_LIMIT,
        set_up,
    )
    .await
}

/// Time to start the simulator or cphub in a fleet scenario: seconds when well, so that
/// a start that never ends names itself instead of running into the scenario's limit.
pub(crate) const START_LIMIT: Duration = Duration::from_secs(120);

/// The simulator of `options`, started within [`START_LIMIT`].
pub(crate) async fn start_simulator(options: &SimOptions) -> Simulator {
    let start = Simulator::start(options.clone());
    within("starting the simulator", START_LIMIT, start)
        .await
        .unwrap()
}

/// cphub on `db` with `settings`, started within [`START_LIMIT`].
pub(crate) async fn start_cphub(db: TestDb, settings: &str) -> TestApp {
    within(
        "starting cphub",
        START_LIMIT,
        TestApp::spawn_on(db, settings),
    )
    .await
}

/// Time for [`configure_callbacks`]: two jobs per phone, each followed up to 60 s.
const SET_UP_LIMIT: Duration = Duration::from_secs(150);

async fn configure_and_restart(address: &str, simulator: &Simulator, options: &SimOptions) {
    let mut settings = cph_settings(simulator, options);
    settings.fleet.heartbeat_interval_secs = 1;
    let property =
        cphub::cph::properties::callback_property(&settings, Some(address), None).unwrap();
    let client = CphClient::new(&settings.cph).unwrap();
    let phones = client.list_phones(&Default::default()).await.unwrap();
    assert_eq!(phones.len(), options.phones);
    let items = phones
        .iter()
        .map(|p| PhoneItem {
            phone_id: p.phone_id.clone(),
            property: Some(property.clone()),
        })
        .collect();
    let ids: Vec<String> = phones.iter().map(|p| p.phone_id.clone()).collect();
    let update = client.update_property(items).await.unwrap();
    follow_all(&client, &update).await;
    let restart = client.restart(&ids).await.unwrap();
    follow_all(&client, &restart).await;
}

async fn follow_all(client: &CphClient, batch: &cphub::cph::BatchOutcome) {
    assert_eq!(batch.failures().count(), 0);
    for (_, job_id) in batch.jobs() {
        assert_eq!(
            client.follow_job(job_id).await.unwrap().status,
            job_status::SUCCEEDED
        );
    }
}

async fn configured_phones_heartbeat_to_cphub(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[fleet]\nheartbeat_interval_secs = 1").await;
    let options = simulator_options(&app.address, 5);
    let simulator = Simulator::start(options.clone()).await.unwrap();

    configure_callbacks(&app.address, &simulator, &options).await;

    for phone_id in simulator.phone_ids() {
        let phone = app
            .wait_for_phone(&phone_id, |p| !p["last_seen_at"].is_null())
            .await;
        assert_eq!(phone["heartbeat_session_id"], serde_json::Value::Null);
    }
    simulator.stop().await;
}

/// A cphub with 1 s heartbeats and `settings`, and 3 phones whose players play 5 sessions
/// of 1 to 2 s, `tune`d: the app, the simulator and the sessions once all 5 are played.
async fn five_sessions_played(
    backend: Backend,
    settings: &str,
    tune: impl FnOnce(&mut SimOptions),
) -> (TestApp, Simulator, Vec<cphub::simulator::PlayedSession>) {
    let settings = format!("[fleet]\nheartbeat_interval_secs = 1\n{settings}");
    let app = TestApp::spawn_with(backend, &settings).await;
    let mut options = players(&app.address, 3, 5, 2);
    tune(&mut options);
    let simulator = Simulator::start(options.clone()).await.unwrap();
    configure_callbacks(&app.address, &simulator, &options).await;
    let played = wait_for_played(&simulator, 5).await;
    (app, simulator, played)
}

async fn cphub_records_what_the_simulator_played(backend: Backend) {
    let (app, simulator, played) = five_sessions_played(backend, "", |options| {
        // The engine's habits: re-deliveries and a quit overtaking its enter.
        options.duplicate_rate = 0.5;
        options.reorder_rate = 0.3;
    })
    .await;

    for session in &played {
        let recorded = app
            .wait_for_session(&session.session_id, |s| {
                s["missing_start"] == false && s["state"] == "ended"
            })
            .await;
        assert_eq!(
            recorded["duration_seconds"], session.duration_secs,
            "{recorded}"
        );
        assert_eq!(recorded["phone_id"], session.phone_id.as_str());
        assert_eq!(recorded["issued"], true);
        assert!(recorded["verified_at"].is_string(), "{recorded}");
        let accepted = recorded["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "accepted")
            .count();
        assert_eq!(
            accepted, 2,
            "one enter and one quit, however often delivered: {recorded}"
        );
    }
    simulator.stop().await;
}

/// The simulated phones send a dropped sign check or event again (docs/simulator.md), so a
/// third of the attempts lost costs no session; and against a cphub that enforces a cipher
/// other than its default (AES-128-CBC, base64 keys, data required, 6.1's `encrypted_data`
/// checked), clients configured as `cphub simulate` configures them from `[access]` seal
/// what it opens. Before, each dropped sign check lost its session, and every sign check
/// under another cipher or key encoding was sent empty, refused under enforcement.
async fn dropped_callbacks_are_sent_again_and_a_configured_cipher_plays(backend: Backend) {
    use cphub::config::{Cipher, Encoding, KeySize};
    let cbc = "[access]\nkey_encoding = \"base64\"\nencrypted_data = \"enforce\"\n\
               require_encrypted_data = true\n\
               [access.cipher]\nalgorithm = \"aes-128-cbc\"\niv_bytes = 16\n";
    let settings = Settings::with_overrides(cbc).unwrap();
    let client = cphub::simulator::ClientSeal::from(&settings.access);
    assert_eq!(
        client.cipher,
        Cipher::Cbc {
            key: KeySize::Aes128
        }
    );
    assert_eq!(client.key_encoding, Encoding::Base64);
    let (app, simulator, played) = five_sessions_played(backend, cbc, |options| {
        options.drop_rate = 0.3;
        options.client = client;
    })
    .await;

    for session in &played {
        let recorded = app
            .wait_for_session(&session.session_id, |s| s["state"] == "ended")
            .await;
        assert!(recorded["verified_at"].is_string(), "{recorded}");
    }
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let stats = &simulator.stats;
    assert_eq!(count(&stats.sign_checks_refused), 0);
    assert_eq!(count(&stats.events_undelivered), 0);
    assert!(count(&stats.callback_errors) > 0, "no attempt was dropped");
    simulator.stop().await;
}

async fn wait_for_played(
    simulator: &Simulator,
    count: usize,
) -> Vec<cphub::simulator::PlayedSession> {
    for _ in 0..300 {
        let played = simulator.stats.played();
        if played.len() >= count {
            return played;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the simulator played only {:?}: {}",
        simulator.stats.played(),
        simulator.stats.summary(&simulator.fleet)
    );
}

backend_tests!(
    configured_phones_heartbeat_to_cphub,
    cphub_records_what_the_simulator_played,
    dropped_callbacks_are_sent_again_and_a_configured_cipher_plays
);
