//! Issue #20, callback sources: `callbacks.allowed_networks` refuses callbacks from other
//! addresses with `403 CPHUB.SOURCE_REFUSED`, counted; `server.trusted_proxies` decides whose
//! `X-Forwarded-For` names the client. The test client always connects from 127.0.0.1.

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_acknowledged, assert_error, enter, heartbeat};
use crate::metrics::{scrape, value};

const REFUSED: &str = "cphub_callbacks_refused_total";

async fn send_from(app: &TestApp, forwarded_for: Option<&str>) -> reqwest::Response {
    let body = heartbeat("p-1", None, "2026-11-28T10:00:00Z").to_string();
    let mut request = app
        .client
        .post(format!("{}/cph/heartbeat", app.address))
        .header("content-type", "application/json")
        .body(body);
    if let Some(addr) = forwarded_for {
        request = request.header("x-forwarded-for", addr);
    }
    request.send().await.unwrap()
}

async fn a_callback_from_an_allowed_network_is_accepted(backend: Backend) {
    let app =
        TestApp::spawn_with(backend, "[callbacks]\nallowed_networks = [\"127.0.0.0/8\"]").await;

    assert_acknowledged(send_from(&app, None).await).await;
    let body = enter("s-1", "p-1", "2026-11-28T10:00:00Z").to_string();
    assert_acknowledged(app.post("/cph/events", body).await).await;
    assert_eq!(value(&scrape(&app).await, REFUSED), 0.0);
}

async fn a_callback_from_elsewhere_is_refused_and_counted(backend: Backend) {
    let app =
        TestApp::spawn_with(backend, "[callbacks]\nallowed_networks = [\"10.0.0.0/8\"]").await;
    assert_eq!(scrape(&app).await.get(REFUSED), Some(&0.0), "exported at 0");

    assert_error(send_from(&app, None).await, 403, "CPHUB.SOURCE_REFUSED").await;
    let body = enter("s-1", "p-1", "2026-11-28T10:00:00Z").to_string();
    assert_error(
        app.post("/cph/events", body).await,
        403,
        "CPHUB.SOURCE_REFUSED",
    )
    .await;

    assert_eq!(value(&scrape(&app).await, REFUSED), 2.0);
    assert!(
        app.session("s-1").await.is_none(),
        "the refused enter was not applied"
    );
    // Only the callbacks are fenced: the service routes still answer.
    assert_eq!(app.get("/livez", None).await.status(), 200);
}

/// A client outside the allowlist cannot get in by claiming an allowed address: its peer
/// (127.0.0.1) is not a trusted proxy, so its `X-Forwarded-For` is ignored.
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        "[callbacks]\nallowed_networks = [\"10.0.0.0/8\"]\n\
         [server]\ntrusted_proxies = [\"192.0.2.0/24\"]",
    )
    .await;

    let res = send_from(&app, Some("10.1.2.3")).await;
    assert_error(res, 403, "CPHUB.SOURCE_REFUSED").await;
}

/// Through a trusted proxy (127.0.0.1/32 here) the right-most untrusted address of
/// `X-Forwarded-For` is the client, whatever the client wrote before it.
async fn a_trusted_proxys_forwarded_for_names_the_client(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        "[callbacks]\nallowed_networks = [\"10.0.0.0/8\"]\n\
         [server]\ntrusted_proxies = [\"127.0.0.1/32\"]",
    )
    .await;

    assert_acknowledged(send_from(&app, Some("10.1.2.3")).await).await;
    let spoofed = send_from(&app, Some("10.1.2.3, 198.51.100.7")).await;
    assert_error(spoofed, 403, "CPHUB.SOURCE_REFUSED").await;
    assert_eq!(value(&scrape(&app).await, REFUSED), 1.0);
}

backend_tests!(
    a_callback_from_an_allowed_network_is_accepted,
    a_callback_from_elsewhere_is_refused_and_counted,
    a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored,
    a_trusted_proxys_forwarded_for_names_the_client,
);
