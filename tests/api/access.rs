//! Access verification (chapter 6.1): minting a session allocates a free phone and issues a
//! ticket and an AES key; the sign check admits exactly the client holding them, once.
//! `encrypted_data` is sealed here the way a client SDK would (AES-256-GCM, random IV).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{
    Backend, TOKEN, TestApp, assert_error, assert_request_id, enter, heartbeat, quit,
};

const GAME: &str = "com.example.game";
const T0: &str = "2026-11-28T10:00:00Z";
const HELLO: &[u8] = b"client hello";
/// Phones never go stale, so tests that move the clock only see the rule they are about.
const PATIENT_FLEET: &str = "[fleet]\nmiss_threshold = 100000\n";

#[derive(Debug, Clone, Copy)]
enum Encoding {
    Hex,
    Base64,
}

impl Encoding {
    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Hex => hex::encode(bytes),
            Encoding::Base64 => STANDARD.encode(bytes),
        }
    }

    fn decode(self, text: &str) -> Vec<u8> {
        match self {
            Encoding::Hex => hex::decode(text).expect("valid hex"),
            Encoding::Base64 => STANDARD.decode(text).expect("valid base64"),
        }
    }
}

/// How a deployment writes `aes_key`, `aes_iv` and `encrypted_data`.
#[derive(Debug, Clone, Copy)]
struct Encodings {
    key: Encoding,
    iv: Encoding,
    data: Encoding,
}

const DEFAULT_ENCODINGS: Encodings = Encodings {
    key: Encoding::Hex,
    iv: Encoding::Hex,
    data: Encoding::Base64,
};

const SWAPPED_ENCODINGS: Encodings = Encodings {
    key: Encoding::Base64,
    iv: Encoding::Base64,
    data: Encoding::Hex,
};

const SWAPPED_CONFIG: &str =
    "[access]\nkey_encoding = \"base64\"\niv_encoding = \"base64\"\ndata_encoding = \"hex\"\n";

/// `encrypted_data` refused unless it decrypts (the default only observes it).
const ENFORCE: &str = "[access]\nencrypted_data = \"enforce\"\n";

/// The strict single use of tickets (the default admits reconnects of a live session).
const SINGLE_USE: &str = "[access]\nreconnect = \"never\"\n";

fn mint_request(user: &str) -> Value {
    json!({"app_id": GAME, "user_id": user})
}

fn pinned_mint_request(user: &str, phone: &str) -> Value {
    json!({"app_id": GAME, "user_id": user, "phone_id": phone})
}

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(UtcTime::parse("start", T0).unwrap()))
}

/// Makes phones `p-1` … `p-n` known and idle.
async fn idle_fleet(app: &TestApp, n: usize) -> Vec<String> {
    let phones: Vec<String> = (1..=n).map(|i| format!("p-{i}")).collect();
    let ids: Vec<&str> = phones.iter().map(String::as_str).collect();
    app.idle_phones(&ids).await;
    phones
}

/// An idle heartbeat from `phone` at phone time `time`, waited for until stored.
async fn beat(app: &TestApp, phone: &str, time: &str) {
    app.send_heartbeat(&heartbeat(phone, None, time)).await;
    app.wait_for_phone(phone, |p| p["last_heartbeat_at"] == time)
        .await;
}

fn text<'a>(value: &'a Value, field: &str) -> &'a str {
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} is a string: {value}"))
}

/// AES-256-GCM as a client SDK does it: the ciphertext followed by the 16-byte tag.
fn seal(key: &[u8], iv: &[u8; 12], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).unwrap();
    cipher
        .encrypt(&aes_gcm::Nonce::from(*iv), plaintext)
        .unwrap()
}

fn key_of(minted: &Value, encodings: Encodings) -> Vec<u8> {
    encodings.key.decode(text(minted, "aes_key"))
}

/// The sign check for `minted` with the given `encrypted_data` and `aes_iv` text.
fn sign_check_with(minted: &Value, encrypted_data: String, aes_iv: String) -> Value {
    json!({
        "session_id": minted["session_id"],
        "ticket": minted["ticket"],
        "auth_ts": minted["auth_ts"],
        "encrypted_data": encrypted_data,
        "aes_iv": aes_iv,
    })
}

/// A sign check carrying raw `data` and `iv` bytes in the default encodings.
fn sign_check_raw(minted: &Value, data: &[u8], iv: &[u8]) -> Value {
    sign_check_with(
        minted,
        DEFAULT_ENCODINGS.data.encode(data),
        DEFAULT_ENCODINGS.iv.encode(iv),
    )
}

