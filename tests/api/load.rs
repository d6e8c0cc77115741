//! The open-loop load generator (`cphub simulate --load`) against the real app: it keeps its
//! schedule for a small fleet (every request the schedule fixes is sent, answered, and
//! counted once by cphub too), plays every kind of request, and the flash crowd plays; and
//! a heartbeat flood pipelined over a few keep-alive connections arrives whole; and after a
//! 503 it sends the same request again rather than pinning a phone cphub still holds.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use cphub::simulator::load::{self, Kind, LoadOptions, Target};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp};

const PHONES: usize = 200;

/// 200 phones beating every second over a 12 s run: sessions from 3 s (one interval and
/// two seconds for the flush), half of the fleet busy from a 1 s ramp, a flash crowd of 20 %
/// at 4 s within 1 s, sessions of 1 s on average so that quits happen within the run, and an
/// idle time so long that no phone plays twice: the schedule (seeded) fixes 140 sessions,
/// each with seven seconds or more to be played, however slow the machine.
fn small_fleet() -> LoadOptions {
    let mut options = LoadOptions::defaults();
    options.heartbeat_interval_secs = 1.0;
    options.session_mean_secs = 1.0;
    options.busy_share = 0.5;
    options.idle_mean_secs = Some(1e9);
    options.ramp_secs = 1.0;
    options.warmup_secs = 0.0;
    options.window_secs = 12.0;
    options.flash_share = 0.2;
    options.flash_at_secs = 4.0;
    options.flash_within_secs = 1.0;
    options
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    text.lines()
        .filter(|line| line.starts_with(name))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A base path of the operator's own (`callbacks.base_path`), as the generator is told it.
const CALLBACKS_PATH: &str = "/hooks-load";

async fn load_generator_keeps_its_schedule_for_a_small_fleet(backend: Backend) {
    let config = format!("[callbacks]\nbase_path = \"{CALLBACKS_PATH}\"\n");
    let app = TestApp::spawn_with(backend, &config).await;
    let target = Target {
        cphub: app.address.clone(),
        token: Some(TOKEN.to_owned()),
        app_id: "load.game".to_owned(),
        phones: PHONES,
        seed: 17,
        client: Default::default(),
    };
    let options = LoadOptions {
        callbacks_path: CALLBACKS_PATH.to_owned(),
        ..small_fleet()
    };
    let report = load::run(options, target).await.unwrap();

    // The schedule fixes the heartbeats exactly: every phone once a second for 12 s.
    let beats = report.kind(Kind::Heartbeat);
    assert_eq!(beats.ok, (PHONES * 12) as u64, "{}", report.human());
    assert_eq!(
        metric(&app, "cphub_heartbeats_total").await,
        beats.ok as f64
    );
    assert_eq!(
        (report.header.busy_at_start, report.header.flash_phones),
        (100, 40)
    );
    for kind in Kind::ALL {
        let figures = report.kind(kind);
        assert_eq!(figures.errors(), 0, "{kind:?}: {}", report.human());
        assert!(figures.ok > 0, "{kind:?} never played: {}", report.human());
    }
    // Every session the schedule holds was played through: the ramp's 100 and the flash
    // crowd's 40, each minted, checked and entered once; cphub counts the same.
    for kind in [Kind::Mint, Kind::SignCheck, Kind::Enter] {
        assert_eq!(report.kind(kind).ok, 140, "{kind:?}: {}", report.human());
    }
    assert_eq!(
        report.flash.ok,
        3 * 40,
        "the flash crowd's mints, checks, enters"
    );
    let started = metric(&app, "cphub_sessions_started_total").await;
    assert_eq!(started, 140.0);
    let ended = metric(&app, "cphub_sessions_ended_total").await;
    assert_eq!(ended, report.kind(Kind::Quit).ok as f64);
    app.stop().await;
}

// On PostgreSQL this run found two defects of the write path under the mix, since fixed: a
// mint pinned to a phone skipped the row a heartbeat flush held (409 CPHUB.PHONE_BUSY for a
// free phone), and the flush, locking phones before sessions in hash order, deadlocked with
// the event writer (503 to the phone). Zero errors here is what holds them fixed.
#[test]
fn load_generator_keeps_its_schedule_for_a_small_fleet_on_postgres() {
    crate::helpers::run_scenario(
        "load_generator_keeps_its_schedule_for_a_small_fleet_on_postgres",
        async {
            if crate::helpers::postgres_available() {
                load_generator_keeps_its_schedule_for_a_small_fleet(Backend::Postgres).await
            }
        },
    )
}

#[test]
fn load_generator_keeps_its_schedule_for_a_small_fleet_on_sqlite() {
    crate::helpers::run_scenario(
        "load_generator_keeps_its_schedule_for_a_small_fleet_on_sqlite",
        async { load_generator_keeps_its_schedule_for_a_small_fleet(Backend::Sqlite).await },
    )
}

/// 1,000 phones beating every second (6.4) for 6 s, heartbeats only (no token, so no
/// players), pipelined over 4 connections: each write carries the beats of several phones
/// and each connection has many answers in flight. The schedule fixes 6,000 beats.
async fn pipelined_heartbeats_arrive_on_schedule(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut options = LoadOptions::defaults();
    options.heartbeat_interval_secs = 1.0;
    options.warmup_secs = 0.0;
    options.window_secs = 6.0;
    options.connections = 4;
    let target = Target {
        cphub: app.address.clone(),
        token: None,
        app_id: "load.game".to_owned(),
        phones: 1000,
        seed: 5,
        client: Default::default(),
    };
    let report = load::run(options, target).await.unwrap();

    let beats = report.kind(Kind::Heartbeat);
    assert_eq!(beats.ok, 6000, "{}", report.human());
    assert_eq!(beats.errors(), 0, "{}", report.human());
    assert_eq!((report.header.connections, report.reconnects), (4, 0));
    // cphub counted each beat once: none lost or doubled by the pipelining.
    assert_eq!(metric(&app, "cphub_heartbeats_total").await, 6000.0);
    assert_eq!(report.kind(Kind::Mint).ok, 0, "no token, no players");
    app.stop().await;
}

#[test]
fn pipelined_heartbeats_arrive_on_schedule_on_postgres() {
    crate::helpers::run_scenario(
        "pipelined_heartbeats_arrive_on_schedule_on_postgres",
        async {
            if crate::helpers::postgres_available() {
                pipelined_heartbeats_arrive_on_schedule(Backend::Postgres).await
            }
        },
    )
}

#[test]
fn pipelined_heartbeats_arrive_on_schedule_on_sqlite() {
    crate::helpers::run_scenario("pipelined_heartbeats_arrive_on_schedule_on_sqlite", async {
        pipelined_heartbeats_arrive_on_schedule(Backend::Sqlite).await
    })
}

/// Between the generator and cphub: passes every request on, except that the first attempt
/// of each mint and of each sign check is answered `503 CPHUB.UNAVAILABLE` with
/// `Retry-After`, as cphub answers when its database does not keep up. A mint is passed on
/// first, so cphub has minted it and holds its phone (the answer lost: the worst case); a
/// sign check is not, so its ticket is still unused. Counts what it answered 503.
struct FlakyProxy {
    cphub: String,
    http: reqwest::Client,
    /// Mint `Idempotency-Key`s and sign-check `session_id`s seen once already.
    seen: Mutex<HashSet<String>>,
    refused: Mutex<Vec<Kind>>,
}

impl FlakyProxy {
    /// Serves on a port of its own; its address.
    fn start(cphub: &str) -> (Arc<FlakyProxy>, String) {
        let proxy = Arc::new(FlakyProxy {
            cphub: cphub.to_owned(),
            http: reqwest::Client::new(),
            seen: Mutex::default(),
            refused: Mutex::default(),
        });
        let data = web::Data::from(Arc::clone(&proxy));
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new()
                .app_data(data.clone())
                .default_service(web::to(FlakyProxy::handle))
        })
        .workers(2)
        .bind("127.0.0.1:0")
        .unwrap();
        let address = format!("http://{}", server.addrs()[0]);
        tokio::spawn(server.run());
        (proxy, address)
    }

    /// The first time `key` is seen.
    fn first(&self, key: String) -> bool {
        self.seen.lock().unwrap().insert(key)
    }

    fn unavailable(&self, kind: Kind) -> HttpResponse {
        self.refused.lock().unwrap().push(kind);
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(
                json!({"request_id": "0".repeat(32), "error_code": "CPHUB.UNAVAILABLE",
                         "error_msg": "injected by the test"}),
            )
    }

    async fn handle(
        proxy: web::Data<FlakyProxy>,
        request: HttpRequest,
        body: web::Bytes,
    ) -> HttpResponse {
        let path = request.path();
        if path == "/cph/sign-check" {
            let check: Value = serde_json::from_slice(&body).unwrap();
            if proxy.first(format!("sign check {}", check["session_id"])) {
                return proxy.unavailable(Kind::SignCheck);
            }
        }
        let answer = proxy.pass_on(&request, body).await;
        let key = request.headers().get("idempotency-key");
        let minted = path == "/api/v1/sessions" && answer.status() == 201;
        if minted && proxy.first(format!("mint {key:?}")) {
            return proxy.unavailable(Kind::Mint);
        }
        answer
    }

    async fn pass_on(&self, request: &HttpRequest, body: web::Bytes) -> HttpResponse {
        let url = format!("{}{}", self.cphub, request.path());
        let mut forward = self.http.post(url).body(body);
        for name in ["content-type", "authorization", "idempotency-key"] {
            if let Some(value) = request.headers().get(name) {
                forward = forward.header(name, value.as_bytes());
            }
        }
        let res = forward.send().await.unwrap();
        let status = actix_web::http::StatusCode::from_u16(res.status().as_u16()).unwrap();
        HttpResponse::build(status)
            .content_type("application/json")
            .body(res.bytes().await.unwrap())
    }
}

