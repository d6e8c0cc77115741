//! Issue #16, parts 4, 5 and 7, against the simulator's control plane: a mint lands only on a
//! phone that has the game (5.1.2), says where to connect (4.3.2 `access_infos`), and is
//! idempotent under an `Idempotency-Key`; an enter for another game is accepted and flagged.
//! Parts 4 and 6 together: the wait queue, too, gives a player only a phone with the game.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use cphub::simulator::control_plane::{self, ControlPlaneFaults, ControlPlaneSettings};
use cphub::simulator::fleet::{Fleet, SharedFleet};
use serde_json::{Value, json};

use crate::helpers::{Backend, TOKEN, TestApp, assert_error, enter};
use crate::{backend_tests, queue};

const PROJECT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const AK: &str = "ALLOCATIONTESTAK0001";
const SK: &str = "allocation-test-secret-key";

/// The simulator's control plane over a fleet, and a cphub that syncs from it every second.
struct Synced {
    app: TestApp,
    fleet: SharedFleet,
    control_plane: ServerHandle,
}

impl Synced {
    /// `phones` simulated phones with `apps` deployed as `(app_id, share)`, in order (each
    /// on the phones after the previous one's, `Fleet::deploy`). The phones heartbeat once.
    async fn start(backend: Backend, phones: usize, apps: &[(&str, f64)], cphub: &str) -> Synced {
        let mut fleet = Fleet::new(phones, 0xa110c);
        for (app_id, share) in apps {
            fleet.deploy(app_id, *share);
        }
        let fleet = SharedFleet::new(fleet);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let server = control_plane::start(listener, settings(), fleet.clone()).unwrap();
        let control_plane = server.handle();
        tokio::spawn(server);
        let overrides = format!(
            "[cph]\nendpoint = \"{endpoint}\"\nproject_id = \"{PROJECT_ID}\"\n\
             sync_interval_secs = 1\nmax_attempts = 1\n\
             [cph.auth]\nak = \"{AK}\"\nsk = \"{SK}\"\n{cphub}"
        );
        let app = TestApp::spawn_with(backend, &overrides).await;
        let synced = Synced {
            app,
            fleet,
            control_plane,
        };
        let ids = synced.phone_ids();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        synced.app.idle_phones(&ids).await;
        synced.wait_for_sync().await;
        synced
    }

    fn phone_ids(&self) -> Vec<String> {
        let fleet = self.fleet.lock();
        fleet.phones.iter().map(|p| p.phone_id.clone()).collect()
    }

    /// Until the book lists each phone's apps as the simulator deployed them.
    async fn wait_for_sync(&self) {
        let deployed: Vec<(String, usize)> = {
            let fleet = self.fleet.lock();
            fleet
                .phones
                .iter()
                .map(|p| (p.phone_id.clone(), p.apps.len()))
                .collect()
        };
        for (phone_id, apps) in deployed {
            self.app
                .wait_for_phone(&phone_id, |p| {
                    p["apps"].as_array().is_some_and(|a| a.len() == apps)
                        && p["cph_synced_at"].is_string()
                })
                .await;
        }
    }

    /// The phones (by fleet index) that have `app_id` deployed in the simulator.
    fn phones_with(&self, app_id: &str) -> Vec<String> {
        let fleet = self.fleet.lock();
        (fleet.phones.iter())
            .filter(|p| p.apps.iter().any(|a| a == app_id))
            .map(|p| p.phone_id.clone())
            .collect()
    }

    async fn stop(self) {
        self.control_plane.stop(false).await;
    }
}

fn settings() -> ControlPlaneSettings {
    ControlPlaneSettings {
        project_id: PROJECT_ID.into(),
        ak: AK.into(),
        sk: SK.into(),
        iam_user: None,
        job_delay: Duration::from_millis(50),
        job_failure_rate: 0.0,
        max_date_skew: control_plane::DEFAULT_MAX_DATE_SKEW,
        faults: ControlPlaneFaults::default(),
    }
}

fn mint_body(app_id: &str, user: &str) -> Value {
    json!({"app_id": app_id, "user_id": user})
}

