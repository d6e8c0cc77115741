//! `/livez`, `/readyz`, `/healthz`, and the answers for routes that do not exist.

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error};

async fn livez_readyz_and_healthz_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for path in ["/livez", "/readyz", "/healthz"] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["x-request-id"].len(), 32);
    }
}

/// A database that answers but lacks the binary's migrations (`migrate_on_start` off, no
/// `cphub migrate` yet) is not ready, yet the process is alive: restarting it would not help.
async fn readyz_refuses_an_unmigrated_database_while_livez_answers(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[database]\nmigrate_on_start = false").await;

    assert_error(app.get("/readyz", None).await, 503, "CPHUB.UNAVAILABLE").await;
    for path in ["/livez", "/healthz"] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(
            res.json::<serde_json::Value>().await.unwrap()["status"],
            "ok"
        );
    }

    let status = crate::binary::cphub(&app.db)
        .arg("migrate")
        .status()
        .unwrap();
    assert!(status.success());
    let ready = app.get("/readyz", None).await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<serde_json::Value>().await.unwrap()["status"],
        "ready"
    );
}

async fn unknown_routes_and_methods_get_error_bodies(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    assert_error(app.get("/nowhere", None).await, 404, "CPHUB.NOT_FOUND").await;
    assert_error(
        app.get("/cph/events", None).await,
        405,
        "CPHUB.METHOD_NOT_ALLOWED",
    )
    .await;
    assert_error(
        app.get("/cph/heartbeat", None).await,
        405,
        "CPHUB.METHOD_NOT_ALLOWED",
    )
    .await;
}

/// RFC 9110: a path that exists answers a method it lacks with 405 and `Allow`, on every
/// group of routes (a 404 would say the path does not exist).
async fn a_method_a_path_lacks_is_a_405_naming_those_it_has(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for (method, path, allow) in [
        ("TRACE", "/healthz", "GET"),
        ("POST", "/metrics", "GET"),
        ("PUT", "/cph/sign-check", "POST"),
        ("DELETE", "/api/v1/sessions", "GET, POST"),
        ("PATCH", "/api/v1/phones/p-1", "GET"),
        ("GET", "/api/v1/phones/p-1/restart", "POST"),
    ] {
        let res = app
            .client
            .request(method.parse().unwrap(), format!("{}{path}", app.address))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.headers().get("allow").map(|v| v.to_str().unwrap()),
            Some(allow),
            "{method} {path}"
        );
        assert_error(res, 405, "CPHUB.METHOD_NOT_ALLOWED").await;
    }
    // Both methods of a shared path still reach their handlers.
    assert_eq!(app.get("/api/v1/sessions", Some(TOKEN)).await.status(), 200);
}

async fn callbacks_move_with_the_base_path(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[callbacks]\nbase_path = \"/hooks/Zq3xv9TqW\"").await;

    let body = crate::helpers::enter("s-1", "p-1", "2026-11-28T10:00:00Z").to_string();
    crate::helpers::assert_acknowledged(app.post("/hooks/Zq3xv9TqW/events", body.clone()).await)
        .await;
    assert_error(app.post("/cph/events", body).await, 404, "CPHUB.NOT_FOUND").await;
}

backend_tests!(
    livez_readyz_and_healthz_answer,
    readyz_refuses_an_unmigrated_database_while_livez_answers,
    unknown_routes_and_methods_get_error_bodies,
    a_method_a_path_lacks_is_a_405_naming_those_it_has,
    callbacks_move_with_the_base_path,
);
