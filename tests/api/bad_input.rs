//! Bad input gets a 4xx with an error body and changes nothing. Every case uses session
//! `bad-s` and phone `bad-p`, which must still be unknown afterwards.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error, heartbeat};

struct Case {
    what: &'static str,
    route: &'static str,
    body: String,
    status: u16,
    code: &'static str,
}

fn event_with(changes: Value) -> String {
    let mut body = json!({
        "event_type": "app",
        "event": {"phone_id": "bad-p", "status": 1, "session_id": "bad-s",
                  "time": "2026-11-28T10:00:00Z", "run_time": 5, "app_id": "game"}
    });
    merge(&mut body, changes);
    body.to_string()
}

fn heartbeat_with(changes: Value) -> String {
    let mut body = heartbeat("bad-p", Some("bad-s"), "2026-11-28T10:00:00Z");
    merge(&mut body, changes);
    body.to_string()
}

/// Overlays `changes` on `target`; a `null` in `changes` removes the key.
fn merge(target: &mut Value, changes: Value) {
    let (Value::Object(target), Value::Object(changes)) = (target, changes) else {
        unreachable!()
    };
    for (key, value) in changes {
        match (target.get_mut(&key), value) {
            (_, Value::Null) => {
                target.remove(&key);
            }
            (Some(inner @ Value::Object(_)), value @ Value::Object(_)) => merge(inner, value),
            (_, value) => {
                target.insert(key, value);
            }
        }
    }
}