async fn minting_for_an_app_lands_only_on_phones_that_have_it_5_1_2(backend: Backend) {
    let synced = Synced::start(backend, 4, &[("game.a", 0.5), ("game.b", 0.5)], "").await;
    let with_a = synced.phones_with("game.a");
    let with_b = synced.phones_with("game.b");
    assert_eq!((with_a.len(), with_b.len()), (2, 2));

    let mut taken = Vec::new();
    for user in ["u-1", "u-2"] {
        let minted = synced.app.mint_ok(&mint_body("game.a", user)).await;
        let phone = minted["phone_id"].as_str().unwrap().to_owned();
        assert!(with_a.contains(&phone), "{phone} does not have game.a");
        taken.push(phone);
    }
    assert_ne!(taken[0], taken[1]);
    // Both phones with game.b are free, but do not have game.a.
    let res = synced.app.mint(&mint_body("game.a", "u-3")).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    // No phone has game.c at all: not a full fleet, an app not deployed.
    let res = synced.app.mint(&mint_body("game.c", "u-3")).await;
    assert_error(res, 409, "CPHUB.APP_NOT_DEPLOYED").await;
    let minted = synced.app.mint_ok(&mint_body("game.b", "u-4")).await;
    assert!(with_b.contains(&minted["phone_id"].as_str().unwrap().to_owned()));
    synced.stop().await;
}

async fn with_match_app_off_any_free_phone_is_taken(backend: Backend) {
    let synced = Synced::start(
        backend,
        2,
        &[("game.a", 0.5)],
        "[access]\nmatch_app = false\n",
    )
    .await;

    for user in ["u-1", "u-2"] {
        synced.app.mint_ok(&mint_body("game.z", user)).await;
    }
    let res = synced.app.mint(&mint_body("game.a", "u-3")).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    synced.stop().await;
}

async fn phones_filter_by_app_and_the_detail_lists_its_apps_5_1_2(backend: Backend) {
    let synced = Synced::start(backend, 3, &[("game.a", 0.34), ("game.b", 1.0)], "").await;
    let with_a = synced.phones_with("game.a");
    assert_eq!(with_a.len(), 2);

    let res = synced
        .app
        .get("/api/v1/phones?app_id=game.a", Some(TOKEN))
        .await;
    assert_eq!(res.status(), 200);
    let page: Value = res.json().await.unwrap();
    let mut listed: Vec<String> = (page["phones"].as_array().unwrap().iter())
        .map(|p| p["phone_id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = with_a.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let res = synced
        .app
        .get("/api/v1/phones?app_id=nowhere", Some(TOKEN))
        .await;
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["phones"], json!([]));
    let res = synced
        .app
        .get("/api/v1/phones?app_id=a%20b", Some(TOKEN))
        .await;
    assert_error(res, 400, "CPHUB.INVALID_FIELD").await;

    // Table 5-4: the version as the simulator deployed it; its "" version id is no value.
    let phone = synced.app.phone(&with_a[0]).await.unwrap();
    let apps: Vec<&str> = (phone["apps"].as_array().unwrap().iter())
        .map(|a| a["app_id"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["game.a", "game.b"]);
    assert_eq!(phone["apps"][0]["version_name"], "1.0.0");
    assert_eq!(phone["apps"][0]["version_code"], "1");
    assert_eq!(phone["apps"][0]["app_version_id"], Value::Null);
    synced.stop().await;
}

/// 4.3.2: `access_infos` is in the phone's detail only; the simulator gives phone `i` the
/// public address 127.0.0.1, access port 10000 + i, listen port 38080, type `server1`.
async fn the_mint_answer_carries_the_phones_access_info_4_3_2(backend: Backend) {
    let synced = Synced::start(backend, 3, &[("game.a", 1.0)], "").await;

    let minted = synced.app.mint_ok(&mint_body("game.a", "u-1")).await;

    let phone_id = minted["phone_id"].as_str().unwrap();
    let (index, server_id) = {
        let fleet = synced.fleet.lock();
        let index = fleet.phones.iter().position(|p| p.phone_id == phone_id);
        (
            index.unwrap(),
            fleet.phones[index.unwrap()].server_id.clone(),
        )
    };
    assert_eq!(
        minted["connect"],
        json!({
            "server_id": server_id,
            "access": [{"type": "server1", "public_ip": "127.0.0.1",
                        "access_port": 10000 + index, "listen_port": 38080}],
        })
    );
    synced.stop().await;
}

/// Without a control plane nothing is known about where to connect: an empty `connect`.
async fn without_a_control_plane_connect_is_empty(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1"]).await;

    let minted = app.mint_ok(&mint_body("any.game", "u-1")).await;

    assert_eq!(minted["connect"], json!({"server_id": null, "access": []}));
}

/// 6.2: the enter names the app the phone runs; another than minted is recorded, not refused.
async fn an_enter_for_another_app_is_accepted_and_flagged_6_2(backend: Backend) {
    let synced = Synced::start(backend, 1, &[("game.a", 1.0)], "").await;
    let minted = synced.app.mint_ok(&mint_body("game.a", "u-1")).await;
    let session_id = minted["session_id"].as_str().unwrap();
    let phone_id = minted["phone_id"].as_str().unwrap();

    let mut event = enter(session_id, phone_id, "2026-11-28T10:00:00Z");
    event["event"]["app_id"] = json!("game.b");
    synced.app.send_event(&event).await;

    let session = synced
        .app
        .wait_for_session(session_id, |s| s["state"] == "playing")
        .await;
    assert_eq!(session["app_id"], "game.a");
    assert_eq!(session["events"][0]["app_id"], "game.b");
    assert_eq!(session["events"][0]["app_mismatch"], true);
    let metrics = synced.app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("cphub_enter_app_mismatches_total 1"),
        "{metrics}"
    );
    synced.stop().await;
}

async fn an_enter_for_the_minted_app_is_not_flagged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1"]).await;
    let minted = app.mint_ok(&mint_body("com.example.game", "u-1")).await;
    let session_id = minted["session_id"].as_str().unwrap();

    app.send_event(&enter(session_id, "p-1", "2026-11-28T10:00:00Z"))
        .await;

    let session = app
        .wait_for_session(session_id, |s| s["state"] == "playing")
        .await;
    assert_eq!(session["events"][0]["app_mismatch"], false);
    assert_eq!(session["events"][0]["phone_mismatch"], false);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("cphub_enter_app_mismatches_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cphub_enter_phone_mismatches_total 0"),
        "{metrics}"
    );
}

