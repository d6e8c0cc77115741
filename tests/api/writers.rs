//! The writers' topology (issue #17) through the HTTP app: on SQLite one writer commits a
//! round's mints, sign checks (6.1), enters (6.2) and quits (6.3) in one transaction; on
//! PostgreSQL up to `database.writers` writers commit in parallel, each session's callbacks
//! on the writer its unanswered ones are on. Either way every answer is what it would be
//! alone.

use reqwest::Response;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, WriteLock, assert_acknowledged, enter, quit};
use crate::write_queue::{metric, post, sign_check};

backend_tests!(
    a_mixed_burst_is_answered_right_and_the_book_agrees_6_1_6_2_6_3,
    each_sessions_callbacks_are_applied_in_order_across_writers_6_1_6_2_6_3,
);

/// Sessions (and phones) of each kind in the burst.
const EACH: usize = 4;

/// Four writers on PostgreSQL (ignored on SQLite), each taking new sessions only while
/// none waits for it (`writer_room = 1`), so a burst spreads over all four; and room in the
/// pool for mints, each a transaction of its own there, waiting beside them.
async fn spawn_app(backend: Backend) -> TestApp {
    let overrides = "[database]\nwriters = 4\nwriter_room = 1\nmax_connections = 24\n";
    TestApp::spawn_with(backend, overrides).await
}

fn mint_request(phone: &str) -> Value {
    json!({"app_id": "com.example.game", "user_id": format!("u-{phone}"), "phone_id": phone})
}

fn phones(prefix: &str) -> Vec<String> {
    (0..EACH).map(|i| format!("{prefix}-{i}")).collect()
}

fn id(minted: &Value) -> &str {
    minted["session_id"].as_str().unwrap()
}

/// Sessions a step before their callback in the burst: minted on `c-*` (to be checked),
/// verified on `e-*` (to enter), playing on `q-*` (to quit).
struct Before {
    minted: Vec<Value>,
    verified: Vec<Value>,
    playing: Vec<Value>,
}

async fn sessions_a_step_before(app: &TestApp) -> Before {
    let mut before = Before {
        minted: Vec::new(),
        verified: Vec::new(),
        playing: Vec::new(),
    };
    for i in 0..EACH {
        before
            .minted
            .push(app.mint_ok(&mint_request(&format!("c-{i}"))).await);
        let verified = app.mint_ok(&mint_request(&format!("e-{i}"))).await;
        assert_eq!(app.sign_check(&sign_check(&verified)).await.status(), 200);
        before.verified.push(verified);
        let (playing, phone) = (
            app.mint_ok(&mint_request(&format!("q-{i}"))).await,
            format!("q-{i}"),
        );
        assert_eq!(app.sign_check(&sign_check(&playing)).await.status(), 200);
        app.send_event(&enter(id(&playing), &phone, "2026-11-28T10:00:00Z"))
            .await;
        before.playing.push(playing);
    }
    before
}

/// The burst's requests, by kind, each answered in the order sent.
struct Burst {
    mints: Vec<JoinHandle<Response>>,
    checks: Vec<JoinHandle<Response>>,
    events: Vec<JoinHandle<Response>>,
}

