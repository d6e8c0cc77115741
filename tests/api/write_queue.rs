//! The group-commit writers' queues have a deadline (`database.write_queue_timeout_ms`,
//! issue #17): a callback that waited in its writer's queue longer than the bound is
//! answered `503 CPHUB.UNAVAILABLE` without being written, and the phone's redelivery is
//! applied once — an enter (6.2) accepted once, a ticket (6.1) consumed by the redelivered
//! check as a first use. The bound is small here; the tests wait on conditions, never on
//! how fast anything answers.

use std::time::Duration;

use reqwest::Response;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::backend_tests;
use crate::helpers::{
    Backend, TOKEN, TestApp, WriteLock, assert_acknowledged, assert_error, enter, heartbeat,
};

/// Small, so that a job queued behind a held writer is certainly older than it; the test
/// waits twice as long before letting the writer go.
const BOUND_MS: u64 = 50;

async fn spawn_app(backend: Backend) -> TestApp {
    // Room in the PostgreSQL pool for the scrapes and reads while the writer and the
    // background writes (hold sweeper, queue pass) wait behind the lock. One writer on
    // PostgreSQL too (SQLite has one anyway): each writer has its own queue, and the second
    // request must queue behind the first one's held round, not reach a writer of its own
    // that waits for the lock with it.
    let overrides = format!(
        "[database]\nwrite_queue_timeout_ms = {BOUND_MS}\nmax_connections = 12\nwriters = 1\n"
    );
    TestApp::spawn_with(backend, &overrides).await
}

/// The value of one series in `GET /metrics`.
pub(crate) async fn metric(app: &TestApp, series: &str) -> f64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} is not exported"))
}

/// The operator token goes along: the callbacks ignore it, mints need it.
pub(crate) fn post(app: &TestApp, path: &str, body: Value) -> JoinHandle<Response> {
    let (client, url) = (app.client.clone(), format!("{}{path}", app.address));
    let request = client.post(url).bearer_auth(TOKEN).json(&body);
    tokio::spawn(async move { request.send().await.unwrap() })
}

/// A first request that holds `writer` (its batch waits for the lock), then a second one
/// queued behind it past the bound; the lock is released only after both. Returns their
/// answers, first and second.
async fn queue_past_the_bound(
    app: &TestApp,
    writer: &str,
    path: &str,
    first: Value,
    second: Value,
) -> (Response, Response) {
    let mut lock = WriteLock::take_letting_reads(&app.db).await;
    let first = post(app, path, first);
    assert!(
        lock.queued(&first).await,
        "the first request was answered while the lock was held: {}",
        first.await.unwrap().status()
    );
    let second = post(app, path, second);
    let waiting = format!("cphub_write_queue_jobs{{writer=\"{writer}\"}}");
    while metric(app, &waiting).await < 1.0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Queued now: after twice the bound it has certainly waited longer than the bound by the
    // time the writer, still held by the first request's batch, takes it.
    tokio::time::sleep(Duration::from_millis(2 * BOUND_MS)).await;
    lock.release().await;
    (first.await.unwrap(), second.await.unwrap())
}

async fn assert_unavailable(res: Response) {
    let retry_after = res.headers().get("retry-after").cloned();
    assert_error(res, 503, "CPHUB.UNAVAILABLE").await;
    assert_eq!(retry_after.unwrap(), "1");
}

/// Sends `body` again until it is answered other than 503, as a phone redelivers.
async fn redeliver(app: &TestApp, path: &str, body: &Value) -> Response {
    let url = format!("{}{path}", app.address);
    until_not_503(|| app.client.post(&url).json(body)).await
}