/// 6.2: the enter names the phone the game runs on. The player reached p-2, not the p-1
/// minted (a client sent to stale access information): accepted, p-2 is the session's
/// current phone and p-1 is free again, and the event is flagged `phone_mismatch`. Before,
/// nothing told the operator.
async fn an_enter_on_another_phone_than_minted_is_accepted_and_flagged_6_2(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1", "p-2"]).await;
    let body = json!({"app_id": "com.example.game", "user_id": "u-1", "phone_id": "p-1"});
    let minted = app.mint_ok(&body).await;
    let session_id = minted["session_id"].as_str().unwrap();

    app.send_event(&enter(session_id, "p-2", "2026-11-28T10:00:00Z"))
        .await;

    let session = app
        .wait_for_session(session_id, |s| s["state"] == "playing")
        .await;
    assert_eq!(session["events"][0]["phone_mismatch"], true, "{session}");
    assert_eq!(session["events"][0]["phone_id"], "p-2", "{session}");
    let p2 = app
        .wait_for_phone("p-2", |p| p["state"] == "occupied")
        .await;
    assert_eq!(p2["current_session_id"], session_id, "{p2}");
    app.wait_for_phone("p-1", |p| p["state"] == "idle").await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(
        metrics.contains("cphub_enter_phone_mismatches_total 1"),
        "{metrics}"
    );
}

// ---- Idempotency-Key ----------------------------------------------------------------------

async fn mint_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::Response {
    mint_with_key_as(app, TOKEN, key, body).await
}

async fn mint_with_key_as(
    app: &TestApp,
    token: &str,
    key: &str,
    body: &Value,
) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/sessions", app.address))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request sent")
}

async fn created(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body
}

