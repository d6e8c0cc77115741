//! The wait queue (docs/api.md "The wait queue"): players join when the fleet is full and
//! are served first come, first served per app (priority first) as phones become free —
//! here, as sessions end with a quit event (chapter 6.3) — on one replica or two sharing a
//! PostgreSQL database. Nobody is served twice or skipped, and no phone is in two sessions.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use serde_json::{Value, json};
use sha2::Digest;

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error, enter, quit};

const GAME: &str = "com.example.game";
/// Phones never go stale, so long tests and moved clocks only see the queue's rules.
pub(crate) const PATIENT_FLEET: &str = "[fleet]\nmiss_threshold = 100000\n";

fn queue_entry(user: &str, priority: Option<i64>) -> Value {
    match priority {
        Some(p) => json!({"app_id": GAME, "user_id": user, "priority": p}),
        None => json!({"app_id": GAME, "user_id": user}),
    }
}

pub(crate) async fn post_queue(app: &TestApp, body: &Value) -> reqwest::Response {
    let url = format!("{}/api/v1/queue", app.address);
    let req = app.client.post(url).bearer_auth(TOKEN).json(body);
    req.send().await.expect("request sent")
}

/// Joins and asserts 201; returns the place.
async fn join(app: &TestApp, user: &str, priority: Option<i64>) -> Value {
    let res = post_queue(app, &queue_entry(user, priority)).await;
    let status = res.status();
    let place: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{place}");
    place
}

pub(crate) fn queue_id(place: &Value) -> &str {
    place["queue_id"].as_str().expect("queue_id")
}

async fn poll(app: &TestApp, id: &str, wait_secs: u64) -> reqwest::Response {
    let path = format!("/api/v1/queue/{id}?wait_secs={wait_secs}");
    app.get(&path, Some(TOKEN)).await
}

/// Polls without waiting and asserts the entry still waits; returns the place.
pub(crate) async fn waiting(app: &TestApp, id: &str) -> Value {
    let res = poll(app, id, 0).await;
    let status = res.status();
    let place: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{place}");
    assert_eq!(place["status"], "waiting", "{place}");
    place
}

/// Long-polls and asserts the session (201, the body of `POST /api/v1/sessions`).
pub(crate) async fn seated(app: &TestApp, id: &str) -> Value {
    let res = poll(app, id, 20).await;
    let status = res.status();
    let cache = res.headers().get("cache-control").cloned();
    let session: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "entry {id} was not served: {session}");
    assert_eq!(cache.as_ref().map(|v| v.as_bytes()), Some(&b"no-store"[..]));
    assert_eq!(session["state"], "minted", "{session}");
    for field in ["session_id", "ticket", "aes_key", "auth_ts", "phone_id"] {
        assert!(session[field].is_string(), "{field}: {session}");
    }
    session
}

async fn leave(app: &TestApp, id: &str) -> reqwest::Response {
    let url = format!("{}/api/v1/queue/{id}", app.address);
    let req = app.client.delete(url).bearer_auth(TOKEN);
    req.send().await.expect("request sent")
}

fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name}: {value}"))
}

/// The player's game starts on the phone (chapter 6.2 enter).
pub(crate) async fn play(app: &TestApp, session: &Value) {
    let (id, phone) = (field(session, "session_id"), field(session, "phone_id"));
    app.send_event(&enter(id, phone, "2026-11-28T10:00:00Z"))
        .await;
}

/// The game ends (chapter 6.3 quit): the phone becomes free.
pub(crate) async fn end(app: &TestApp, session: &Value) {
    let (id, phone) = (field(session, "session_id"), field(session, "phone_id"));
    app.send_event(&quit(id, phone, "2026-11-28T10:05:00Z", 300))
        .await;
}