fn cases() -> Vec<Case> {
    const E: &str = "/cph/events";
    const H: &str = "/cph/heartbeat";
    let case = |what, route, body: String, status, code| Case {
        what,
        route,
        body,
        status,
        code,
    };
    let nested = |depth| {
        format!(
            r#"{{"deep": {}{}, "event_type": "app"}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    vec![
        case("empty body", E, String::new(), 400, "CPHUB.MALFORMED_JSON"),
        case(
            "not JSON",
            E,
            "event_type=app".into(),
            400,
            "CPHUB.MALFORMED_JSON",
        ),
        case(
            "truncated JSON",
            E,
            r#"{"event_type": "app", "event": {"#.into(),
            400,
            "CPHUB.MALFORMED_JSON",
        ),
        // Unknown fields are skipped without recursion; the envelope still lacks `event`.
        case("deep nesting", E, nested(5000), 400, "CPHUB.INVALID_FIELD"),
        case(
            "deep nesting in event",
            E,
            format!(
                r#"{{"event_type": "app", "event": {}{}}}"#,
                "[".repeat(5000),
                "]".repeat(5000)
            ),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "deep nesting (heartbeat)",
            H,
            nested(1500),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "unbalanced nesting",
            E,
            "[".repeat(10_000),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "unbalanced object nesting",
            E,
            r#"{"a":"#.repeat(2_000),
            400,
            "CPHUB.MALFORMED_JSON",
        ),
        case("an array", E, "[]".into(), 400, "CPHUB.INVALID_FIELD"),
        case(
            "event is null",
            E,
            r#"{"event_type": "app", "event": null}"#.into(),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "missing time",
            E,
            event_with(json!({"event": {"time": null}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "missing session_id",
            E,
            event_with(json!({"event": {"session_id": null}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "missing event_type",
            E,
            event_with(json!({"event_type": null})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "status as string",
            E,
            event_with(json!({"event": {"status": "1"}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "status as float",
            E,
            event_with(json!({"event": {"status": 0.5}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "status too big",
            E,
            event_with(json!({"event": {"status": 1e30}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "unknown status",
            E,
            event_with(json!({"event": {"status": 2}})),
            400,
            "CPHUB.UNKNOWN_STATUS",
        ),
        case(
            "negative status",
            E,
            event_with(json!({"event": {"status": -1}})),
            400,
            "CPHUB.UNKNOWN_STATUS",
        ),
        case(
            "unknown event_type",
            E,
            event_with(json!({"event_type": "heartbeat"})),
            400,
            "CPHUB.UNKNOWN_EVENT_TYPE",
        ),
        case(
            "time as date",
            E,
            event_with(json!({"event": {"time": "2026-11-28"}})),
            400,
            "CPHUB.INVALID_TIME",
        ),
        case(
            "time as epoch",
            E,
            event_with(json!({"event": {"time": 1764324000}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "impossible date",
            E,
            event_with(json!({"event": {"time": "2026-02-30T10:00:00Z"}})),
            400,
            "CPHUB.INVALID_TIME",
        ),
        case(
            "time before 1970",
            E,
            event_with(json!({"event": {"time": "1969-07-20T20:17:00Z"}})),
            400,
            "CPHUB.INVALID_TIME",
        ),
        case(
            "session_id too long",
            E,
            event_with(json!({"event": {"session_id": "s".repeat(65)}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "app_id too long",
            E,
            event_with(json!({"event": {"app_id": "a".repeat(129)}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "phone_id with a space",
            E,
            event_with(json!({"event": {"phone_id": "bad p"}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "empty phone_id",
            E,
            event_with(json!({"event": {"phone_id": ""}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "quit without run_time",
            E,
            event_with(json!({"event": {"run_time": null}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "negative run_time",
            E,
            event_with(json!({"event": {"run_time": -1}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "run_time as string",
            E,
            event_with(json!({"event": {"run_time": "5"}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "body over the limit",
            E,
            event_with(json!({"event": {"padding": "x".repeat(66_000)}})),
            413,
            "CPHUB.PAYLOAD_TOO_LARGE",
        ),
        case(
            "heartbeat: unknown event_type",
            H,
            heartbeat_with(json!({"event_type": "enter"})),
            400,
            "CPHUB.UNKNOWN_EVENT_TYPE",
        ),
        case(
            "heartbeat: bad time",
            H,
            heartbeat_with(json!({"event": {"time": "now"}})),
            400,
            "CPHUB.INVALID_TIME",
        ),
        case(
            "heartbeat: missing phone_id",
            H,
            heartbeat_with(json!({"event": {"phone_id": null}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "heartbeat: session_id a number",
            H,
            heartbeat_with(json!({"event": {"session_id": 7}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "heartbeat: session_id too long",
            H,
            heartbeat_with(json!({"event": {"session_id": "s".repeat(65)}})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        case(
            "heartbeat: body over the limit",
            H,
            heartbeat_with(json!({"event": {"padding": "x".repeat(5000)}})),
            413,
            "CPHUB.PAYLOAD_TOO_LARGE",
        ),
    ]
}

async fn bad_input_is_refused_with_a_code_and_stores_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for case in cases() {
        let res = app.post(case.route, case.body.clone()).await;
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
            "case {:?}",
            case.what
        );
    }

    // A valid heartbeat after all of them: once it is flushed, any buffered bad one would be too.
    app.send_heartbeat(&heartbeat("sentinel", None, "2026-11-28T10:00:00Z"))
        .await;
    app.wait_for_phone("sentinel", |_| true).await;
    assert_eq!(
        app.session("bad-s").await,
        None,
        "no session may be recorded"
    );
    assert_eq!(app.phone("bad-p").await, None, "no phone may be recorded");
}

async fn the_error_message_names_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    // A misspelt mint field is refused, naming it: ignored, `phoneId` minted on any phone.
    let misspelt = json!({"app_id": "a1", "user_id": "u-1", "phoneId": "p-7"});
    let res = app.mint(&misspelt).await;
    let body = assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    assert!(
        body["error_msg"].as_str().unwrap().contains("phoneId"),
        "{body}"
    );

    let res = app
        .post(
            "/cph/events",
            event_with(json!({"event": {"session_id": "a b"}})),
        )
        .await;
    let body = assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("event.session_id"),
        "{body}"
    );

    let res = app
        .post("/cph/events", event_with(json!({"event": {"time": null}})))
        .await;
    let body = assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    assert!(
        body["error_msg"].as_str().unwrap().contains("time"),
        "{body}"
    );
}

async fn content_type_is_not_required(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let res = app
        .client
        .post(format!("{}/cph/events", app.address))
        .header("content-type", "text/plain")
        .body(crate::helpers::enter("s-1", "p-1", "2026-11-28T10:00:00Z").to_string())
        .send()
        .await
        .unwrap();

    crate::helpers::assert_acknowledged(res).await;
}

/// The sign check and the operator API have limits of their own
/// (`callbacks.sign_check_body_limit`, `api.body_limit`): over them 413, deep nesting and
/// overlong strings 400 — never a 5xx — and nothing is minted.
async fn sign_check_and_operator_bodies_are_bounded_too(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let nested = |field: &str, depth| {
        let (open, close) = ("[".repeat(depth), "]".repeat(depth));
        format!(r#"{{"{field}": {open}{close}, "app_id": "g", "user_id": "u"}}"#)
    };
    let sign_check = |changes: Value| {
        let mut body = json!({"session_id": "s-1", "ticket": "t", "auth_ts": "1"});
        merge(&mut body, changes);
        body.to_string()
    };
    let mint = |changes: Value| {
        let mut body = json!({"app_id": "g", "user_id": "u"});
        merge(&mut body, changes);
        body.to_string()
    };
    let cases = [
        (
            "sign check over 12288 bytes",
            "/cph/sign-check",
            sign_check(json!({"padding": "x".repeat(13_000)})),
            413,
            "CPHUB.PAYLOAD_TOO_LARGE",
        ),
        // The longest `encrypted_data` taken (8192 characters) fits the default limit:
        // read, not refused as too large (under 4096 bytes, every SDK blob over about
        // 3.9 KB was a 413, even under `observe`).
        (
            "sign check with 8192 characters of encrypted_data",
            "/cph/sign-check",
            sign_check(json!({"encrypted_data": "A".repeat(8192), "aes_iv": "0".repeat(24)})),
            403,
            "CPHUB.UNKNOWN_SESSION",
        ),
        (
            "sign check nested 2000 deep",
            "/cph/sign-check",
            nested("session_id", 2000),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        (
            "sign check session_id of 65",
            "/cph/sign-check",
            sign_check(json!({"session_id": "s".repeat(65)})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        (
            "mint over 65536 bytes",
            "/api/v1/sessions",
            mint(json!({"padding": "x".repeat(70_000)})),
            413,
            "CPHUB.PAYLOAD_TOO_LARGE",
        ),
        (
            "mint nested 30000 deep",
            "/api/v1/sessions",
            nested("user_id", 30_000),
            400,
            "CPHUB.INVALID_FIELD",
        ),
        (
            "mint user_id of 60000",
            "/api/v1/sessions",
            mint(json!({"user_id": "u".repeat(60_000)})),
            400,
            "CPHUB.INVALID_FIELD",
        ),
    ];

    for (what, route, body, status, code) in cases {
        let res = app
            .client
            .post(format!("{}{route}", app.address))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        let actual = res.status().as_u16();
        let answer: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            (actual, answer["error_code"].as_str()),
            (status, Some(code)),
            "case {what:?}: {answer}"
        );
    }
    let listed = app.get("/api/v1/sessions", Some(TOKEN)).await;
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(listed["sessions"], json!([]), "nothing minted");
}

/// Found by schemathesis: a NUL character, which PostgreSQL cannot store in text, reached
/// the database (500, and for events the whole group-commit batch with it). An error
/// message keeps its event, NUL replaced; a position parameter is parsed as an id.
async fn a_nul_character_never_reaches_the_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut events = Vec::new();
    for n in 0..8 {
        let mut enter = crate::helpers::enter(
            &format!("nul-s{n}"),
            &format!("nul-p{n}"),
            "2026-11-28T10:00:00Z",
        );
        if n == 0 {
            enter["event"]["error_msg"] = json!("engine\u{0}failed");
        }
        events.push(enter);
    }
    let answers = futures_util::future::join_all(events.iter().map(|e| app.post_event(e))).await;
    for answer in answers {
        assert_eq!(answer.status(), 200);
    }
    let session = app.session("nul-s0").await.unwrap();
    assert_eq!(session["error_msg"], "engine\u{FFFD}failed");
    assert!(app.session("nul-s7").await.is_some());

    let res = app.get("/api/v1/phones?after=%00", Some(TOKEN)).await;
    assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
}

backend_tests!(
    a_nul_character_never_reaches_the_database,
    bad_input_is_refused_with_a_code_and_stores_nothing,
    the_error_message_names_the_field,
    content_type_is_not_required,
    sign_check_and_operator_bodies_are_bounded_too,
);