/// Sends what `request` builds until it is answered other than 503 (the writer took it
/// within the bound), as phones and platforms retry a 503.
async fn until_not_503(request: impl Fn() -> reqwest::RequestBuilder) -> Response {
    for _ in 0..100 {
        let res = request().send().await.unwrap();
        if res.status() != 503 {
            return res;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still 503 after 100 attempts");
}

fn dropped(writer: &str) -> String {
    format!("cphub_write_queue_dropped_total{{reason=\"queued_too_long\",writer=\"{writer}\"}}")
}

/// 6.2: an enter that waited in the event writer's queue past the bound is refused
/// unwritten (no session), and its redelivery is accepted once.
async fn an_enter_queued_past_the_bound_is_refused_unwritten_then_applied_once_6_2(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let late = enter("s-late", "p-late", "2026-11-28T10:00:00Z");
    let (first, second) = queue_past_the_bound(
        &app,
        "events",
        "/cph/events",
        enter("s-first", "p-first", "2026-11-28T10:00:00Z"),
        late.clone(),
    )
    .await;
    assert_acknowledged(first).await;
    assert_unavailable(second).await;
    assert_eq!(metric(&app, &dropped("events")).await, 1.0);
    assert!(app.session("s-late").await.is_none(), "nothing recorded");

    assert_acknowledged(redeliver(&app, "/cph/events", &late).await).await;
    assert_acknowledged(redeliver(&app, "/cph/events", &late).await).await;
    let session = app.session("s-late").await.unwrap();
    assert_eq!(session["state"], "playing");
    let outcomes: Vec<&Value> = session["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["outcome"])
        .collect();
    assert_eq!(outcomes, [&json!("accepted")], "accepted once: {session}");
    let accepted = "cphub_events_total{outcome=\"accepted\",type=\"enter\"}";
    assert_eq!(metric(&app, accepted).await, 2.0, "s-first and s-late");
    app.stop().await;
}

/// The sign check of a minted session, as a phone sends it (6.1); `encrypted_data` is
/// empty, which `access.encrypted_data = "observe"` (the default) admits.
pub(crate) fn sign_check(minted: &Value) -> Value {
    json!({
        "session_id": minted["session_id"], "ticket": minted["ticket"],
        "auth_ts": minted["auth_ts"], "encrypted_data": "", "aes_iv": "",
    })
}

/// 6.1: a sign check that waited in the ticket writer's queue past the bound is refused
/// without consuming its ticket (the session stays minted), and the redelivered check is a
/// first use that admits the player with the session key.
async fn a_sign_check_queued_past_the_bound_keeps_its_ticket_for_the_redelivery_6_1(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    idle_phones(&app, &["p-1", "p-2"]).await;
    let first = app.mint_ok(&mint_request("u-1", "p-1")).await;
    let late = app.mint_ok(&mint_request("u-2", "p-2")).await;
    let (first_answer, second) = queue_past_the_bound(
        &app,
        "sign_checks",
        "/cph/sign-check",
        sign_check(&first),
        sign_check(&late),
    )
    .await;
    assert_eq!(first_answer.status(), 200);
    assert_unavailable(second).await;
    assert_eq!(metric(&app, &dropped("sign_checks")).await, 1.0);
    let late_id = late["session_id"].as_str().unwrap();
    assert_eq!(app.session(late_id).await.unwrap()["state"], "minted");

    let res = redeliver(&app, "/cph/sign-check", &sign_check(&late)).await;
    assert_eq!(res.status(), 200);
    let admitted: Value = res.json().await.unwrap();
    assert_eq!(admitted["aes_key"], late["aes_key"]);
    assert_eq!(app.session(late_id).await.unwrap()["state"], "verified");
    // Both tickets were consumed by a first use: the refused check had not used the second.
    let ok = "cphub_sign_checks_total{result=\"ok\"}";
    assert_eq!(metric(&app, ok).await, 2.0);
    app.stop().await;
}

/// On SQLite mints go through a writer too (on PostgreSQL each is a transaction of its own
/// on the pool, and does not queue): a mint queued past the bound is refused without holding
/// its phone, and its `Idempotency-Key` is not spent — sent again, it mints, once.
#[test]
fn a_mint_queued_past_the_bound_holds_no_phone_and_its_retry_mints_once_on_sqlite() {
    crate::helpers::run_scenario(
        "a_mint_queued_past_the_bound_holds_no_phone_and_its_retry_mints_once_on_sqlite",
        async {
            let app = spawn_app(Backend::Sqlite).await;
            idle_phones(&app, &["p-1", "p-2"]).await;
            let (first, second) = queue_past_the_bound(
                &app,
                "mints",
                "/api/v1/sessions",
                mint_request("u-1", "p-1"),
                mint_request("u-2", "p-2"),
            )
            .await;
            assert_eq!(first.status(), 201);
            assert_unavailable(second).await;
            assert_eq!(metric(&app, &dropped("mints")).await, 1.0);
            let phone = app.phone("p-2").await.unwrap();
            assert_eq!(phone["state"], "idle", "not held: {phone}");

            // Sent again as a platform does with a mint it had no answer to.
            let url = format!("{}/api/v1/sessions", app.address);
            let retry = || async {
                let res = until_not_503(|| {
                    let request = app.client.post(&url).bearer_auth(TOKEN);
                    request
                        .header("Idempotency-Key", "u-2-play-1")
                        .json(&mint_request("u-2", "p-2"))
                })
                .await;
                assert_eq!(res.status(), 201);
                res.json::<Value>().await.unwrap()
            };
            let (minted, again) = (retry().await, retry().await);
            assert_eq!(minted["session_id"], again["session_id"], "minted once");
            let phone = app.phone("p-2").await.unwrap();
            assert_eq!(phone["state"], "allocated", "{phone}");
            app.stop().await;
        },
    )
}

async fn idle_phones(app: &TestApp, phones: &[&str]) {
    for phone in phones {
        app.send_heartbeat(&heartbeat(phone, None, "2026-11-28T10:00:00Z"))
            .await;
        app.wait_for_phone(phone, |p| !p["last_seen_at"].is_null())
            .await;
    }
}

fn mint_request(user: &str, phone: &str) -> Value {
    json!({"app_id": "game", "user_id": user, "phone_id": phone})
}

backend_tests!(
    an_enter_queued_past_the_bound_is_refused_unwritten_then_applied_once_6_2,
    a_sign_check_queued_past_the_bound_keeps_its_ticket_for_the_redelivery_6_1,
);