/// Phones the book shows held for a session, and the sessions minted.
async fn held_and_minted(app: &TestApp) -> (usize, usize) {
    let phones: Value = app
        .get("/api/v1/phones", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    let held = (phones["phones"].as_array().unwrap().iter())
        .filter(|p| p["allocated_session_id"].is_string())
        .count();
    let sessions: Value = app
        .get("/api/v1/sessions", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    (held, sessions["sessions"].as_array().unwrap().len())
}

async fn a_retried_mint_with_one_key_holds_one_phone_and_answers_the_same(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1", "p-2", "p-3"]).await;
    let body = mint_body("a1", "u-1");

    let first = created(mint_with_key(&app, "retry-1", &body).await).await;
    // The same request, its JSON written differently.
    let spaced = r#"{ "user_id": "u-1",  "app_id": "a1" }"#;
    let again = app
        .client
        .post(format!("{}/api/v1/sessions", app.address))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", "retry-1")
        .header("content-type", "application/json")
        .body(spaced)
        .send()
        .await
        .unwrap();
    let again = created(again).await;

    assert_eq!(first, again);
    assert_eq!(held_and_minted(&app).await, (1, 1));
    // Another key is another mint.
    let other = created(mint_with_key(&app, "retry-2", &body).await).await;
    assert_ne!(other["session_id"], first["session_id"]);
    assert_eq!(held_and_minted(&app).await, (2, 2));
}

async fn the_same_key_with_another_body_is_refused_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1", "p-2"]).await;
    created(mint_with_key(&app, "k-1", &mint_body("a1", "u-1")).await).await;

    for (body, why) in [
        (mint_body("a1", "u-2"), "another player"),
        (mint_body("a2", "u-1"), "another app"),
        (
            json!({"app_id": "a1", "user_id": "u-1", "phone_id": "p-2"}),
            "a pinned phone",
        ),
    ] {
        let res = mint_with_key(&app, "k-1", &body).await;
        let error = assert_error(res, 422, "CPHUB.IDEMPOTENCY_KEY_REUSED").await;
        assert!(error["error_msg"].is_string(), "{why}");
    }
    assert_eq!(held_and_minted(&app).await, (1, 1));
}

/// Two platforms' tokens: the same key and body from the second is not the first's
/// retry, and must not be answered with the first caller's session, ticket and key.
async fn a_key_reused_by_another_token_is_refused_not_answered_with_the_first_session(
    backend: Backend,
) {
    const OTHER: &str = "another-platform-token-0123456789";
    let config = format!("[api]\ntokens = [\"{TOKEN}\", \"{OTHER}\"]\nrate_limit_per_second = 0\n");
    let app = TestApp::spawn_with(backend, &config).await;
    app.idle_phones(&["p-1", "p-2"]).await;
    let body = mint_body("a1", "u-1");
    let first = created(mint_with_key(&app, "k-1", &body).await).await;

    let res = mint_with_key_as(&app, OTHER, "k-1", &body).await;

    let error = assert_error(res, 422, "CPHUB.IDEMPOTENCY_KEY_REUSED").await;
    assert!(
        !error
            .to_string()
            .contains(first["ticket"].as_str().unwrap())
    );
    assert_eq!(held_and_minted(&app).await, (1, 1));
}

async fn concurrent_duplicates_mint_one_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let phones: Vec<String> = (0..10).map(|i| format!("p-{i}")).collect();
    let ids: Vec<&str> = phones.iter().map(String::as_str).collect();
    app.idle_phones(&ids).await;
    let body = mint_body("a1", "u-1");

    let answers = futures_util::future::join_all(
        (0..10).map(|_| async { created(mint_with_key(&app, "same", &body).await).await }),
    )
    .await;

    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    assert_eq!(held_and_minted(&app).await, (1, 1));
}

/// A refusal is not remembered: the retry may find a phone.
async fn a_refused_mint_is_not_replayed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = mint_with_key(&app, "k-1", &mint_body("a1", "u-1")).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;

    app.idle_phones(&["p-1"]).await;
    let minted = created(mint_with_key(&app, "k-1", &mint_body("a1", "u-1")).await).await;
    assert_eq!(minted["phone_id"], "p-1");
}

/// `access.idempotency_ttl_secs` later the key is free: the same request mints anew.
async fn a_key_is_forgotten_after_its_ttl(backend: Backend) {
    let clock = Arc::new(ManualClock::new(
        UtcTime::parse("t", "2026-11-28T10:00:00Z").unwrap(),
    ));
    let ttl = "[access]\nidempotency_ttl_secs = 60\n";
    let app = TestApp::spawn_with_clock(backend, ttl, Arc::clone(&clock)).await;
    app.idle_phones(&["p-1", "p-2"]).await;
    let body = mint_body("a1", "u-1");
    let first = created(mint_with_key(&app, "k-1", &body).await).await;

    clock.advance(Duration::from_secs(59));
    let within = created(mint_with_key(&app, "k-1", &body).await).await;
    clock.advance(Duration::from_secs(2));
    // Fresh again (the clock moved past the stale threshold): heard from, flushed.
    app.idle_phones(&["p-1", "p-2"]).await;
    app.wait_for_phone("p-2", |p| p["state"] == "idle").await;
    let after = created(mint_with_key(&app, "k-1", &body).await).await;

    assert_eq!(within, first);
    assert_ne!(after["session_id"], first["session_id"]);
}

