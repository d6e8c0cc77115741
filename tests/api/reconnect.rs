//! Reconnects (chapter 6.1): a client SDK that reconnects after a network drop makes the
//! phone verify again with the same `session_id`, `ticket` and `auth_ts`. With
//! `access.reconnect = "while_live"` (the default) the ticket admits its player again, with
//! the same `aes_key`, until the session ends; `auth_ts` bounds only the first sign check.

use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_error, enter, quit};
use crate::metrics::{scrape, value};

const T0: &str = "2026-11-28T10:00:00Z";
/// Phones never go stale, so moving the clock shows only the rule under test.
const PATIENT_FLEET: &str = "[fleet]\nmiss_threshold = 100000\n";

struct Game {
    app: TestApp,
    clock: Arc<ManualClock>,
    minted: Value,
    /// The first sign check, as the phone sent it.
    first: Value,
}

impl Game {
    /// A session minted, verified and entered at T0 on phone `p-1`.
    async fn started(backend: Backend, access: &str) -> Game {
        let clock = Arc::new(ManualClock::new(UtcTime::parse("t0", T0).unwrap()));
        let config = format!("{PATIENT_FLEET}[access]\n{access}");
        let app = TestApp::spawn_with_clock(backend, &config, Arc::clone(&clock)).await;
        app.idle_phones(&["p-1"]).await;
        let minted = app
            .mint_ok(&json!({"app_id": "com.example.game", "user_id": "u-1"}))
            .await;
        let mut game = Game {
            app,
            clock,
            minted,
            first: Value::Null,
        };
        game.first = game.sign_check(b"first");
        game.admitted(&game.first).await;
        game.app.send_event(&enter(game.id(), "p-1", T0)).await;
        game
    }

    fn id(&self) -> &str {
        self.minted["session_id"].as_str().unwrap()
    }

    /// A sign check as the SDK makes it: a fresh IV and `plaintext` sealed under the key.
    fn sign_check(&self, plaintext: &[u8]) -> Value {
        let key = hex::decode(self.minted["aes_key"].as_str().unwrap()).unwrap();
        let iv: [u8; 12] = rand::random();
        let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
        let data = cipher
            .encrypt(&aes_gcm::Nonce::from(iv), plaintext)
            .unwrap();
        json!({
            "session_id": self.minted["session_id"],
            "ticket": self.minted["ticket"],
            "auth_ts": self.minted["auth_ts"],
            "encrypted_data": STANDARD.encode(data),
            "aes_iv": hex::encode(iv),
        })
    }

    async fn admitted(&self, body: &Value) {
        let res = self.app.sign_check(body).await;
        let status = res.status();
        // The session key: kept by no cache on the way.
        assert_eq!(res.headers()["cache-control"], "no-store");
        let answer: Value = res.json().await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["aes_key"], self.minted["aes_key"], "{answer}");
    }

    async fn log_kinds(&self) -> Vec<String> {
        let session = self.app.session(self.id()).await.unwrap();
        let events = session["events"].as_array().unwrap().iter();
        events
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    }

    async fn sign_checks(&self, result: &str) -> f64 {
        let series = format!("cphub_sign_checks_total{{result=\"{result}\"}}");
        value(&scrape(&self.app).await, &series)
    }
}

async fn a_reconnect_30_s_into_a_game_is_admitted_with_the_same_key_and_logged(backend: Backend) {
    let game = Game::started(backend, "").await;
    assert_eq!(game.sign_checks("reconnect").await, 0.0, "exported at 0");
    game.clock.advance(Duration::from_secs(30));

    game.admitted(&game.sign_check(b"reconnect")).await;

    // Past auth_ts (mint + 120 s) and its skew: auth_ts bounds only the first sign check.
    game.clock.advance(Duration::from_secs(600));
    game.admitted(&game.sign_check(b"again")).await;
    assert_eq!(game.log_kinds().await, ["enter", "reconnect", "reconnect"]);
    let session = game.app.session(game.id()).await.unwrap();
    let reconnect = &session["events"][1];
    assert_eq!(reconnect["time"], "2026-11-28T10:00:30Z", "{reconnect}");
    assert_eq!(reconnect["phone_id"], "p-1", "{reconnect}");
    assert_eq!(reconnect["outcome"], "admitted", "{reconnect}");
    assert_eq!(session["state"], "playing");
    assert_eq!(game.sign_checks("reconnect").await, 2.0);
    assert_eq!(game.sign_checks("ok").await, 1.0);
    let mut other_ticket = game.sign_check(b"other");
    other_ticket["ticket"] = json!("x".repeat(43));
    assert_error(
        game.app.sign_check(&other_ticket).await,
        403,
        "CPHUB.BAD_TICKET",
    )
    .await;
}

