//! The web console (docs/console.md) over HTTP: sign-in and its cookie, the headers every
//! answer carries, scopes, the CSRF check and the audit line of an action. The browser
//! walk through the pages is in `console_browser.rs`.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use sha2::{Digest, Sha256};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp};

pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                              img-src 'self' data:; connect-src 'self'; form-action 'self'; \
                              frame-ancestors 'none'; base-uri 'none'";

/// Tokens by name: an admin, one that may only read phones, one that may only read usage.
pub(crate) const ADMIN: &str = "console-admin-token-0123456789abcdef";
pub(crate) const READER: &str = "console-phone-reader-0123456789abcdef";
const USAGE_ONLY: &str = "console-usage-reader-0123456789abcdef";

pub(crate) fn tokens() -> String {
    let table = |name: &str, token: &str, scopes: &str| {
        format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{scopes}]\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        )
    };
    [
        table("admin", ADMIN, "\"admin\""),
        table("reader", READER, "\"phones:read\", \"sessions:read\""),
        table("accountant", USAGE_ONLY, "\"usage:read\""),
        // The suite's own token, for the API calls of the tests.
        table("tests", TOKEN, "\"admin\""),
    ]
    .concat()
}

const FORM: &str = "application/x-www-form-urlencoded";

/// A form's body, as a browser encodes it.
fn form(pairs: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let pairs: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    pairs.join("&")
}

/// A client that shows redirects instead of following them.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn spawn(backend: Backend, extra: &str) -> TestApp {
    TestApp::spawn_with(backend, &format!("{}{extra}", tokens())).await
}

async fn sign_in(app: &TestApp, token: &str) -> reqwest::Response {
    client()
        .post(format!("{}/console/login", app.address))
        .header("content-type", FORM)
        .body(form(&[("token", token), ("next", "/console/usage")]))
        .send()
        .await
        .unwrap()
}