/// The correct sign check for `minted`: fresh IV, data sealed under the minted key.
fn sign_check_for(minted: &Value, encodings: Encodings) -> Value {
    let iv: [u8; 12] = rand::random();
    let data = seal(&key_of(minted, encodings), &iv, HELLO);
    sign_check_with(
        minted,
        encodings.data.encode(&data),
        encodings.iv.encode(&iv),
    )
}

fn correct(minted: &Value) -> Value {
    sign_check_for(minted, DEFAULT_ENCODINGS)
}

/// `body` with `changes` laid over its top-level keys; a `null` removes the key.
fn with(mut body: Value, changes: Value) -> Value {
    let (Value::Object(target), Value::Object(changes)) = (&mut body, changes) else {
        unreachable!()
    };
    for (key, value) in changes {
        if value.is_null() {
            target.remove(&key);
        } else {
            target.insert(key, value);
        }
    }
    body
}

/// Asserts chapter 6.1's answer: exactly `request_id` and the minted `aes_key`.
async fn assert_admitted(res: reqwest::Response, minted: &Value) {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "body: {body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "only request_id and aes_key expected: {body}"
    );
    assert_request_id(&body["request_id"]);
    assert_eq!(body["aes_key"], minted["aes_key"], "{body}");
}

fn assert_lower_hex(value: &str, len: usize) {
    assert_eq!(value.len(), len, "{value}");
    assert!(
        value
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "{value}"
    );
}

fn assert_secrets_absent(record: &Value, minted: &Value) {
    let record = record.to_string();
    for secret in ["ticket", "aes_key"] {
        assert!(
            !record.contains(text(minted, secret)),
            "{secret} leaked: {record}"
        );
    }
}

async fn a_minted_session_is_verified_played_and_ended(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1"]).await;

    let minted = app.mint_ok(&mint_request("u-1")).await;
    let id = text(&minted, "session_id");
    assert_lower_hex(id, 32);
    assert_eq!(text(&minted, "ticket").len(), 43, "{minted}");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(text(&minted, "ticket"))
            .unwrap()
            .len(),
        32
    );
    assert_lower_hex(text(&minted, "aes_key"), 64);
    let auth_ts: i64 = text(&minted, "auth_ts").parse().expect("auth_ts is digits");
    let expires_at = UtcTime::parse("expires_at", text(&minted, "expires_at")).unwrap();
    assert_eq!(expires_at.epoch_millis(), auth_ts, "{minted}");
    assert_eq!(minted["phone_id"], "p-1");
    assert_eq!(minted["state"], "minted");
    let session = app.session(id).await.expect("minted session recorded");
    assert_eq!(session["state"], "minted");
    assert_eq!(session["issued"], true);
    assert_eq!(session["user_id"], "u-1");
    assert_eq!(session["app_id"], GAME);
    assert_eq!(session["phone_id"], "p-1");
    assert!(session["minted_at"].is_string(), "{session}");
    assert_eq!(session["verified_at"], Value::Null);
    assert_eq!(app.phone("p-1").await.unwrap()["allocated_session_id"], id);

    let res = app.sign_check(&correct(&minted)).await;

    assert_admitted(res, &minted).await;
    let session = app.session(id).await.unwrap();
    assert_eq!(session["state"], "verified");
    assert!(session["verified_at"].is_string(), "{session}");

    app.send_event(&enter(id, "p-1", T0)).await;
    assert_eq!(app.session(id).await.unwrap()["state"], "playing");
    app.send_heartbeat(&heartbeat("p-1", Some(id), "2026-11-28T10:00:05Z"))
        .await;
    let session = app
        .wait_for_session(id, |s| s["last_heartbeat_at"] == "2026-11-28T10:00:05Z")
        .await;
    assert_eq!(session["state"], "playing");

    app.send_event(&quit(id, "p-1", "2026-11-28T10:20:00Z", 1200))
        .await;

    let session = app.session(id).await.unwrap();
    assert_eq!(session["state"], "ended");
    assert_eq!(session["duration_seconds"], 1200);
    assert_eq!(session["started_at"], T0);
    assert_eq!(session["ended_at"], "2026-11-28T10:20:00Z");
    for field in ["minted_at", "verified_at"] {
        assert!(session[field].is_string(), "{field}: {session}");
    }
    assert_eq!(session["user_id"], "u-1");
    assert_secrets_absent(&session, &minted);
    let phone = app.phone("p-1").await.unwrap();
    assert_eq!(phone["allocated_session_id"], Value::Null);
    assert_secrets_absent(&phone, &minted);
}