/// `n` idle phones, each in a game: the fleet is full. Returns the sessions.
async fn full_fleet(app: &TestApp, n: usize) -> Vec<Value> {
    let phones: Vec<String> = (1..=n).map(|i| format!("p-{i}")).collect();
    app.idle_phones(&phones.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let mut sessions = Vec::new();
    for i in 0..n {
        let session = app
            .mint_ok(&json!({"app_id": GAME, "user_id": format!("early-{i}")}))
            .await;
        play(app, &session).await;
        sessions.push(session);
    }
    let res = app.mint(&json!({"app_id": GAME, "user_id": "late"})).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    sessions
}

/// The value of one series in `GET /metrics` (None when absent).
async fn metric(app: &TestApp, series: &str) -> Option<f64> {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every entry still in line waits, in joining order, at positions 1, 2, …
async fn assert_in_line(replicas: &[&TestApp], ids: &[String]) {
    for (i, id) in ids.iter().enumerate() {
        let app = replicas[i % replicas.len()];
        let place = waiting(app, id).await;
        assert_eq!(place["position"], i as i64 + 1, "{place}");
    }
}

/// Records a served session; panics if its session or the phone's current session repeats.
fn record(served: &mut HashSet<String>, session: &Value) {
    let id = field(session, "session_id").to_owned();
    assert!(served.insert(id.clone()), "session {id} served twice");
}

/// 20 players over 5 phones: each quit hands the phone to the next in line, and only to
/// them; the others move up one place.
async fn a_queue_is_served_in_order_as_sessions_end(backend: Backend) {
    let app = TestApp::spawn_with(backend, PATIENT_FLEET).await;
    let mut playing = full_fleet(&app, 5).await;
    assert_eq!(
        metric(&app, "cphub_queue_wait_seconds_count").await,
        Some(0.0)
    );
    let mut line = Vec::new();
    for i in 0..20 {
        let place = join(&app, &format!("q-{i:02}"), None).await;
        assert_eq!(place["status"], "waiting", "{place}");
        assert_eq!(place["position"], i + 1, "{place}");
        line.push(queue_id(&place).to_owned());
    }
    assert_eq!(
        metric(&app, &format!("cphub_queue_length{{app_id=\"{GAME}\"}}")).await,
        Some(20.0)
    );
    let mut served = HashSet::new();
    while !line.is_empty() {
        let freed = playing.remove(0);
        end(&app, &freed).await;
        let head = line.remove(0);
        let session = seated(&app, &head).await;
        assert_eq!(session["phone_id"], freed["phone_id"], "the freed phone");
        record(&mut served, &session);
        assert_in_line(&[&app], &line).await;
        play(&app, &session).await;
        playing.push(session);
    }
    assert_eq!(served.len(), 20);
    assert_eq!(
        metric(&app, "cphub_queue_wait_seconds_count").await,
        Some(20.0)
    );
    // Issue #20: an app's series, once seen, stays at 0 rather than vanishing.
    assert_eq!(
        metric(&app, &format!("cphub_queue_length{{app_id=\"{GAME}\"}}")).await,
        Some(0.0),
        "nobody waits"
    );
}

/// Two replicas on one PostgreSQL database, both running their assignment pass: players
/// join and poll through either, five phones are freed at once through both, and exactly
/// the next five in line get them — one phone each — while the rest keep their order.
#[test]
fn two_replicas_serve_one_queue_in_order() {
    crate::helpers::run_scenario_on(4, "two_replicas_serve_one_queue_in_order", async {
        if !crate::helpers::postgres_available() {
            return;
        }
        let a = TestApp::spawn_with(Backend::Postgres, PATIENT_FLEET).await;
        let b = TestApp::spawn_on(a.db.same_database(), PATIENT_FLEET).await;
        let replicas = [&a, &b];
        let mut playing = full_fleet(&a, 5).await;
        let mut line = Vec::new();
        for i in 0..20 {
            let place = join(replicas[i % 2], &format!("q-{i:02}"), None).await;
            assert_eq!(place["position"], i as i64 + 1, "{place}");
            line.push(queue_id(&place).to_owned());
        }
        let mut served = HashSet::new();
        while !line.is_empty() {
            let ends = playing
                .iter()
                .enumerate()
                .map(|(i, s)| end(replicas[i % 2], s));
            futures_util::future::join_all(ends).await;
            let heads: Vec<String> = line.drain(..5).collect();
            let polls = heads
                .iter()
                .enumerate()
                .map(|(i, id)| seated(replicas[i % 2], id));
            let sessions = futures_util::future::join_all(polls).await;
            let phones: HashSet<&str> = sessions.iter().map(|s| field(s, "phone_id")).collect();
            assert_eq!(phones.len(), 5, "one phone each: {sessions:?}");
            for session in &sessions {
                record(&mut served, session);
            }
            assert_in_line(&[&b, &a], &line).await;
            for (i, session) in sessions.iter().enumerate() {
                play(replicas[i % 2], session).await;
            }
            playing = sessions;
        }
        assert_eq!(served.len(), 20);
        assert_one_live_session_per_phone(&a).await;
        b.stop().await;
    })
}

/// No phone carries two sessions that are minted, verified or playing.
async fn assert_one_live_session_per_phone(app: &TestApp) {
    let res = app.get("/api/v1/sessions?limit=1000", Some(TOKEN)).await;
    let page: Value = res.json().await.unwrap();
    let mut phones = HashSet::new();
    for session in page["sessions"].as_array().unwrap() {
        if ["minted", "verified", "playing"].contains(&field(session, "state")) {
            let phone = field(session, "phone_id");
            assert!(phones.insert(phone.to_owned()), "{phone} in two sessions");
        }
    }
    assert_eq!(phones.len(), 5);
}

/// Higher priority first; equal priorities in arrival order.
async fn a_higher_priority_is_served_first(backend: Backend) {
    let app = TestApp::spawn_with(backend, PATIENT_FLEET).await;
    let playing = full_fleet(&app, 1).await;
    let early = join(&app, "early", None).await;
    // 50.0 is the integer 50 in JSON, as JSON Schema reads it.
    let res = post_queue(
        &app,
        &json!({"app_id": GAME, "user_id": "urgent", "priority": 50.0}),
    )
    .await;
    let urgent: Value = res.json().await.unwrap();
    assert_eq!(urgent["position"], 1, "{urgent}");
    assert_eq!(waiting(&app, queue_id(&early)).await["position"], 2);

    end(&app, &playing[0]).await;
    let session = seated(&app, queue_id(&urgent)).await;
    assert_eq!(waiting(&app, queue_id(&early)).await["position"], 1);
    play(&app, &session).await;
    end(&app, &session).await;
    seated(&app, queue_id(&early)).await;
}

/// `DELETE` leaves: the place is gone and those behind move up. Leaving with a phone
/// already assigned (not yet handed out) passes that phone to the next in line.
async fn leaving_frees_the_place(backend: Backend) {
    let app = TestApp::spawn_with(backend, PATIENT_FLEET).await;
    let playing = full_fleet(&app, 1).await;
    let first = join(&app, "first", None).await;
    let second = join(&app, "second", None).await;
    let third = join(&app, "third", None).await;

    assert_eq!(leave(&app, queue_id(&second)).await.status(), 204);
    assert_error(
        poll(&app, queue_id(&second), 0).await,
        404,
        "CPHUB.NOT_FOUND",
    )
    .await;
    assert_error(leave(&app, queue_id(&second)).await, 404, "CPHUB.NOT_FOUND").await;
    assert_eq!(waiting(&app, queue_id(&third)).await["position"], 2);

    end(&app, &playing[0]).await;
    app.wait_for_phone("p-1", |p| p["state"] == "allocated")
        .await;
    assert_eq!(leave(&app, queue_id(&first)).await.status(), 204);
    let session = seated(&app, queue_id(&third)).await;
    assert_eq!(session["phone_id"], "p-1");
}

/// A platform whose join timed out joins again: the player's entry is answered again
/// (`200`), its place and priority kept, not a second place that nobody polls and that
/// would hold a phone for nobody. After leaving, a join is a new entry at the back.
async fn a_retried_join_answers_the_same_entry_and_takes_no_second_place(backend: Backend) {
    let app = TestApp::spawn_with(backend, PATIENT_FLEET).await;
    full_fleet(&app, 1).await;
    let first = join(&app, "first", None).await;
    let second = join(&app, "second", None).await;

    let res = post_queue(&app, &queue_entry("first", Some(50))).await;

    assert_eq!(res.status(), 200);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["queue_id"], first["queue_id"], "{again}");
    assert_eq!(again["position"], 1, "{again}");
    assert_eq!(waiting(&app, queue_id(&second)).await["position"], 2);
    assert_eq!(leave(&app, queue_id(&first)).await.status(), 204);
    let back = join(&app, "first", None).await;
    assert_ne!(back["queue_id"], first["queue_id"]);
    assert_eq!(back["position"], 2, "{back}");
}

/// Two platforms, each with its own token, both call a player `1001`: each platform's join
/// is its own entry. Found by `(app_id, user_id)` alone, the second platform's join was
/// answered the first's entry, and its poll then took the first player's session, ticket
/// and key. Another token's poll or leave is answered as if there were no such entry.
async fn a_player_id_two_platforms_share_is_two_entries_each_its_own_platforms(backend: Backend) {
    let digest = |token: &str| hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let (a, b) = ("platform-a-token-0123456789", "platform-b-token-0123456789");
    let tokens = format!(
        "{PATIENT_FLEET}[[api.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\nscopes = [\"admin\"]\n\
         [[api.tokens]]\nname = \"platform-a\"\nsha256 = \"{}\"\nscopes = [\"sessions:mint\"]\n\
         [[api.tokens]]\nname = \"platform-b\"\nsha256 = \"{}\"\nscopes = [\"sessions:mint\"]\n",
        digest(TOKEN),
        digest(a),
        digest(b),
    );
    let app = TestApp::spawn_with(backend, &tokens).await;
    let playing = full_fleet(&app, 1).await;
    let queue = format!("{}/api/v1/queue", app.address);
    let join_as = |token: &'static str| {
        let req = app.client.post(&queue).bearer_auth(token);
        req.json(&queue_entry("1001", None)).send()
    };

    let first = join_as(a).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let second = join_as(b).await.unwrap();
    assert_eq!(second.status(), 201, "a new entry, not platform A's");
    let second: Value = second.json().await.unwrap();
    assert_ne!(second["queue_id"], first["queue_id"]);
    assert_eq!(second["position"], 2, "{second}");

    let theirs = format!("{queue}/{}", queue_id(&first));
    let peek = app.client.get(&theirs).bearer_auth(b).send().await.unwrap();
    assert_error(peek, 404, "CPHUB.NOT_FOUND").await;
    let taken = app
        .client
        .delete(&theirs)
        .bearer_auth(b)
        .send()
        .await
        .unwrap();
    assert_error(taken, 404, "CPHUB.NOT_FOUND").await;

    end(&app, &playing[0]).await;
    let mine = format!("{theirs}?wait_secs=20");
    let seated = app.client.get(&mine).bearer_auth(a).send().await.unwrap();
    assert_eq!(
        seated.status(),
        201,
        "platform A's player is still first in line"
    );
    let again = join_as(b).await.unwrap();
    assert_eq!(
        again.status(),
        200,
        "platform B's retried join finds its own entry"
    );
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["queue_id"], second["queue_id"]);
    assert_eq!(again["position"], 1, "{again}");
}

