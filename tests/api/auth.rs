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

/// Guessing tokens is slowed per client address: the per-token limit cannot count a wrong
/// token, which has no name. Past `api.auth_failures_per_minute` wrong tokens (3 here), every
/// authentication from the address is refused 429 for the rest of the minute, the right
/// token too (or a guesser would ignore the refusals until one got in), and so is the
/// console's sign-in. Requests without a token are not guesses and are not counted.
async fn wrong_tokens_past_the_limit_refuse_the_address_for_the_minute(backend: Backend) {
    let app = TestApp::spawn_with(backend, "[api]\nauth_failures_per_minute = 3\n").await;
    let path = ROUTES[1];
    for _ in 0..5 {
        assert_error(app.get(path, None).await, 401, "CPHUB.UNAUTHORIZED").await;
    }
    assert_eq!(
        app.get(path, Some(TOKEN)).await.status(),
        404,
        "no token is no guess"
    );
    for guess in ["guess-1", "guess-2", "guess-3"] {
        assert_error(app.get(path, Some(guess)).await, 401, "CPHUB.UNAUTHORIZED").await;
    }

    let refused = app.get(path, Some(TOKEN)).await;

    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_error(refused, 429, "CPHUB.RATE_LIMITED").await;
    assert_error(
        app.get(path, Some("guess-4")).await,
        429,
        "CPHUB.RATE_LIMITED",
    )
    .await;
}

backend_tests!(
    wrong_tokens_past_the_limit_refuse_the_address_for_the_minute,
    operator_routes_refuse_missing_and_wrong_tokens,
    with_no_tokens_configured_everything_is_refused,
    any_configured_token_is_accepted,
    an_invalid_id_in_the_path_is_a_400,
);