async fn check_encodings(backend: Backend, config: &str, encodings: Encodings) {
    let app = TestApp::spawn_with(backend, config).await;
    app.idle_phones(&["p-1"]).await;

    let minted = app.mint_ok(&mint_request("u-1")).await;
    let res = app.sign_check(&sign_check_for(&minted, encodings)).await;

    assert_admitted(res, &minted).await;
    let key = text(&minted, "aes_key");
    match encodings.key {
        Encoding::Hex => assert_lower_hex(key, 64),
        Encoding::Base64 => assert_eq!(key.len(), 44, "{key}"),
    }
    assert_eq!(key_of(&minted, encodings).len(), 32, "{key}");
}

async fn the_default_encodings_are_hex_key_hex_iv_base64_data(backend: Backend) {
    check_encodings(backend, "", DEFAULT_ENCODINGS).await;
}

async fn base64_key_and_iv_with_hex_data_can_be_configured(backend: Backend) {
    check_encodings(backend, SWAPPED_CONFIG, SWAPPED_ENCODINGS).await;
}

async fn the_configured_iv_encoding_is_the_one_read(backend: Backend) {
    let config = format!("{SWAPPED_CONFIG}encrypted_data = \"enforce\"\n");
    let app = TestApp::spawn_with(backend, &config).await;
    app.idle_phones(&["p-1"]).await;
    let minted = app.mint_ok(&mint_request("u-1")).await;
    let iv: [u8; 12] = rand::random();
    let data = seal(&key_of(&minted, SWAPPED_ENCODINGS), &iv, HELLO);

    // 24 hex characters read as base64 are 18 bytes, not an IV.
    let res = app
        .sign_check(&sign_check_with(
            &minted,
            hex::encode(&data),
            hex::encode(iv),
        ))
        .await;

    assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    let res = app
        .sign_check(&sign_check_with(
            &minted,
            hex::encode(&data),
            STANDARD.encode(iv),
        ))
        .await;
    assert_admitted(res, &minted).await;
}

struct Refusal {
    what: &'static str,
    /// The bad request, made for the freshly minted session.
    request: fn(&Value) -> String,
    status: u16,
    code: &'static str,
}

fn refusals() -> Vec<Refusal> {
    let case = |what, request: fn(&Value) -> String, status, code| Refusal {
        what,
        request,
        status,
        code,
    };
    vec![
        case(
            "unknown session_id",
            |m| {
                let other = hex::encode(rand::random::<[u8; 16]>());
                with(correct(m), json!({"session_id": other})).to_string()
            },
            403,
            "CPHUB.UNKNOWN_SESSION",
        ),
        case(
            "another ticket",
            |m| {
                let other = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
                with(correct(m), json!({"ticket": other})).to_string()
            },
            403,
            "CPHUB.BAD_TICKET",
        ),
        case(
            "auth_ts one millisecond later",
            |m| {
                let later = text(m, "auth_ts").parse::<i64>().unwrap() + 1;
                with(correct(m), json!({"auth_ts": later.to_string()})).to_string()
            },
            403,
            "CPHUB.BAD_AUTH_TS",
        ),
        case(
            "encrypted_data under another key",
            |m| {
                let iv: [u8; 12] = rand::random();
                let data = seal(&rand::random::<[u8; 32]>(), &iv, HELLO);
                sign_check_raw(m, &data, &iv).to_string()
            },
            403,
            "CPHUB.DECRYPT_FAILED",
        ),
        case(
            "a ciphertext byte flipped",
            |m| {
                let iv: [u8; 12] = rand::random();
                let mut data = seal(&key_of(m, DEFAULT_ENCODINGS), &iv, HELLO);
                data[0] ^= 1;
                sign_check_raw(m, &data, &iv).to_string()
            },
            403,
            "CPHUB.DECRYPT_FAILED",
        ),
        case(
            "a tag byte flipped",
            |m| {
                let iv: [u8; 12] = rand::random();
                let mut data = seal(&key_of(m, DEFAULT_ENCODINGS), &iv, HELLO);
                *data.last_mut().unwrap() ^= 1;
                sign_check_raw(m, &data, &iv).to_string()
            },
            403,
            "CPHUB.DECRYPT_FAILED",
        ),
        case(
            "another aes_iv",
            |m| {
                let iv: [u8; 12] = rand::random();
                let data = seal(&key_of(m, DEFAULT_ENCODINGS), &iv, HELLO);
                let other: [u8; 12] = rand::random();
                sign_check_raw(m, &data, &other).to_string()
            },
            403,
            "CPHUB.DECRYPT_FAILED",
        ),
        case(
            "not JSON",
            |m| format!("session_id={}", text(m, "session_id")),
            400,
            "CPHUB.MALFORMED_JSON",
        ),
        case(
            "missing ticket",
            |m| with(correct(m), json!({"ticket": null})).to_string(),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "missing session_id",
            |m| with(correct(m), json!({"session_id": null})).to_string(),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "missing auth_ts",
            |m| with(correct(m), json!({"auth_ts": null})).to_string(),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "auth_ts not digits",
            |m| with(correct(m), json!({"auth_ts": "soon"})).to_string(),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "encrypted_data without aes_iv",
            |m| with(correct(m), json!({"aes_iv": null})).to_string(),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "aes_iv of 16 bytes",
            |m| {
                let iv: [u8; 16] = rand::random();
                let data = seal(
                    &key_of(m, DEFAULT_ENCODINGS),
                    &iv[..12].try_into().unwrap(),
                    HELLO,
                );
                sign_check_raw(m, &data, &iv).to_string()
            },
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "aes_iv not hex",
            |m| with(correct(m), json!({"aes_iv": "zz".repeat(12)})).to_string(),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "encrypted_data not base64",
            |m| with(correct(m), json!({"encrypted_data": "%%%%"})).to_string(),
            400,
            "CPHUB.INVALID_FIELD",
        ),
    ]
}

