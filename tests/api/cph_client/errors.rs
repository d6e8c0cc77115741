//! Errors that are answers, not faults: per-phone errors inside a 200 (chapter 4.3.5's
//! example), chapter 7.1.1's error bodies turned into typed errors, and a 2xx whose body is
//! garbage. None of them is sent again.

use cphub::cph::CphError;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{REFERENCE_BATCH_ANSWER, REFERENCE_ERROR, api, client, cps_error, json_answer};

// ---------------------------------------------------------------------------------------
// Per-item failures inside a 200
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn per_phone_errors_inside_a_200_are_failures_not_jobs() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client(&server)
        .restart(&[
            "1234567b8bab40ffb711234cb80d0234".into(),
            "1678567b8bab40f93711234cb80d0764".into(),
        ])
        .await
        .unwrap();

    let failures: Vec<_> = outcome.failures().collect();
    assert_eq!(failures.len(), 1);
    assert_eq!(
        failures[0].phone_id.as_deref(),
        Some("1678567b8bab40f93711234cb80d0764")
    );
    assert_eq!(failures[0].error_code.as_deref(), Some("CPS.0004"));
    assert_eq!(
        failures[0].error_msg.as_deref(),
        Some("Parameter: phone_id is invalid.")
    );
    assert_eq!(failures[0].job_id, None);
    assert_eq!(
        outcome.jobs().collect::<Vec<_>>(),
        [(
            "1234567b8bab40ffb711234cb80d0234",
            "1564567b8bab40f34711234cb80d0123"
        )]
    );
}

// ---------------------------------------------------------------------------------------
// Error bodies
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_error_body_becomes_a_typed_api_error_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones/p-missing")))
        .respond_with(cps_error(400))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server).phone("p-missing").await.unwrap_err();

    match error {
        CphError::Api {
            status: 400,
            ref code,
            ref message,
            retry_after: None,
            ..
        } => {
            assert_eq!(code, "CPS.0005");
            assert_eq!(message, "Phone is not found.");
        }
        other => panic!("expected a 400 CPS.0005 API error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_reference_error_body_keeps_its_request_id() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .respond_with(json_answer(403, REFERENCE_ERROR))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server)
        .stop(&["1234567b8bab40ffb711234cb80d0234".into()])
        .await
        .unwrap_err();

    match error {
        CphError::Api {
            status: 403,
            code,
            message,
            request_id,
            ..
        } => {
            assert_eq!(code, "CPS.0001");
            assert_eq!(message, "No permission to request resources.");
            assert_eq!(
                request_id.as_deref(),
                Some("aad0860d089c482b943971f802a6718e")
            );
        }
        other => panic!("expected a 403 CPS.0001 API error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_without_a_json_body_is_named_after_its_status() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(ResponseTemplate::new(404).set_body_string("Not Found"))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server).job("j-1").await.unwrap_err();

    assert!(
        matches!(&error, CphError::Api { status: 404, code, message, .. }
            if code == "HTTP.404" && message == "Not Found"),
        "{error:?}"
    );
}

/// A 2xx whose body is garbage (a proxy's page, a truncated answer, the wrong shape, a
/// nesting bomb) is a typed error, sent once — repeating it would not change the answer —
/// and never a panic.
#[tokio::test]
async fn a_2xx_with_garbage_is_a_bad_response_sent_once() {
    let server = MockServer::start().await;
    let bodies = [
        String::new(),
        "<html>502 Bad Gateway</html>".into(),
        r#"{"job_id": "j-1", "status": "#.into(),
        r#"{"job_id": ["j-1"], "status": "running"}"#.into(),
        "[".repeat(100_000),
    ];
    for body in bodies {
        server.reset().await;
        Mock::given(method("GET"))
            .and(path(api("jobs/j-1")))
            .respond_with(json_answer(200, &body))
            .expect(1)
            .mount(&server)
            .await;

        let error = client(&server).job("j-1").await.unwrap_err();

        assert!(matches!(error, CphError::BadResponse(_)), "{error:?}");
        server.verify().await;
    }
}