/// Every mint and sign check is answered 503 once (each mint after cphub made it), and
/// phones play one session after another (sessions of 1 s, idle gaps of 2.5 s on average)
/// for 16 s, each well inside the hold cphub keeps on a minted phone (the ticket's two
/// minutes plus the skew). A player sends the 503'd request again: the mint with its
/// `Idempotency-Key` gets its session back, the sign check its first use; so no mint is
/// answered 409 `CPHUB.PHONE_BUSY` — the generator that gave up on such a session and
/// pinned its phone again for the next was answered 409 for every phone's second session.
async fn after_a_503_the_generator_retries_and_never_pins_a_phone_cphub_holds(backend: Backend) {
    const PHONES: usize = 40;
    let app = TestApp::spawn(backend).await;
    let (proxy, address) = FlakyProxy::start(&app.address);
    let mut options = small_fleet();
    options.idle_mean_secs = Some(0.5);
    options.flash_share = 0.0;
    options.window_secs = 16.0;
    let target = Target {
        cphub: address,
        token: Some(TOKEN.to_owned()),
        app_id: "load.game".to_owned(),
        phones: PHONES,
        seed: 23,
        client: Default::default(),
    };
    let report = load::run(options, target).await.unwrap();

    let refused = proxy.refused.lock().unwrap().clone();
    for kind in [Kind::Mint, Kind::SignCheck] {
        let injected = refused.iter().filter(|k| **k == kind).count() as u64;
        let figures = report.kind(kind);
        assert!(injected > 0, "{kind:?}: nothing injected");
        assert_eq!(
            figures.statuses.keys().collect::<Vec<_>>(),
            [&503],
            "{kind:?}: only the injected 503s: {}",
            report.human()
        );
        assert_eq!(figures.non_2xx, injected, "{kind:?}: {}", report.human());
        assert_eq!(figures.transport_errors, 0, "{}", report.human());
    }
    for kind in [Kind::Enter, Kind::Quit] {
        assert_eq!(report.kind(kind).errors(), 0, "{}", report.human());
    }
    // Phones came back for more sessions: the case a generator that re-pins gets 409 for.
    let mints = report.kind(Kind::Mint).ok;
    assert!(
        mints > PHONES as u64,
        "{mints} sessions: {}",
        report.human()
    );
    // Each retried mint got its first session back: cphub started as many as were entered.
    let started = metric(&app, "cphub_sessions_started_total").await;
    assert_eq!(started, report.kind(Kind::Enter).ok as f64);
    app.stop().await;
}