async fn each_rule_refuses_with_its_code_and_keeps_the_ticket(backend: Backend) {
    let app = TestApp::spawn_with(backend, ENFORCE).await;
    let cases = refusals();
    idle_fleet(&app, cases.len()).await;

    for case in cases {
        let minted = app.mint_ok(&mint_request("u-1")).await;

        let res = app.post("/cph/sign-check", (case.request)(&minted)).await;

        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error_code"].as_str()),
            (case.status, Some(case.code)),
            "case {:?}: {body}",
            case.what
        );
        assert!(
            body["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
            "case {:?}: {body}",
            case.what
        );
        assert_request_id(&body["request_id"]);
        let res = app.sign_check(&correct(&minted)).await;
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            body["aes_key"], minted["aes_key"],
            "case {:?}: the refusal must not consume the ticket: {body}",
            case.what
        );
    }
}

async fn a_ticket_past_auth_ts_and_the_skew_is_refused(backend: Backend) {
    let clock = manual_clock();
    let app = TestApp::spawn_with_clock(backend, PATIENT_FLEET, Arc::clone(&clock)).await;
    app.idle_phones(&["p-1", "p-2", "p-3"]).await;
    let in_time = app.mint_ok(&mint_request("u-1")).await;
    let in_skew = app.mint_ok(&mint_request("u-2")).await;
    let late = app.mint_ok(&mint_request("u-3")).await;
    let t0_ms = UtcTime::parse("t0", T0).unwrap().epoch_millis();
    assert_eq!(late["auth_ts"], (t0_ms + 120_000).to_string());

    clock.advance(Duration::from_secs(119));
    assert_admitted(app.sign_check(&correct(&in_time)).await, &in_time).await;
    clock.advance(Duration::from_secs(4));
    assert_admitted(app.sign_check(&correct(&in_skew)).await, &in_skew).await;
    clock.advance(Duration::from_secs(3));
    let res = app.sign_check(&correct(&late)).await;

    assert_error(res, 403, "CPHUB.TICKET_EXPIRED").await;
    let session = app.session(text(&late, "session_id")).await.unwrap();
    assert_ne!(session["state"], "verified", "{session}");
    assert_eq!(session["verified_at"], Value::Null, "{session}");
}

async fn strict_mode_requires_encrypted_data(backend: Backend) {
    let config = format!("{ENFORCE}require_encrypted_data = true\n");
    let app = TestApp::spawn_with(backend, &config).await;
    app.idle_phones(&["p-1"]).await;
    let minted = app.mint_ok(&mint_request("u-1")).await;
    let empty = with(
        correct(&minted),
        json!({"encrypted_data": "", "aes_iv": ""}),
    );
    let absent = with(
        correct(&minted),
        json!({"encrypted_data": null, "aes_iv": null}),
    );

    for body in [empty, absent] {
        let res = app.sign_check(&body).await;
        assert_error(res, 403, "CPHUB.ENCRYPTED_DATA_REQUIRED").await;
    }

    assert_admitted(app.sign_check(&correct(&minted)).await, &minted).await;
}