async fn after_quit_the_ticket_is_refused_with_its_own_code(backend: Backend) {
    let game = Game::started(backend, "").await;
    game.clock.advance(Duration::from_secs(30));
    game.app
        .send_event(&quit(game.id(), "p-1", "2026-11-28T10:00:30Z", 30))
        .await;

    let res = game.app.sign_check(&game.sign_check(b"too late")).await;

    assert_error(res, 403, "CPHUB.TICKET_SESSION_ENDED").await;
    assert_eq!(game.log_kinds().await, ["enter", "quit"]);
    assert_eq!(game.sign_checks("ticket_session_ended").await, 1.0);
}

async fn with_reconnect_never_the_ticket_is_single_use(backend: Backend) {
    let game = Game::started(backend, "reconnect = \"never\"\n").await;
    game.clock.advance(Duration::from_secs(30));

    let res = game.app.sign_check(&game.sign_check(b"reconnect")).await;

    assert_error(res, 403, "CPHUB.TICKET_REPLAYED").await;
    assert_eq!(game.log_kinds().await, ["enter"]);
    assert_eq!(game.sign_checks("reconnect").await, 0.0);
}

/// With reconnects allowed, `encrypted_data` under `enforce` is what proves the caller holds
/// the session key (6.1): the ticket alone, seen once, does not let someone else in, with
/// data that does not decrypt or with none.
async fn under_enforce_a_reconnect_must_prove_the_session_key(backend: Backend) {
    let game = Game::started(backend, "encrypted_data = \"enforce\"\n").await;
    game.clock.advance(Duration::from_secs(30));
    let mut forged = game.sign_check(b"reconnect");
    let data = STANDARD.decode(forged["encrypted_data"].as_str().unwrap());
    let mut data = data.unwrap();
    data[0] ^= 1;
    forged["encrypted_data"] = json!(STANDARD.encode(data));

    let res = game.app.sign_check(&forged).await;

    assert_error(res, 403, "CPHUB.DECRYPT_FAILED").await;
    // Nor does leaving the data out (the first sign check sealed some): before, that was
    // admitted, the key in its answer.
    let mut stripped = game.sign_check(b"reconnect");
    stripped["encrypted_data"] = json!("");
    stripped["aes_iv"] = json!("");
    let res = game.app.sign_check(&stripped).await;
    let body = assert_error(res, 403, "CPHUB.ENCRYPTED_DATA_REQUIRED").await;
    assert!(body.get("aes_key").is_none(), "{body}");
    game.admitted(&game.sign_check(b"reconnect")).await;
    assert_eq!(game.log_kinds().await, ["enter", "reconnect"]);
}

/// Under `enforce`, the first sign check sent again word for word once the game is entered
/// is a copy (from a log, a proxy), not the SDK reconnecting, which seals anew: refused as a
/// replay, whose `encrypted_data` would otherwise decrypt and hand out the key. Within the
/// grace it is the engine's retry, answered again; and the player's own reconnect is
/// admitted.
async fn under_enforce_a_copy_of_the_first_sign_check_is_refused_as_a_replay(backend: Backend) {
    let game = Game::started(backend, "encrypted_data = \"enforce\"\n").await;
    game.clock.advance(Duration::from_secs(5));
    game.admitted(&game.first).await;
    game.clock.advance(Duration::from_secs(25));

    let res = game.app.sign_check(&game.first).await;

    assert_error(res, 403, "CPHUB.TICKET_REPLAYED").await;
    game.admitted(&game.sign_check(b"reconnect")).await;
    assert_eq!(game.log_kinds().await, ["enter", "reconnect"]);
}

backend_tests!(
    under_enforce_a_copy_of_the_first_sign_check_is_refused_as_a_replay,
    a_reconnect_30_s_into_a_game_is_admitted_with_the_same_key_and_logged,
    after_quit_the_ticket_is_refused_with_its_own_code,
    with_reconnect_never_the_ticket_is_single_use,
    under_enforce_a_reconnect_must_prove_the_session_key,
);