backend_tests!(after_a_503_the_generator_retries_and_never_pins_a_phone_cphub_holds);

/// `--path events` at 200 a second for 3 s (6.2, 6.3): the schedule fixes 600 requests, each
/// the first delivery of an enter or a quit, so cphub accepts each once; the quits are of
/// sessions entered 0.2 s before, and the first 20 odd requests enter sessions of their own.
async fn one_path_alone_sends_every_request_its_rate_fixes(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut options = LoadOptions::defaults();
    options.path = Some(load::CallbackPath::Events);
    options.rate = 200.0;
    options.warmup_secs = 0.0;
    options.window_secs = 3.0;
    options.max_in_flight = 8;
    let report = load::run_path(&options, &app.address).await.unwrap();

    let (enters, quits) = (report.kind(Kind::Enter), report.kind(Kind::Quit));
    assert_eq!(enters.errors() + quits.errors(), 0, "{}", report.human());
    assert_eq!((enters.ok, quits.ok), (320, 280), "{}", report.human());
    assert_eq!(report.header.path, Some("events"));
    let accepted = "cphub_events_total{outcome=\"accepted\",";
    assert_eq!(metric(&app, accepted).await, 600.0);
    assert_eq!(metric(&app, "cphub_sessions_ended_total").await, 280.0);

    // Sign checks (6.1): the bodies of tickets minted before, each sent once and verified.
    let phones: Vec<String> = (0..30).map(|i| format!("path-phone-{i}")).collect();
    app.idle_phones(&phones.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let mut bodies = String::new();
    for phone in &phones {
        let minted = app
            .mint_ok(&json!({"app_id": "load.game", "user_id": phone, "phone_id": phone}))
            .await;
        let body = json!({
            "session_id": minted["session_id"], "ticket": minted["ticket"],
            "auth_ts": minted["auth_ts"], "encrypted_data": "", "aes_iv": "",
        });
        bodies += &format!("{body}\n");
    }
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), bodies).unwrap();
    options.path = Some(load::CallbackPath::SignChecks);
    options.rate = 20.0;
    options.window_secs = 1.0;
    options.bodies = Some(file.path().to_owned());
    let report = load::run_path(&options, &app.address).await.unwrap();
    let checks = report.kind(Kind::SignCheck);
    assert_eq!((checks.ok, checks.errors()), (20, 0), "{}", report.human());
    let verified = "cphub_sign_checks_total{result=\"ok\"}";
    assert_eq!(metric(&app, verified).await, 20.0);

    // More than the file holds is refused before anything is sent.
    options.rate = 100.0;
    let refused = load::run_path(&options, &app.address).await;
    let error = refused.unwrap_err().to_string();
    assert!(
        error.contains("holds 30 sign checks") && error.contains("needs 100"),
        "{error}"
    );
    app.stop().await;
}

#[test]
fn one_path_alone_sends_every_request_its_rate_fixes_on_postgres() {
    crate::helpers::run_scenario(
        "one_path_alone_sends_every_request_its_rate_fixes_on_postgres",
        async {
            if crate::helpers::postgres_available() {
                one_path_alone_sends_every_request_its_rate_fixes(Backend::Postgres).await
            }
        },
    )
}

#[test]
fn one_path_alone_sends_every_request_its_rate_fixes_on_sqlite() {
    crate::helpers::run_scenario(
        "one_path_alone_sends_every_request_its_rate_fixes_on_sqlite",
        async { one_path_alone_sends_every_request_its_rate_fixes(Backend::Sqlite).await },
    )
}