/// A request that must pass, made for the freshly minted session.
type Variant = (&'static str, fn(&Value) -> Value);

async fn lenient_forms_of_the_request_are_accepted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let variants: [Variant; 4] = [
        ("chapter 6.1's empty encrypted_data and aes_iv", |m| {
            with(correct(m), json!({"encrypted_data": "", "aes_iv": ""}))
        }),
        ("no encrypted_data nor aes_iv", |m| {
            with(correct(m), json!({"encrypted_data": null, "aes_iv": null}))
        }),
        ("auth_ts as a JSON number", |m| {
            let auth_ts: i64 = text(m, "auth_ts").parse().unwrap();
            with(correct(m), json!({"auth_ts": auth_ts}))
        }),
        ("the misspelling encypted_data", |m| {
            let body = correct(m);
            let data = body["encrypted_data"].clone();
            with(body, json!({"encrypted_data": null, "encypted_data": data}))
        }),
    ];
    idle_fleet(&app, variants.len()).await;

    for (what, request) in variants {
        let minted = app.mint_ok(&mint_request("u-1")).await;
        let res = app.sign_check(&request(&minted)).await;
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(body["aes_key"], minted["aes_key"], "case {what:?}: {body}");
        let session = app.session(text(&minted, "session_id")).await.unwrap();
        assert_eq!(session["state"], "verified", "case {what:?}: {session}");
    }
}

async fn the_misspelled_encypted_data_is_checked_too(backend: Backend) {
    let app = TestApp::spawn_with(backend, ENFORCE).await;
    app.idle_phones(&["p-1"]).await;
    let minted = app.mint_ok(&mint_request("u-1")).await;
    let iv: [u8; 12] = rand::random();
    let mut data = seal(&key_of(&minted, DEFAULT_ENCODINGS), &iv, HELLO);
    let misspelled = |data: &[u8]| {
        with(
            sign_check_raw(&minted, data, &iv),
            json!({"encrypted_data": null, "encypted_data": STANDARD.encode(data)}),
        )
    };
    let good = misspelled(&data);
    data[3] ^= 0x80;

    let res = app.sign_check(&misspelled(&data)).await;

    assert_error(res, 403, "CPHUB.DECRYPT_FAILED").await;
    assert_admitted(app.sign_check(&good).await, &minted).await;
}

async fn without_reconnects_a_used_ticket_only_answers_a_prompt_identical_retry(backend: Backend) {
    let clock = manual_clock();
    let config = format!("{PATIENT_FLEET}{SINGLE_USE}");
    let app = TestApp::spawn_with_clock(backend, &config, Arc::clone(&clock)).await;
    app.idle_phones(&["p-1", "p-2"]).await;
    let retried = app.mint_ok(&mint_request("u-1")).await;
    let reused = app.mint_ok(&mint_request("u-2")).await;
    let first = correct(&retried);
    assert_admitted(app.sign_check(&first).await, &retried).await;

    // Within the grace window, an identical request gets the same answer.
    assert_admitted(app.sign_check(&first).await, &retried).await;
    clock.advance(Duration::from_secs(5));
    assert_admitted(app.sign_check(&first).await, &retried).await;

    // Another request with the same ticket is a replay, even right away.
    assert_admitted(app.sign_check(&correct(&reused)).await, &reused).await;
    let res = app.sign_check(&correct(&reused)).await;
    assert_error(res, 403, "CPHUB.TICKET_REPLAYED").await;
    let bare = with(
        correct(&reused),
        json!({"encrypted_data": null, "aes_iv": null}),
    );
    assert_error(app.sign_check(&bare).await, 403, "CPHUB.TICKET_REPLAYED").await;

    // Past the grace window even the identical request is a replay.
    clock.advance(Duration::from_secs(6));
    let res = app.sign_check(&first).await;

    assert_error(res, 403, "CPHUB.TICKET_REPLAYED").await;
    let session = app.session(text(&retried, "session_id")).await.unwrap();
    assert_eq!(session["state"], "verified");
}

