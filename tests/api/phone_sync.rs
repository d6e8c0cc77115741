//! `serve` keeps its phone table in step with the control plane, and allocation trusts it.

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_error};

const PROJECT: &str = "/v1/0a1b2c3d4e5f60718293a4b5c6d7e8f9/cloud-phone";

/// Answers the phone list (4.3.1) with `phones`, and one app, `game`, deployed on all of them
/// (5.1.3, 5.1.2).
async fn control_plane(phones: serde_json::Value) -> MockServer {
    let server = MockServer::start().await;
    let json = |body| ResponseTemplate::new(200).set_body_json(body);
    let deployed: Vec<_> = (phones.as_array().unwrap().iter())
        .map(|p| json!({"phone_id": p["phone_id"], "app_version_id": ""}))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!("{PROJECT}/phones")))
        .respond_with(json(json!({"phones": phones})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{PROJECT}/apps")))
        .respond_with(json(json!({"apps": [{"app_id": "game", "name": "game"}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{PROJECT}/apps/game/phones")))
        .respond_with(json(json!({"phones": deployed})))
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
    // Which apps are on which phones is written after the phones (5.1.2).
    let running = app
        .wait_for_phone("p-run", |p| p["apps"] != json!([]))
        .await;
    assert_eq!(running["apps"][0]["app_id"], "game");
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

/// With a control plane, a mint takes a phone that has the app (5.1.2). A mint for an app
/// phone sync found on no phone (a mistyped id, a game not deployed yet) is told apart from
/// a full fleet: 409 `CPHUB.APP_NOT_DEPLOYED`, where 503 `CPHUB.NO_FREE_PHONE` would send
/// the platform to retry or queue the player for good.
async fn a_mint_for_an_app_on_no_phone_is_refused_5_1_2(backend: Backend) {
    let server = control_plane(json!([
        {"phone_id": "p-run", "phone_name": "mobile-0001", "server_id": "srv-1", "status": 2},
    ]))
    .await;
    let app = TestApp::spawn_with(backend, &cph_settings(&server)).await;
    app.wait_for_phone("p-run", |p| p["apps"] != json!([]))
        .await;
    app.idle_phones(&["p-run"]).await;

    let res = app.mint(&json!({"app_id": "gmae", "user_id": "u-1"})).await;
    assert_error(res, 409, "CPHUB.APP_NOT_DEPLOYED").await;

    app.mint_ok(&json!({"app_id": "game", "user_id": "u-2"}))
        .await;
    let res = app.mint(&json!({"app_id": "game", "user_id": "u-3"})).await;
    assert_error(res, 503, "CPHUB.NO_FREE_PHONE").await;
    let join = json!({"app_id": "game", "user_id": "u-3"});
    assert_eq!(crate::queue::post_queue(&app, &join).await.status(), 201);
}

backend_tests!(
    phones_are_synced_and_only_running_ones_allocated,
    without_cph_settings_nothing_is_synced,
    a_mint_for_an_app_on_no_phone_is_refused_5_1_2,
);