/// An entry nobody polls for `access.queue_ttl_secs` leaves the queue and is counted; a
/// polled one stays (each poll moves its expiry on).
async fn an_unpolled_entry_expires_and_is_counted(backend: Backend) {
    let clock = Arc::new(ManualClock::new(
        UtcTime::parse("t0", "2026-11-28T10:00:00Z").unwrap(),
    ));
    let config = format!("{PATIENT_FLEET}[access]\nqueue_ttl_secs = 30\n");
    let app = TestApp::spawn_with_clock(backend, &config, Arc::clone(&clock)).await;
    full_fleet(&app, 1).await;
    assert_eq!(metric(&app, "cphub_queue_expired_total").await, Some(0.0));
    let forgotten = join(&app, "forgotten", None).await;
    let faithful = join(&app, "faithful", None).await;

    clock.advance(Duration::from_secs(20));
    waiting(&app, queue_id(&faithful)).await;
    clock.advance(Duration::from_secs(20));
    for _ in 0..400 {
        if metric(&app, "cphub_queue_expired_total").await == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(metric(&app, "cphub_queue_expired_total").await, Some(1.0));
    assert_error(
        poll(&app, queue_id(&forgotten), 0).await,
        404,
        "CPHUB.NOT_FOUND",
    )
    .await;
    assert_eq!(waiting(&app, queue_id(&faithful)).await["position"], 1);
}

/// A phone that becomes free goes to the queue before a new `POST /api/v1/sessions` for
/// the app: that mint is refused even if it arrives before the background pass runs.
async fn a_free_phone_goes_to_the_queue_before_a_new_mint(backend: Backend) {
    // The background pass is slowed right down: only the mint can serve the queue here.
    let config = format!("{PATIENT_FLEET}[access]\nqueue_assign_interval_ms = 3600000\n");
    let app = TestApp::spawn_with(backend, &config).await;
    let playing = full_fleet(&app, 1).await;
    let waiting_player = join(&app, "waiting", None).await;

    end(&app, &playing[0]).await;
    let res = app
        .mint(&json!({"app_id": GAME, "user_id": "newcomer"}))
        .await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    let session = seated(&app, queue_id(&waiting_player)).await;
    assert_eq!(session["phone_id"], "p-1");
}

/// A long-poll started while the entry waits answers the session once a phone is freed.
async fn a_long_poll_returns_the_session_once_assigned(backend: Backend) {
    let app = Arc::new(TestApp::spawn_with(backend, PATIENT_FLEET).await);
    let playing = full_fleet(&app, 1).await;
    let place = join(&app, "patient", None).await;
    let id = queue_id(&place).to_owned();
    let polling = tokio::spawn({
        let app = Arc::clone(&app);
        async move { poll(&app, &id, 30).await }
    });
    end(&app, &playing[0]).await;
    let res = polling.await.unwrap();
    let status = res.status();
    let session: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{session}");
    assert_eq!(session["phone_id"], "p-1");
}

/// A phone free right away is assigned at join; the first poll gets the session. A second
/// poll issues a new ticket for the same session with the same expiry (the book keeps only
/// ticket hashes, so the first cannot be shown again) and the first stops working; once
/// the ticket was used (6.1 sign check), the entry is closed.
async fn a_repeated_poll_reissues_the_ticket_until_it_is_used(backend: Backend) {
    let app = TestApp::spawn_with(backend, PATIENT_FLEET).await;
    app.idle_phones(&["p-1"]).await;
    let place = join(&app, "lucky", None).await;
    assert_eq!(place["status"], "assigned", "{place}");
    assert_eq!(place["position"], 0, "{place}");
    let first = seated(&app, queue_id(&place)).await;
    let again = seated(&app, queue_id(&place)).await;
    assert_eq!(again["session_id"], first["session_id"]);
    assert_eq!(again["phone_id"], first["phone_id"]);
    assert_ne!(again["ticket"], first["ticket"]);
    // Polling again cannot stretch the hold: the ticket's expiry stays the first one's.
    assert_eq!(again["auth_ts"], first["auth_ts"]);
    assert_eq!(again["expires_at"], first["expires_at"]);

    let check = |s: &Value| json!({"session_id": s["session_id"], "ticket": s["ticket"], "auth_ts": s["auth_ts"]});
    assert_error(
        app.sign_check(&check(&first)).await,
        403,
        "CPHUB.BAD_TICKET",
    )
    .await;
    let res = app.sign_check(&check(&again)).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = poll(&app, queue_id(&place), 0).await;
    assert_error(res, 409, "CPHUB.QUEUE_ENTRY_CLOSED").await;
}

/// Bad input gets a 4xx with a stable code, and changes nothing.
async fn bad_queue_input_is_refused_with_a_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let bodies = [
        (
            json!({"app_id": GAME, "user_id": "u", "priority": 101}),
            "priority over 100",
        ),
        (
            json!({"app_id": GAME, "user_id": "u", "priority": -1}),
            "negative priority",
        ),
        (
            json!({"app_id": GAME, "user_id": "u", "priority": 1.5}),
            "fractional priority",
        ),
        (
            json!({"app_id": "no spaces", "user_id": "u"}),
            "app id with a space",
        ),
        (json!({"app_id": "", "user_id": "u"}), "empty app id"),
        (json!({"app_id": GAME}), "no user"),
        (
            json!({"app_id": GAME, "user_id": "u", "prority": 90}),
            "a misspelt field, which would join at priority 0",
        ),
    ];
    for (body, case) in bodies {
        let res = post_queue(&app, &body).await;
        assert_eq!(res.status(), 400, "{case}");
        let error: Value = res.json().await.unwrap();
        assert_eq!(
            error["error_code"], "CPHUB.INVALID_FIELD",
            "{case}: {error}"
        );
    }
    let padded = json!({"app_id": GAME, "user_id": "u", "padding": "x".repeat(1024)});
    assert_error(
        post_queue(&app, &padded).await,
        413,
        "CPHUB.PAYLOAD_TOO_LARGE",
    )
    .await;
    let place = join(&app, "u", None).await;
    let id = queue_id(&place);
    for query in ["wait_secs=31", "wait_secs=-1", "wait_secs=soon"] {
        let res = app
            .get(&format!("/api/v1/queue/{id}?{query}"), Some(TOKEN))
            .await;
        assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    }
    let res = app.get("/api/v1/queue/bad%20id", Some(TOKEN)).await;
    assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    let res = app
        .get(&format!("/api/v1/queue/{}", "0".repeat(32)), Some(TOKEN))
        .await;
    assert_error(res, 404, "CPHUB.NOT_FOUND").await;
    let res = app.get(&format!("/api/v1/queue/{id}"), None).await;
    assert_error(res, 401, "CPHUB.UNAUTHORIZED").await;
    assert_eq!(waiting(&app, id).await["position"], 1);
}

