//! `serve` keeps its phone table in step with the control plane, and allocation trusts it.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_error};

async fn control_plane(phones: serde_json::Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(
            "/v1/0a1b2c3d4e5f60718293a4b5c6d7e8f9/cloud-phone/phones",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"phones": phones})))
        .mount(&server)
        .await;
    server
}

fn cph_settings(server: &MockServer) -> String {
    format!(
        "[cph]\nendpoint = \"{}\"\nproject_id = \"0a1b2c3d4e5f60718293a4b5c6d7e8f9\"\n\
         [cph.auth]\nak = \"AK\"\nsk = \"SK\"\n",
        server.uri()
    )
}

async fn phones_are_synced_and_only_running_ones_allocated(backend: Backend) {
    let server = control_plane(json!([
        {"phone_id": "p-run", "phone_name": "mobile-0001", "server_id": "srv-1", "status": 2},
        {"phone_id": "p-abnormal", "phone_name": "mobile-0002", "server_id": "srv-1", "status": -7},
    ]))
    .await;

    let app = TestApp::spawn_with(backend, &cph_settings(&server)).await;

    let abnormal = app
        .wait_for_phone("p-abnormal", |p| p["cph_status"] == -7)
        .await;
    assert_eq!(abnormal["phone_name"], "mobile-0002");
    assert_eq!(abnormal["server_id"], "srv-1");
    assert!(abnormal["cph_synced_at"].is_string());
    app.idle_phones(&["p-run", "p-abnormal"]).await;
    let minted = app
        .mint_ok(&json!({"app_id": "game", "user_id": "u-1"}))
        .await;
    assert_eq!(minted["phone_id"], "p-run");
    let res = app.mint(&json!({"app_id": "game", "user_id": "u-2"})).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
}

async fn without_cph_settings_nothing_is_synced(backend: Backend) {
    let server = control_plane(json!([{"phone_id": "p-1", "status": 2}])).await;

    let app = TestApp::spawn(backend).await;
    app.idle_phones(&["p-2"]).await;

    assert_eq!(app.phone("p-1").await, None);
    assert!(server.received_requests().await.unwrap().is_empty());
}

backend_tests!(
    phones_are_synced_and_only_running_ones_allocated,
    without_cph_settings_nothing_is_synced
);
