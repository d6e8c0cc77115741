//! `/healthz`, `/readyz`, and the answers for routes that do not exist.

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_error};

async fn healthz_and_readyz_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for path in ["/healthz", "/readyz"] {
        let res = app.get(path, None).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["x-request-id"].len(), 32);
    }
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

async fn callbacks_move_with_the_base_path(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[callbacks]\nbase_path = \"/hooks/Zq3xv9TqW\"").await;

    let body = crate::helpers::enter("s-1", "p-1", "2026-11-28T10:00:00Z").to_string();
    crate::helpers::assert_acknowledged(app.post("/hooks/Zq3xv9TqW/events", body.clone()).await)
        .await;
    assert_error(app.post("/cph/events", body).await, 404, "CPHUB.NOT_FOUND").await;
}

backend_tests!(
    healthz_and_readyz_answer,
    unknown_routes_and_methods_get_error_bodies,
    callbacks_move_with_the_base_path,
);
