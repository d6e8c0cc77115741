//! `kill -9` of the real binary while it delivers webhooks (issue #18, docs/webhooks.md
//! "How an event is made durable"): sessions minted and played by the simulator's players
//! and phones (callbacks 6.2 enter, 6.3 quit), one delivery held open by the receiver when
//! the process is killed. After a restart on the same database and port: every
//! `session.started`/`session.ended` in the outbox matches the session book exactly, and
//! the receiver saw every such id at least once, each id always with the same body.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use cphub::config::Settings;
use cphub::domain::WebhookEventType;
use cphub::simulator::{SimOptions, Simulator};
use cphub::store::{SessionFilter, Store};
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::backend_tests;
use crate::binary::{cphub, start_serve, stop};
use crate::helpers::{Backend, TOKEN, TestDb};
use crate::simulation::{configure_callbacks, simulator_options};
use crate::webhooks::{OLD_SECRET, hook_url};

backend_tests!(kill_9_during_delivery_loses_no_webhook_event_and_invents_none);

const SESSIONS: u64 = 8;

/// The first request is held far past the kill; every other one is answered at once.
async fn receiver_holding_the_first_request() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(600)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

/// `$CPHUB_ENV.toml` for the binary: the simulator's control plane and one endpoint. The
/// per-attempt timeout is long enough that the held request is still open at the kill.
fn config(simulator: &Simulator, options: &SimOptions, receiver: &MockServer) -> String {
    format!(
        "[fleet]\nheartbeat_interval_secs = 1\n\
         [cph]\nendpoint = \"{}\"\nproject_id = \"{}\"\n[cph.auth]\nak = \"{}\"\nsk = \"{}\"\n\
         [webhooks]\npoll_interval_ms = 50\ntimeout_ms = 5000\n\
         retry_schedule_secs = [0, 1, 1, 1, 1, 1, 1, 1]\n\
         endpoints = [{{ name = \"billing\", url = \"{}\", secrets = [\"{OLD_SECRET}\"] }}]\n",
        simulator.cph_endpoint(),
        options.project_id,
        options.ak,
        options.sk,
        hook_url(receiver),
    )
}

async fn kill_9_during_delivery_loses_no_webhook_event_and_invents_none(backend: Backend) {
    let db = TestDb::new(backend).await;
    let port = crate::watchdog::free_port();
    let address = format!("http://127.0.0.1:{port}");
    let receiver = receiver_holding_the_first_request().await;
    let mut options = simulator_options(&address, 3);
    options.token = Some(TOKEN.to_owned());
    options.sessions = SESSIONS;
    options.player_interval_ms = 100;
    options.session_min_secs = 1;
    options.session_max_secs = 2;
    let simulator = Simulator::start(options.clone()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("test.toml"),
        config(&simulator, &options, &receiver),
    )
    .unwrap();
    let serve = || {
        let mut command = cphub(&db);
        command
            .env("CPHUB_CONFIG_DIR", dir.path())
            .env("CPHUB_ENV", "test")
            .env("CPHUB__SERVER__LISTEN", format!("127.0.0.1:{port}"));
        start_serve(&mut command)
    };

    let mut served = serve();
    configure_callbacks(&address, &simulator, &options).await;
    // The held request and at least three more (other sessions go in parallel).
    wait_for("four deliveries", || async {
        receiver.received_requests().await.unwrap().len() >= 4
    })
    .await;
    served.child.kill().unwrap(); // SIGKILL, the held delivery in flight
    served.child.wait().unwrap();
    let served = serve();

    // A session whose sign check (6.1) met the dead process is sent again until the new one
    // answers: played, or refused (its ticket replayed past the grace); every minted session
    // ends one way or the other.
    wait_for("every session played or refused", || async {
        let refused = simulator.stats.sign_checks_refused.load(Ordering::Relaxed);
        simulator.stats.played().len() as u64 + refused >= SESSIONS
    })
    .await;
    let played = simulator.stats.played().len();
    simulator.stop().await;
    let settings = Settings::with_overrides(&format!("[database]\nurl = \"{}\"\n", db.url));
    let store = cphub::store::connect(&settings.unwrap().database)
        .await
        .unwrap();
    // The held delivery is sent again once its lease lapses (timeout + 30 s).
    wait_for("every event delivered", || async {
        missing(&*store, &receiver).await.is_empty()
    })
    .await;
    assert!(stop(served.child).await.success());

    let outbox = session_events(&*store).await;
    assert_eq!(outbox, expected_from_the_book(&*store).await);
    assert!(
        played > 0 && outbox.len() >= 2 * played,
        "{played}: {outbox:?}"
    );
    assert_eq!(missing(&*store, &receiver).await, Vec::<String>::new());
    let received = received_bodies(&receiver).await;
    let every_id: BTreeSet<String> = (store.outbox(0, 100_000).await.unwrap().into_iter())
        .map(|e| e.id)
        .collect();
    for (id, bodies) in &received {
        assert!(
            every_id.contains(id),
            "{id} was sent but is not in the outbox"
        );
        assert_eq!(
            bodies.len(),
            1,
            "{id} sent with different bodies: {bodies:?}"
        );
    }
}

/// The `session.*` ids of the outbox.
async fn session_events(store: &dyn Store) -> BTreeSet<String> {
    let all = store.outbox(0, 100_000).await.unwrap();
    let session_types = [
        WebhookEventType::SessionStarted,
        WebhookEventType::SessionEnded,
    ];
    (all.into_iter())
        .filter(|e| session_types.contains(&e.event_type))
        .map(|e| e.id)
        .collect()
}

/// What the book says must have been reported: a start for every session that started, an
/// end for every one with a start, an end and an end reason (docs/webhooks.md).
async fn expected_from_the_book(store: &dyn Store) -> BTreeSet<String> {
    let sessions = store
        .sessions(&SessionFilter::default(), 100_000)
        .await
        .unwrap();
    let mut expected = BTreeSet::new();
    for s in sessions.iter().filter(|s| s.started_at.is_some()) {
        expected.insert(format!("evt_session.started_{}", s.session_id));
        if s.ended_at.is_some() && s.end_reason.is_some() {
            expected.insert(format!("evt_session.ended_{}", s.session_id));
        }
    }
    expected
}

/// The outbox's session ids the receiver has not seen yet.
async fn missing(store: &dyn Store, receiver: &MockServer) -> Vec<String> {
    let received = received_bodies(receiver).await;
    let outbox = session_events(store).await;
    (outbox.into_iter())
        .filter(|id| !received.contains_key(id))
        .collect()
}

/// Every distinct body the receiver got, per `webhook-id`.
async fn received_bodies(receiver: &MockServer) -> BTreeMap<String, BTreeSet<String>> {
    let mut bodies: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in receiver.received_requests().await.unwrap() {
        let id = request.headers.get("webhook-id").unwrap().to_str().unwrap();
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["id"], id, "the header names the body's event");
        let body = String::from_utf8(request.body.clone()).unwrap();
        bodies.entry(id.to_owned()).or_default().insert(body);
    }
    bodies
}

/// Polls `done` until it holds: the binary and the simulator run on their own clocks.
async fn wait_for<F, Fut>(what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1800 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: never happened within 90 s");
}