/// 6.1, sign checks sent together: the ticket writer reads their sessions once and decides
/// them in arrival order against what the checks before them left, so a batch answers as
/// one-by-one would. Of one ticket's requests exactly one kind consumes it: either the four
/// identical requests pass (one first use, three retries with the same key) and the other
/// request is a replay, or the other passes and the four are replays, depending on which
/// arrived first. A session never minted is unknown and disturbs no one else in the batch.
async fn sign_checks_sent_together_consume_each_ticket_once_6_1(backend: Backend) {
    let config = format!("{PATIENT_FLEET}{SINGLE_USE}");
    let app = TestApp::spawn_with(backend, &config).await;
    app.idle_phones(&["p-1", "p-2"]).await;
    let shared = app.mint_ok(&mint_request("u-1")).await;
    let alone = app.mint_ok(&mint_request("u-2")).await;
    let identical = correct(&shared);
    let unknown = hex::encode(rand::random::<[u8; 16]>());
    let mut bodies = vec![identical.clone(); 4];
    bodies.extend([
        correct(&shared),
        with(correct(&alone), json!({"session_id": unknown})),
        correct(&alone),
    ]);

    let sent = bodies.iter().map(|body| async {
        let res = app.sign_check(body).await;
        (res.status().as_u16(), res.json::<Value>().await.unwrap())
    });
    let answers = futures_util::future::join_all(sent).await;

    let passed = |answer: &(u16, Value)| answer.0 == 200;
    let identical_passed = answers[..4].iter().filter(|a| passed(a)).count();
    let other_passed = passed(&answers[4]);
    assert!(
        (identical_passed, other_passed) == (4, false)
            || (identical_passed, other_passed) == (0, true),
        "one kind of request consumes the ticket: {answers:?}"
    );
    for answer in answers[..5].iter().filter(|a| !passed(a)) {
        assert_eq!(answer.0, 403, "{answers:?}");
        assert_eq!(answer.1["error_code"], "CPHUB.TICKET_REPLAYED");
    }
    for answer in answers[..5].iter().filter(|a| passed(a)) {
        assert_eq!(answer.1["aes_key"], shared["aes_key"]);
    }
    assert_eq!(answers[5].0, 403);
    assert_eq!(answers[5].1["error_code"], "CPHUB.UNKNOWN_SESSION");
    assert_eq!(answers[6].0, 200, "{answers:?}");
    assert_eq!(answers[6].1["aes_key"], alone["aes_key"]);
    for minted in [&shared, &alone] {
        let session = app.session(text(minted, "session_id")).await.unwrap();
        assert_eq!(session["state"], "verified");
    }
}

async fn concurrent_mints_never_share_a_phone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let phones = idle_fleet(&app, 8).await;

    let mints = (0..8).map(|i| {
        let app = &app;
        async move { app.mint_ok(&mint_request(&format!("u-{i}"))).await }
    });
    let minted = futures_util::future::join_all(mints).await;

    let allocated: HashSet<&str> = minted.iter().map(|m| text(m, "phone_id")).collect();
    let expected: HashSet<&str> = phones.iter().map(String::as_str).collect();
    assert_eq!(allocated, expected, "each phone exactly once");
    let res = app.mint(&mint_request("u-9")).await;
    let retry_after = res.headers().get("retry-after").cloned();
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    assert!(
        retry_after.is_some_and(|v| !v.is_empty()),
        "503 without Retry-After"
    );
}

async fn a_pinned_phone_is_allocated_only_while_free(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1", "p-2"]).await;

    let pinned = app.mint_ok(&pinned_mint_request("u-1", "p-2")).await;

    assert_eq!(pinned["phone_id"], "p-2");
    let res = app.mint(&pinned_mint_request("u-2", "p-2")).await;
    assert_error(res, 409, "CPHUB.PHONE_BUSY").await;
    let res = app.mint(&pinned_mint_request("u-2", "p-9")).await;
    assert_error(res, 404, "CPHUB.NOT_FOUND").await;
    let unpinned = app.mint_ok(&mint_request("u-2")).await;
    assert_eq!(unpinned["phone_id"], "p-1");
}

