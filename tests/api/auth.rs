//! The operator API needs a bearer token from `api.tokens`.

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error, enter};

const ROUTES: [&str; 2] = ["/api/v1/sessions/s-1", "/api/v1/phones/p-1"];

async fn operator_routes_refuse_missing_and_wrong_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;

    for path in ROUTES {
        let res = app.get(path, None).await;
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
        assert_error(res, 401, "CPHUB.UNAUTHORIZED").await;
        assert_error(
            app.get(path, Some("wrong")).await,
            401,
            "CPHUB.UNAUTHORIZED",
        )
        .await;
        let almost = &TOKEN[..TOKEN.len() - 1];
        assert_error(app.get(path, Some(almost)).await, 401, "CPHUB.UNAUTHORIZED").await;
        let basic = app
            .client
            .get(format!("{}{path}", app.address))
            .basic_auth("operator", Some(TOKEN))
            .send()
            .await
            .unwrap();
        assert_error(basic, 401, "CPHUB.UNAUTHORIZED").await;
        assert_eq!(app.get(path, Some(TOKEN)).await.status(), 200, "{path}");
    }
}

async fn with_no_tokens_configured_everything_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[api]\ntokens = []").await;

    for path in ROUTES {
        assert_error(app.get(path, Some(TOKEN)).await, 401, "CPHUB.UNAUTHORIZED").await;
        assert_error(app.get(path, Some("")).await, 401, "CPHUB.UNAUTHORIZED").await;
    }
}

async fn any_configured_token_is_accepted(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[api]\ntokens = \"first-token,second-token\"").await;

    assert_error(
        app.get("/api/v1/sessions/s-1", Some("first-token")).await,
        404,
        "CPHUB.NOT_FOUND",
    )
    .await;
    assert_error(
        app.get("/api/v1/sessions/s-1", Some("second-token")).await,
        404,
        "CPHUB.NOT_FOUND",
    )
    .await;
}

async fn an_invalid_id_in_the_path_is_a_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let long = "x".repeat(65);
    assert_error(
        app.get(&format!("/api/v1/sessions/{long}"), Some(TOKEN))
            .await,
        400,
        "CPHUB.INVALID_FIELD",
    )
    .await;
    assert_error(
        app.get("/api/v1/phones/a%20b", Some(TOKEN)).await,
        400,
        "CPHUB.INVALID_FIELD",
    )
    .await;
}

backend_tests!(
    operator_routes_refuse_missing_and_wrong_tokens,
    with_no_tokens_configured_everything_is_refused,
    any_configured_token_is_accepted,
    an_invalid_id_in_the_path_is_a_400,
);