async fn bad_idempotency_keys_are_refused_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1"]).await;
    let long = "k".repeat(129);
    for (key, why) in [
        ("", "empty"),
        (long.as_str(), "over 128 characters"),
        ("a b", "a space"),
        ("a/b", "a slash"),
    ] {
        let res = mint_with_key(&app, key, &mint_body("a1", "u-1")).await;
        let error = assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
        let message = error["error_msg"].as_str().unwrap();
        assert!(message.contains("Idempotency-Key"), "{why}: {message}");
    }
    let res = app
        .client
        .post(format!("{}/api/v1/sessions", app.address))
        .bearer_auth(TOKEN)
        .header(
            "Idempotency-Key",
            reqwest::header::HeaderValue::from_bytes(b"k\xe9y").unwrap(),
        )
        .json(&mint_body("a1", "u-1"))
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    assert_eq!(held_and_minted(&app).await, (0, 0));
}

/// Joins the wait queue for `app_id`; returns the entry's id.
async fn join_for(app: &TestApp, app_id: &str, user: &str) -> String {
    let res = queue::post_queue(app, &mint_body(app_id, user)).await;
    let status = res.status();
    let place: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{place}");
    queue::queue_id(&place).to_owned()
}

/// Issue #16 parts 4 and 6 (chapter 5.1.2): the queue gives an entry for game.a only a phone
/// with game.a deployed. While both of game.a's phones are in games, the game.a entry at the
/// head of the line is passed over for the free game.b phones, which go to the game.b
/// players who joined after it; the game.a phone freed next is the one it gets.
async fn the_queue_gives_an_entry_only_a_phone_with_its_app_5_1_2(backend: Backend) {
    let apps = [("game.a", 0.5), ("game.b", 0.5)];
    let synced = Synced::start(backend, 4, &apps, queue::PATIENT_FLEET).await;
    let app = &synced.app;
    let with_a = synced.phones_with("game.a");
    let with_b = synced.phones_with("game.b");
    assert_eq!((with_a.len(), with_b.len()), (2, 2));
    let mut playing = Vec::new();
    for user in ["a-1", "a-2"] {
        let session = app.mint_ok(&mint_body("game.a", user)).await;
        queue::play(app, &session).await;
        playing.push(session);
    }

    let waits_for_a = join_for(app, "game.a", "q-a").await;
    let mut seated_b = Vec::new();
    for user in ["q-b1", "q-b2"] {
        let id = join_for(app, "game.b", user).await;
        let session = queue::seated(app, &id).await;
        let phone = session["phone_id"].as_str().unwrap().to_owned();
        assert!(with_b.contains(&phone), "{phone} does not have game.b");
        // Served after q-a joined, with a game.b phone free: q-a was passed over for it.
        let place = queue::waiting(app, &waits_for_a).await;
        assert_eq!(place["position"], 1, "{place}");
        seated_b.push(phone);
    }
    assert_ne!(seated_b[0], seated_b[1]);

    queue::end(app, &playing[0]).await;
    let session = queue::seated(app, &waits_for_a).await;
    assert_eq!(
        session["phone_id"], playing[0]["phone_id"],
        "the freed game.a phone"
    );
    synced.stop().await;
}

backend_tests!(
    the_queue_gives_an_entry_only_a_phone_with_its_app_5_1_2,
    minting_for_an_app_lands_only_on_phones_that_have_it_5_1_2,
    with_match_app_off_any_free_phone_is_taken,
    phones_filter_by_app_and_the_detail_lists_its_apps_5_1_2,
    the_mint_answer_carries_the_phones_access_info_4_3_2,
    without_a_control_plane_connect_is_empty,
    an_enter_for_another_app_is_accepted_and_flagged_6_2,
    an_enter_for_the_minted_app_is_not_flagged,
    an_enter_on_another_phone_than_minted_is_accepted_and_flagged_6_2,
    a_retried_mint_with_one_key_holds_one_phone_and_answers_the_same,
    the_same_key_with_another_body_is_refused_422,
    a_key_reused_by_another_token_is_refused_not_answered_with_the_first_session,
    concurrent_duplicates_mint_one_session,
    a_refused_mint_is_not_replayed,
    a_key_is_forgotten_after_its_ttl,
    bad_idempotency_keys_are_refused_400,
);