async fn an_unverified_allocation_lapses_after_auth_ts(backend: Backend) {
    let clock = manual_clock();
    let app = TestApp::spawn_with_clock(backend, PATIENT_FLEET, Arc::clone(&clock)).await;
    app.idle_phones(&["p-1"]).await;
    let first = app.mint_ok(&mint_request("u-1")).await;
    assert_error(
        app.mint(&mint_request("u-2")).await,
        503,
        "CPHUB.NO_FREE_PHONE",
    )
    .await;

    clock.advance(Duration::from_secs(120 + 5 + 1));
    let second = app.mint_ok(&mint_request("u-2")).await;

    assert_eq!(second["phone_id"], "p-1");
    let old = app.session(text(&first, "session_id")).await.unwrap();
    assert_eq!(old["state"], "expired", "{old}");
    let phone = app.phone("p-1").await.unwrap();
    assert_eq!(phone["allocated_session_id"], second["session_id"]);
    let res = app.sign_check(&correct(&first)).await;
    assert_error(res, 403, "CPHUB.TICKET_EXPIRED").await;
}

async fn a_verified_allocation_lapses_without_enter(backend: Backend) {
    let clock = manual_clock();
    let config = format!("{PATIENT_FLEET}[access]\nenter_timeout_secs = 30\n");
    let app = TestApp::spawn_with_clock(backend, &config, Arc::clone(&clock)).await;
    app.idle_phones(&["p-1"]).await;
    let first = app.mint_ok(&mint_request("u-1")).await;
    assert_admitted(app.sign_check(&correct(&first)).await, &first).await;

    clock.advance(Duration::from_secs(29));
    let res = app.mint(&mint_request("u-2")).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    clock.advance(Duration::from_secs(2));
    let second = app.mint_ok(&mint_request("u-2")).await;

    assert_eq!(second["phone_id"], "p-1");
    let old = app.session(text(&first, "session_id")).await.unwrap();
    assert_eq!(old["state"], "expired", "{old}");
}

async fn a_phone_in_play_stays_taken_until_quit(backend: Backend) {
    let clock = manual_clock();
    let config = format!("{PATIENT_FLEET}[access]\nenter_timeout_secs = 30\n");
    let app = TestApp::spawn_with_clock(backend, &config, Arc::clone(&clock)).await;
    app.idle_phones(&["p-1"]).await;
    let first = app.mint_ok(&mint_request("u-1")).await;
    let id = text(&first, "session_id");
    assert_admitted(app.sign_check(&correct(&first)).await, &first).await;
    app.send_event(&enter(id, "p-1", T0)).await;

    clock.advance(Duration::from_secs(31));
    let res = app.mint(&mint_request("u-2")).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    assert_eq!(app.session(id).await.unwrap()["state"], "playing");
    app.send_event(&quit(id, "p-1", "2026-11-28T10:00:31Z", 31))
        .await;
    let second = app.mint_ok(&mint_request("u-2")).await;

    assert_eq!(second["phone_id"], "p-1");
    assert_eq!(app.session(id).await.unwrap()["state"], "ended");
}

/// Chapter 6.4: once the game has exited, the phone's heartbeat names no session. So the
/// quit frees the phone at once, though its last heartbeat named the session; and a
/// heartbeat sent before the quit but written after it does not take the phone again. Before,
/// a mint pinned to the phone was refused `CPHUB.PHONE_BUSY` until a heartbeat without a
/// session was flushed.
async fn a_phone_is_free_once_its_game_quits_though_its_last_heartbeat_named_it_6_4(
    backend: Backend,
) {
    let app = TestApp::spawn_with(backend, PATIENT_FLEET).await;
    app.idle_phones(&["p-1"]).await;
    let first = app.mint_ok(&pinned_mint_request("u-1", "p-1")).await;
    let id = text(&first, "session_id");
    assert_admitted(app.sign_check(&correct(&first)).await, &first).await;
    app.send_event(&enter(id, "p-1", T0)).await;
    app.send_heartbeat(&heartbeat("p-1", Some(id), "2026-11-28T10:00:05Z"))
        .await;
    let phone = app
        .wait_for_phone("p-1", |p| p["heartbeat_session_id"] == id)
        .await;
    assert_eq!(phone["state"], "occupied", "{phone}");

    app.send_event(&quit(id, "p-1", "2026-11-28T10:00:07Z", 7))
        .await;
    let phone = app.phone("p-1").await.expect("the phone is known");
    assert_eq!(phone["heartbeat_session_id"], Value::Null, "{phone}");
    assert_eq!(phone["state"], "idle", "{phone}");

    // Sent at 10:00:06, before the quit; it reaches cphub after. It names the session the
    // buffer last wrote for p-1 (it knows nothing of the quit), so it is held back as no
    // news and written once no newer heartbeat follows: the row must stay free all along.
    app.send_heartbeat(&heartbeat("p-1", Some(id), "2026-11-28T10:00:06Z"))
        .await;
    let phone = app
        .wait_for_phone("p-1", |p| p["last_heartbeat_at"] == "2026-11-28T10:00:06Z")
        .await;
    assert_eq!(phone["heartbeat_session_id"], Value::Null, "{phone}");
    let second = app.mint_ok(&pinned_mint_request("u-2", "p-1")).await;
    assert_eq!(second["phone_id"], "p-1");

    // A heartbeat naming another session still takes the phone.
    app.send_heartbeat(&heartbeat("p-1", Some("s-other"), "2026-11-28T10:00:11Z"))
        .await;
    let phone = app
        .wait_for_phone("p-1", |p| p["heartbeat_session_id"] == "s-other")
        .await;
    assert_eq!(phone["state"], "occupied", "{phone}");
}