/// The `cphub_console=…` pair of a successful sign-in, to send back as `Cookie`.
async fn cookie_of(app: &TestApp, token: &str) -> String {
    let res = sign_in(app, token).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let line = res.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    line.split(';').next().unwrap().to_owned()
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = client().get(format!("{}{path}", app.address));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

async fn post_form(
    app: &TestApp,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    (client().post(format!("{}{path}", app.address)))
        .header("cookie", cookie)
        .header("content-type", FORM)
        .body(self::form(form))
        .send()
        .await
        .unwrap()
}

fn assert_console_headers(headers: &HeaderMap, what: &str) {
    assert_eq!(headers["content-security-policy"], CSP, "{what}");
    assert_eq!(headers["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(headers["referrer-policy"], "no-referrer", "{what}");
}

/// The CSRF token of the page's forms (the sign-out form is on every page).
fn csrf_in(page: &str) -> String {
    let at = page
        .find("name=\"csrf\" value=\"")
        .expect("a form with the CSRF token");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn a_page_asked_for_without_signing_in_leads_to_the_sign_in_form(backend: Backend) {
    let app = spawn(backend, "").await;

    let res = get(&app, "/console/fleet?state=idle", None).await;

    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let to = res.headers()[LOCATION].to_str().unwrap();
    assert_eq!(to, "/console/login?next=%2Fconsole%2Ffleet%3Fstate%3Didle");
    let form = get(&app, to, None).await;
    assert_eq!(form.status(), 200);
    assert_console_headers(form.headers(), "the sign-in form");
    let text = form.text().await.unwrap();
    assert!(text.contains("type=\"password\" name=\"token\""), "{text}");
    assert!(
        text.contains("value=\"/console/fleet?state=idle\""),
        "{text}"
    );
}

async fn signing_in_sets_an_http_only_strict_cookie_and_a_wrong_token_sets_none(backend: Backend) {
    let app = spawn(backend, "").await;

    let wrong = sign_in(&app, "not-a-token-of-this-cphub").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    assert_console_headers(wrong.headers(), "refused sign-in");
    let page = wrong.text().await.unwrap();
    assert!(page.contains("not an operator token"), "{page}");

    let res = sign_in(&app, ADMIN).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/console/usage");
    let cookie = res.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cookie.starts_with("cphub_console="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.split("; ").any(|f| f == flag), "{flag} in {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    assert!(
        !cookie.contains(ADMIN),
        "the token is encoded, not in the clear"
    );
    let over_https = client()
        .post(format!("{}/console/login", app.address))
        .header("x-forwarded-proto", "https")
        .header("content-type", FORM)
        .body(form(&[("token", ADMIN)]))
        .send()
        .await
        .unwrap();
    let cookie = over_https.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}

async fn signing_out_clears_the_cookie_and_needs_the_csrf_token(backend: Backend) {
    let app = spawn(backend, "").await;
    let cookie = cookie_of(&app, ADMIN).await;
    let page = get(&app, "/console/usage", Some(&cookie)).await;
    let csrf = csrf_in(&page.text().await.unwrap());

    let forged = post_form(&app, "/console/logout", &cookie, &[]).await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(forged.headers().get(SET_COOKIE).is_none());

    let res = post_form(&app, "/console/logout", &cookie, &[("csrf", &csrf)]).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cleared = res.headers()[SET_COOKIE].to_str().unwrap();
    assert!(cleared.starts_with("cphub_console=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
}

async fn every_console_answer_carries_the_csp_and_assets_are_immutable(backend: Backend) {
    let app = spawn(backend, "").await;
    let cookie = cookie_of(&app, ADMIN).await;
    let fleet = get(&app, "/console/fleet", Some(&cookie)).await;
    assert_eq!(fleet.status(), 200);
    assert_console_headers(fleet.headers(), "fleet");
    assert_eq!(fleet.headers()["cache-control"], "no-store");
    let page = fleet.text().await.unwrap();
    assert!(
        !page.contains("<style") && !page.contains(" style="),
        "no inline style"
    );
    assert!(!page.contains("<script>"), "no inline script");
    assert!(page.contains("name=\"viewport\""), "readable on a phone");

    let htmx = asset_url(&page, "htmx.min.js");
    let res = get(&app, &htmx, None).await;
    assert_eq!(res.status(), 200);
    assert_console_headers(res.headers(), "asset");
    let cache = res.headers()["cache-control"].to_str().unwrap().to_owned();
    assert_eq!(cache, "public, max-age=31536000, immutable");
    assert!(res.headers()["etag"].to_str().unwrap().len() > 2);
    assert_eq!(
        res.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let body = res.bytes().await.unwrap();
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/console/assets/README.md"),
    )
    .unwrap();
    let sha = hex::encode(Sha256::digest(&body));
    assert!(
        readme.contains(&sha),
        "the vendored htmx is the one recorded: {sha}"
    );
    let stale = htmx.replace("/assets/", "/assets/0");
    assert_eq!(get(&app, &stale, None).await.status(), 404);
    let missing = get(&app, "/console/no-such-page", Some(&cookie)).await;
    assert_eq!(missing.status(), 404);
    assert_console_headers(missing.headers(), "404");
}

fn asset_url(page: &str, name: &str) -> String {
    let end = page
        .find(&format!("/{name}\""))
        .expect("the asset is linked")
        + name.len()
        + 1;
    let start = page[..end].rfind('"').unwrap() + 1;
    page[start..end].to_owned()
}

async fn a_page_needs_its_scope_and_says_which_is_missing(backend: Backend) {
    let app = spawn(backend, "").await;
    let cookie = cookie_of(&app, USAGE_ONLY).await;

    let fleet = get(&app, "/console/fleet", Some(&cookie)).await;
    assert_eq!(fleet.status(), StatusCode::FORBIDDEN);
    assert_console_headers(fleet.headers(), "403");
    let page = fleet.text().await.unwrap();
    assert!(page.contains("lacks the scope phones:read"), "{page}");
    assert!(page.contains("CPHUB.FORBIDDEN"), "{page}");

    let usage = get(&app, "/console/usage", Some(&cookie)).await;
    assert_eq!(usage.status(), 200);
    let page = usage.text().await.unwrap();
    assert!(
        !page.contains("href=\"/console/fleet\">Fleet"),
        "no link to a page it cannot see"
    );
    assert!(page.contains("href=\"/console/usage\">Usage"), "{page}");
}

async fn only_a_token_that_may_operate_gets_the_restart_button(backend: Backend) {
    let app = spawn(backend, "").await;
    app.idle_phones(&["p-1"]).await;
    let phone = "/console/phones/p-1";

    let reader = cookie_of(&app, READER).await;
    let page = get(&app, phone, Some(&reader)).await.text().await.unwrap();
    assert!(page.contains("data-state=\"idle\""), "{page}");
    assert!(!page.contains("/console/phones/p-1/restart"), "{page}");
    let confirm = get(&app, "/console/phones/p-1/restart", Some(&reader)).await;
    assert_eq!(confirm.status(), StatusCode::FORBIDDEN);

    let admin = cookie_of(&app, ADMIN).await;
    let page = get(&app, phone, Some(&admin)).await.text().await.unwrap();
    assert!(
        page.contains("href=\"/console/phones/p-1/restart\""),
        "{page}"
    );
    let confirm = get(&app, "/console/phones/p-1/restart", Some(&admin)).await;
    assert_eq!(confirm.status(), 200);
    let form = confirm.text().await.unwrap();
    assert!(
        form.contains("action=\"/console/phones/p-1/restart\""),
        "{form}"
    );
    assert!(form.contains("name=\"csrf\""), "{form}");
}

async fn an_action_without_the_right_csrf_token_is_refused_and_audited(backend: Backend) {
    let app = spawn(backend, "").await;
    app.idle_phones(&["p-1"]).await;
    let admin = cookie_of(&app, ADMIN).await;
    let reader_page = get(&app, "/console/fleet", Some(&cookie_of(&app, READER).await)).await;
    let readers_csrf = csrf_in(&reader_page.text().await.unwrap());
    let path = "/console/phones/p-1/restart";

    for (why, form) in [
        ("no token", vec![]),
        ("garbage", vec![("csrf", "00ff")]),
        ("another operator's", vec![("csrf", readers_csrf.as_str())]),
    ] {
        let res = post_form(&app, path, &admin, &form).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{why}");
        assert_console_headers(res.headers(), why);
        let page = res.text().await.unwrap();
        assert!(
            page.contains("CSRF token is missing or wrong"),
            "{why}: {page}"
        );
    }
    let no_body = (client().post(format!("{}{path}", app.address)))
        .header("cookie", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(no_body.status(), StatusCode::FORBIDDEN, "an empty POST");

    // The right token reaches the watchdog's service, as the API's route does: this cphub
    // has no control plane, so it is refused the API's way.
    let csrf = csrf_in(
        &get(&app, "/console/fleet", Some(&admin))
            .await
            .text()
            .await
            .unwrap(),
    );
    let sent = post_form(&app, path, &admin, &[("csrf", &csrf)]).await;
    assert_eq!(sent.status(), StatusCode::SERVICE_UNAVAILABLE);
    // Every 503 carries Retry-After (docs/errors.md), the console's pages too.
    assert_eq!(sent.headers()["retry-after"], "1");
    assert!(
        sent.text()
            .await
            .unwrap()
            .contains("CPHUB.CPH_NOT_CONFIGURED")
    );

    let audit = app.get_json("/api/v1/audit?token=admin").await.unwrap();
    let entries = audit["entries"].as_array().unwrap();
    let (sent, refused): (Vec<_>, Vec<_>) = (entries.iter())
        .filter(|e| e["action"] == "POST /console/phones/{phone_id}/{action}")
        .partition(|e| e["status"] == 503);
    assert_eq!(sent.len(), 1, "{audit}");
    assert_eq!(sent[0]["error_code"], "CPHUB.CPH_NOT_CONFIGURED");
    assert_eq!(refused.len(), 4, "{audit}");
    assert!(
        refused
            .iter()
            .all(|e| e["status"] == 403 && e["error_code"] == "CPHUB.FORBIDDEN")
    );
    assert!(
        refused.iter().all(|e| e["target"] == "p-1/restart"),
        "{audit}"
    );
}

/// Wrong tokens at the sign-in count against the client address as they do against the
/// API (`api.auth_failures_per_minute`), with the per-token limit off: the sign-in's limit
/// was the API's, and `rate_limit_per_second = 0` turned it off too. Past the limit the
/// right token is refused as well, with the console's page and Retry-After.
async fn wrong_tokens_at_the_sign_in_refuse_the_address_with_the_rate_limit_off(backend: Backend) {
    let app = spawn(
        backend,
        "[api]\nrate_limit_per_second = 0\nauth_failures_per_minute = 2\n",
    )
    .await;
    for guess in ["guess-1", "guess-2"] {
        assert_eq!(sign_in(&app, guess).await.status(), 401);
    }

    let refused = sign_in(&app, ADMIN).await;

    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_console_headers(refused.headers(), "a refused sign-in");
    let page = refused.text().await.unwrap();
    assert!(page.contains("CPHUB.RATE_LIMITED"), "{page}");
}

async fn sign_in_attempts_are_rate_limited_like_api_calls(backend: Backend) {
    let app = spawn(
        backend,
        "[api]\nrate_limit_per_second = 1\nrate_limit_burst = 2\n",
    )
    .await;

    let mut statuses = Vec::new();
    for guess in 0..6 {
        statuses.push(
            sign_in(&app, &format!("guess-{guess}"))
                .await
                .status()
                .as_u16(),
        );
    }

    // A bucket of 2 refilled once a second: six quick guesses cannot all be tried (a machine
    // stalled for seconds between them could make this fail, never pass wrongly).
    assert_eq!(statuses[0], 401, "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [401, 429].contains(s)),
        "{statuses:?}"
    );

    // Behind a trusted proxy each client has its own bucket: one's guesses spend only its
    // own. Keyed by the peer (the proxy), every sign-in shared one bucket.
    let behind = spawn(
        backend,
        "[api]\nrate_limit_per_second = 1\nrate_limit_burst = 2\n\
         [server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
    )
    .await;
    let from = |address: &'static str| {
        client()
            .post(format!("{}/console/login", behind.address))
            .header("content-type", FORM)
            .header("x-forwarded-for", address)
            .body(form(&[("token", "a-guess"), ("next", "/console/usage")]))
            .send()
    };
    let mut guesser = Vec::new();
    let mut limited = None;
    for _ in 0..6 {
        let res = from("203.0.113.7").await.unwrap();
        guesser.push(res.status().as_u16());
        if res.status() == 429 {
            limited = Some(res);
        }
    }
    assert!(guesser.contains(&429), "{guesser:?}");
    // The console answers with its page, not the API's JSON, and says when to come back.
    let limited = limited.unwrap();
    assert!(limited.headers().contains_key("retry-after"));
    assert_console_headers(limited.headers(), "a limited sign-in");
    let page = limited.text().await.unwrap();
    assert!(
        page.contains("CPHUB.RATE_LIMITED") && page.contains("<html"),
        "{page}"
    );
    assert_eq!(
        from("203.0.113.8").await.unwrap().status(),
        401,
        "another client"
    );
}

async fn the_console_can_be_turned_off_or_served_on_its_own_address(backend: Backend) {
    let off = spawn(backend, "[console]\nenabled = false\n").await;
    assert_eq!(get(&off, "/console/login", None).await.status(), 404);

    let port = crate::watchdog::free_port();
    let apart = spawn(
        backend,
        &format!("[console]\nlisten = \"127.0.0.1:{port}\"\n"),
    )
    .await;
    assert_eq!(get(&apart, "/console/login", None).await.status(), 404);
    let there = client()
        .get(format!("http://127.0.0.1:{port}/console/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(there.status(), 200);
    assert_console_headers(there.headers(), "own listener");
}

/// A rollout paused, resumed and aborted from the console lands in the rollout's own state,
/// as the API's `POST /api/v1/rollouts/{id}/{action}` would (one service, `change_state`);
/// a token without `rollouts:write` sees no button and is refused the confirm page. The
/// updates (5.3.7) are slowed so that the rollout is still running when it is paused.
async fn a_rollout_is_paused_resumed_and_aborted_from_the_console_5_3_7(backend: Backend) {
    let rig = crate::rollouts::start_with(backend, 3, &tokens(), |_| {}).await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    rig.slow_jobs_from_now(std::time::Duration::from_secs(30));
    let rollout = rig
        .start_rollout(&serde_json::json!({
            "app_id": crate::rollouts::APP, "app_version_ids": [version], "canary": 1,
            "batch_size": 3,
        }))
        .await;
    let id = rollout["id"].to_string();
    let page_path = format!("/console/rollouts/{id}");
    let app = &rig.app;
    // An id that cannot be one is the console's 404 page with its code, as any other.
    let admin_cookie = cookie_of(app, ADMIN).await;
    let bad = get(app, "/console/rollouts/abc", Some(&admin_cookie)).await;
    assert_eq!(bad.status(), StatusCode::NOT_FOUND);
    assert_console_headers(bad.headers(), "a bad rollout id");
    let page = bad.text().await.unwrap();
    assert!(page.contains("CPHUB.NOT_FOUND"), "{page}");

    let reader = cookie_of(app, READER).await;
    let page = get(app, &page_path, Some(&reader))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains(&format!("{page_path}/pause")), "{page}");
    let confirm = get(app, &format!("{page_path}/pause"), Some(&reader)).await;
    assert_eq!(confirm.status(), StatusCode::FORBIDDEN);

    let admin = cookie_of(app, ADMIN).await;
    for (action, state) in [
        ("pause", "paused"),
        ("resume", "running"),
        ("abort", "aborted"),
    ] {
        let page = get(app, &page_path, Some(&admin))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            page.contains(&format!("href=\"{page_path}/{action}\"")),
            "{action}: {page}"
        );
        let confirm = get(app, &format!("{page_path}/{action}"), Some(&admin)).await;
        assert_eq!(confirm.status(), 200, "{action}");
        let form = confirm.text().await.unwrap();
        let sent = post_form(
            app,
            &format!("{page_path}/{action}"),
            &admin,
            &[("csrf", &csrf_in(&form))],
        )
        .await;
        assert_eq!(sent.status(), StatusCode::SEE_OTHER, "{action}");
        assert_eq!(sent.headers()[LOCATION], page_path.as_str(), "{action}");
        let now = rig.rollout(&rollout["id"]).await;
        assert_eq!(now["state"], state, "{action}: {now}");
    }
    rig.simulator.stop().await;
}

/// The `data-became` of each line of a phone page's history, as shown (newest first), with
/// the line's text.
fn history_of(page: &str) -> Vec<(String, String)> {
    let history = &page[page.find("<ol class=\"history\">").expect(page)..];
    let history = &history[..history.find("</ol>").unwrap()];
    (history.split("<li data-became=\"").skip(1))
        .map(|li| {
            let (became, rest) = li.split_once('"').unwrap();
            (became.to_owned(), rest.to_owned())
        })
        .collect()
}

/// A phone's history on its page, from the facts the book records: it plays a session
/// (minted, entered 6.2, quit 6.3), falls silent and is restarted by the watchdog (4.3.6),
/// then is updated by a rollout (5.3.7, verified with 5.3.6); the page shows each change
/// newest first, in the order it happened, with its reason.
async fn a_phone_history_shows_its_session_recovery_and_rollout_in_order_5_3_7(backend: Backend) {
    let rig = crate::rollouts::start_with(backend, 1, &tokens(), |o| {
        o.token = Some(TOKEN.into());
        o.sessions = 1;
        o.session_min_secs = 1;
        o.session_max_secs = 1;
        o.player_interval_ms = 200;
    })
    .await;
    let phone = rig.simulator.phone_ids()[0].clone();
    let app = &rig.app;
    rig.wait(|| async { !rig.simulator.stats.played().is_empty() })
        .await;
    rig.simulator.fleet.lock().phones[0].faults.silent = true;
    let restarted = |log: &[serde_json::Value]| crate::watchdog::has(log, "restart", "succeeded");
    crate::watchdog::wait_for_recoveries(app, &phone, restarted).await;
    app.wait_for_phone(&phone, |p| p["state"] == "idle").await;
    let version = rig.new_version();
    rig.push_by_hand(&version);
    let body = serde_json::json!({"app_id": crate::rollouts::APP, "app_version_ids": [version]});
    let rollout = rig.start_rollout(&body).await;
    rig.wait_for_rollout(&rollout["id"], "done").await;

    let admin = cookie_of(app, ADMIN).await;
    let page = get(app, &format!("/console/phones/{phone}"), Some(&admin)).await;
    let history = history_of(&page.text().await.unwrap());

    let oldest_first = [
        "allocated",
        "occupied",
        "idle",
        "recovering",
        "back",
        "draining",
        "updating",
        "verifying",
        "updated",
    ];
    let shown: Vec<&str> = history.iter().rev().map(|(b, _)| b.as_str()).collect();
    let mut rest = shown.iter();
    for became in oldest_first {
        assert!(rest.any(|s| *s == became), "{became} in order: {history:?}");
    }
    let line = |became: &str| &history.iter().find(|(b, _)| b == became).unwrap().1;
    assert!(
        line("recovering").contains("restart because stale"),
        "{history:?}"
    );
    assert!(
        line("updated").contains("rollout 1: runs the new version"),
        "{history:?}"
    );
    assert!(line("occupied").contains("entered"), "{history:?}");
    rig.simulator.stop().await;
}

/// A phone someone else stops (status 8, 4.3.1) is learned out of service by phone sync,
/// and its history says so with the status; the watchdog leaves it alone, so no recovery
/// follows.
async fn a_phone_stopped_elsewhere_is_out_of_service_in_its_history_4_3_1(backend: Backend) {
    let fleet = crate::watchdog::start(backend, 2, &tokens(), |o| o.stopped = 1).await;
    let phone = fleet.simulator.phone_ids()[0].clone();
    let app = &fleet.app;
    app.wait_for_phone(&phone, |p| p["state"] == "out_of_service")
        .await;

    let admin = cookie_of(app, ADMIN).await;
    let page = get(app, &format!("/console/phones/{phone}"), Some(&admin)).await;
    let history = history_of(&page.text().await.unwrap());

    let marked = history.iter().find(|(b, _)| b == "out_of_service");
    let (_, line) = marked.unwrap_or_else(|| panic!("{history:?}"));
    assert!(line.contains("status 8 (stopped)"), "{line}");
    assert!(
        history.iter().all(|(b, _)| b != "recovering"),
        "{history:?}"
    );
    fleet.simulator.stop().await;
}

backend_tests!(
    wrong_tokens_at_the_sign_in_refuse_the_address_with_the_rate_limit_off,
    a_phone_stopped_elsewhere_is_out_of_service_in_its_history_4_3_1,
    a_phone_history_shows_its_session_recovery_and_rollout_in_order_5_3_7,
    a_page_asked_for_without_signing_in_leads_to_the_sign_in_form,
    signing_in_sets_an_http_only_strict_cookie_and_a_wrong_token_sets_none,
    signing_out_clears_the_cookie_and_needs_the_csrf_token,
    every_console_answer_carries_the_csp_and_assets_are_immutable,
    a_page_needs_its_scope_and_says_which_is_missing,
    only_a_token_that_may_operate_gets_the_restart_button,
    an_action_without_the_right_csrf_token_is_refused_and_audited,
    the_console_can_be_turned_off_or_served_on_its_own_address,
    sign_in_attempts_are_rate_limited_like_api_calls,
    a_rollout_is_paused_resumed_and_aborted_from_the_console_5_3_7,
);