/// Sends every request of the burst at once; the first mint goes first, alone, and waits
/// behind another client's write lock, so on SQLite the others queue for the one writer
/// together (each kind at least once) and go into the next round as one.
async fn send_burst(app: &TestApp, backend: Backend, before: &Before) -> Burst {
    let mut lock = WriteLock::take_letting_reads(&app.db).await;
    let first = post(app, "/api/v1/sessions", mint_request("m-0"));
    assert!(
        lock.queued(&first).await,
        "the first mint was answered under the lock"
    );
    let mut burst = Burst {
        mints: vec![first],
        checks: Vec::new(),
        events: Vec::new(),
    };
    for i in 0..EACH {
        if i > 0 {
            let mint = post(app, "/api/v1/sessions", mint_request(&format!("m-{i}")));
            burst.mints.push(mint);
        }
        burst
            .checks
            .push(post(app, "/cph/sign-check", sign_check(&before.minted[i])));
        let verified = id(&before.verified[i]);
        let entered = enter(verified, &format!("e-{i}"), "2026-11-28T10:00:00Z");
        burst.events.push(post(app, "/cph/events", entered));
        let playing = id(&before.playing[i]);
        let ended = quit(playing, &format!("q-{i}"), "2026-11-28T10:01:00Z", 60);
        burst.events.push(post(app, "/cph/events", ended));
    }
    if backend == Backend::Sqlite {
        for writer in ["mints", "sign_checks", "events"] {
            let waiting = format!("cphub_write_queue_jobs{{writer=\"{writer}\"}}");
            while metric(app, &waiting).await < 1.0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    lock.release().await;
    burst
}

/// A burst of every kind of durable write sent at once: every mint takes its pinned phone,
/// every sign check admits its player with the session key (6.1), every enter (6.2) and
/// quit (6.3) is acknowledged, and the book shows each session one step on. On SQLite the
/// kinds shared a transaction; on PostgreSQL mints are transactions of their own.
async fn a_mixed_burst_is_answered_right_and_the_book_agrees_6_1_6_2_6_3(backend: Backend) {
    let app = spawn_app(backend).await;
    let all: Vec<String> = ["m", "c", "e", "q"]
        .iter()
        .flat_map(|p| phones(p))
        .collect();
    app.idle_phones(&all.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let before = sessions_a_step_before(&app).await;

    let burst = send_burst(&app, backend, &before).await;

    for (i, mint) in burst.mints.into_iter().enumerate() {
        let res = mint.await.unwrap();
        assert_eq!(res.status(), 201);
        let minted: Value = res.json().await.unwrap();
        assert_eq!(minted["phone_id"], format!("m-{i}"), "{minted}");
        assert_eq!(app.session(id(&minted)).await.unwrap()["state"], "minted");
    }
    for (check, minted) in burst.checks.into_iter().zip(&before.minted) {
        let res = check.await.unwrap();
        assert_eq!(res.status(), 200);
        let admitted: Value = res.json().await.unwrap();
        assert_eq!(admitted["aes_key"], minted["aes_key"]);
        assert_eq!(app.session(id(minted)).await.unwrap()["state"], "verified");
    }
    for event in burst.events {
        assert_acknowledged(event.await.unwrap()).await;
    }
    for (verified, playing) in before.verified.iter().zip(&before.playing) {
        assert_eq!(app.session(id(verified)).await.unwrap()["state"], "playing");
        assert_eq!(app.session(id(playing)).await.unwrap()["state"], "ended");
    }
    assert_phones(&app, "m", "allocated").await;
    assert_phones(&app, "c", "allocated").await;
    assert_phones(&app, "e", "occupied").await;
    assert_phones(&app, "q", "idle").await;
    let all_three = metric(&app, "cphub_write_rounds_total{kinds=\"3\"}").await;
    match backend {
        Backend::Sqlite => assert!(all_three >= 1.0, "no round carried all three kinds"),
        Backend::Postgres => assert_eq!(all_three, 0.0, "mints went through a writer"),
    }
    for writer in ["mints", "sign_checks", "events"] {
        let waiting = format!("cphub_write_queue_jobs{{writer=\"{writer}\"}}");
        assert_eq!(metric(&app, &waiting).await, 0.0, "{writer}");
    }
    app.stop().await;
}

async fn assert_phones(app: &TestApp, prefix: &str, state: &str) {
    for phone in phones(prefix) {
        let found = app.phone(&phone).await.unwrap();
        assert_eq!(found["state"], state, "{found}");
    }
}

/// Sessions played at once, each through its sign check (6.1), enter (6.2) and quit
/// (6.3), every callback sent once the one before is answered: with four writers on
/// PostgreSQL the sessions' callbacks interleave across writers, and each session's
/// still reach the book in its own order, enter accepted before quit, the session ended.
async fn each_sessions_callbacks_are_applied_in_order_across_writers_6_1_6_2_6_3(backend: Backend) {
    let app = spawn_app(backend).await;
    let played = phones("o")
        .into_iter()
        .chain(phones("p"))
        .collect::<Vec<_>>();
    app.idle_phones(&played.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let sessions = played.iter().map(|phone| play(&app, phone));
    let sessions = futures_util::future::join_all(sessions).await;

    for session in sessions {
        let found = app.session(&session).await.unwrap();
        assert_eq!(found["state"], "ended", "{found}");
        let events: Vec<(&Value, &Value)> = found["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "enter" || e["kind"] == "quit")
            .map(|e| (&e["kind"], &e["outcome"]))
            .collect();
        let accepted = json!("accepted");
        let expected = [(&json!("enter"), &accepted), (&json!("quit"), &accepted)];
        assert_eq!(events, expected, "{found}");
    }
    app.stop().await;
}

/// Mints a session on `phone` and plays it through; its id.
async fn play(app: &TestApp, phone: &str) -> String {
    let minted = app.mint_ok(&mint_request(phone)).await;
    assert_eq!(app.sign_check(&sign_check(&minted)).await.status(), 200);
    let session = id(&minted);
    assert_acknowledged(
        app.post_event(&enter(session, phone, "2026-11-28T10:00:00Z"))
            .await,
    )
    .await;
    let ended = quit(session, phone, "2026-11-28T10:01:00Z", 60);
    assert_acknowledged(app.post_event(&ended).await).await;
    session.to_owned()
}