async fn a_stale_phone_is_not_allocated(backend: Backend) {
    let clock = manual_clock();
    let app = TestApp::spawn_with_clock(backend, "", Arc::clone(&clock)).await;
    app.idle_phones(&["p-1"]).await;

    // Heartbeats every 5 s, stale after 3 missed: 15 s.
    clock.advance(Duration::from_secs(16));

    let res = app.mint(&mint_request("u-1")).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    let res = app.mint(&pinned_mint_request("u-1", "p-1")).await;
    assert_error(res, 409, "CPHUB.PHONE_BUSY").await;
    beat(&app, "p-1", "2026-11-28T10:00:16Z").await;
    let minted = app.mint_ok(&mint_request("u-1")).await;
    assert_eq!(minted["phone_id"], "p-1");
}

async fn bad_mint_requests_are_refused_and_allocate_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-1"]).await;
    let cases = [
        ("missing user_id", json!({"app_id": GAME})),
        ("missing app_id", json!({"user_id": "u-1"})),
        ("empty user_id", json!({"app_id": GAME, "user_id": ""})),
        ("user_id a number", json!({"app_id": GAME, "user_id": 7})),
        (
            "app_id too long",
            json!({"app_id": "a".repeat(129), "user_id": "u-1"}),
        ),
        ("phone_id with a space", pinned_mint_request("u-1", "p 1")),
    ];

    for (what, body) in cases {
        let res = app.mint(&body).await;
        let status = res.status().as_u16();
        let answer: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (status, answer["error_code"].as_str()),
            (400, Some("CPHUB.INVALID_FIELD")),
            "case {what:?}: {answer}"
        );
    }
    let url = format!("{}/api/v1/sessions", app.address);
    let anonymous = app.client.post(&url).json(&mint_request("u-1"));
    assert_error(anonymous.send().await.unwrap(), 401, "CPHUB.UNAUTHORIZED").await;
    let wrong = app
        .client
        .post(&url)
        .bearer_auth(&TOKEN[1..])
        .json(&mint_request("u-1"));
    assert_error(wrong.send().await.unwrap(), 401, "CPHUB.UNAUTHORIZED").await;

    assert_eq!(
        app.phone("p-1").await.unwrap()["allocated_session_id"],
        Value::Null
    );
    assert_eq!(app.mint_ok(&mint_request("u-1")).await["phone_id"], "p-1");
}

backend_tests!(
    a_minted_session_is_verified_played_and_ended,
    the_default_encodings_are_hex_key_hex_iv_base64_data,
    base64_key_and_iv_with_hex_data_can_be_configured,
    the_configured_iv_encoding_is_the_one_read,
    each_rule_refuses_with_its_code_and_keeps_the_ticket,
    a_ticket_past_auth_ts_and_the_skew_is_refused,
    strict_mode_requires_encrypted_data,
    lenient_forms_of_the_request_are_accepted,
    the_misspelled_encypted_data_is_checked_too,
    without_reconnects_a_used_ticket_only_answers_a_prompt_identical_retry,
    sign_checks_sent_together_consume_each_ticket_once_6_1,
    concurrent_mints_never_share_a_phone,
    a_pinned_phone_is_allocated_only_while_free,
    an_unverified_allocation_lapses_after_auth_ts,
    a_verified_allocation_lapses_without_enter,
    a_phone_in_play_stays_taken_until_quit,
    a_phone_is_free_once_its_game_quits_though_its_last_heartbeat_named_it_6_4,
    a_stale_phone_is_not_allocated,
    bad_mint_requests_are_refused_and_allocate_nothing,
);