/// `cphub queue list` reads the queue from the database: the assigned entry first, then the
/// waiting ones in serving order, with the positions the API answers.
async fn the_cli_lists_the_queue_in_serving_order(backend: Backend) {
    let app = TestApp::spawn_with(backend, PATIENT_FLEET).await;
    let playing = full_fleet(&app, 1).await;
    let served = join(&app, "served", None).await;
    let later = join(&app, "later", None).await;
    let urgent = join(&app, "urgent", Some(9)).await;
    end(&app, &playing[0]).await;
    app.wait_for_phone("p-1", |p| p["state"] == "allocated")
        .await;

    let out = app.cli(&["queue", "list", "--format", "json"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows: Vec<(&str, i64)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (field(e, "queue_id"), e["position"].as_i64().unwrap()))
        .collect();
    let expected = [
        (queue_id(&urgent), 0),
        (queue_id(&served), 1),
        (queue_id(&later), 2),
    ];
    assert_eq!(rows, expected, "the urgent entry got the phone: {listed}");
    let out = app.cli(&["queue", "list"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains(queue_id(&later)));
}

backend_tests!(
    the_cli_lists_the_queue_in_serving_order,
    a_queue_is_served_in_order_as_sessions_end,
    a_higher_priority_is_served_first,
    leaving_frees_the_place,
    a_retried_join_answers_the_same_entry_and_takes_no_second_place,
    a_player_id_two_platforms_share_is_two_entries_each_its_own_platforms,
    an_unpolled_entry_expires_and_is_counted,
    a_free_phone_goes_to_the_queue_before_a_new_mint,
    a_long_poll_returns_the_session_once_assigned,
    a_repeated_poll_reissues_the_ticket_until_it_is_used,
    bad_queue_input_is_refused_with_a_code,
);
