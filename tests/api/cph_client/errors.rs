//! Errors that are answers, not faults: per-phone errors inside a 200 (chapter 4.3.5's
//! example), chapter 7.1.1's error bodies turned into typed errors, and a 2xx whose body is
//! garbage. None of them is sent again.

use cphub::cph::CphError;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{
    REFERENCE_BATCH_ANSWER, REFERENCE_ERROR, REFERENCE_JOB_LIST, api, client, cps_code, cps_error,
    json_answer,
};

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

/// 4.4.2's example writes "no error" as `"error_code": ""`: a restart that is running fine
/// must not be counted as refused (before: `Some("")` was a failure).
#[tokio::test]
async fn empty_error_fields_in_a_2xx_mean_no_error_4_4_2() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(json_answer(
            201,
            r#"{"request_id": "6837531fd3f54550927b930180a706bf", "jobs": [
                {"phone_id": "1234567b8bab40ffb711234cb80d0234", "job_id": "1564567b8bab40f34711234cb80d0123",
                 "error_code": "", "error_msg": ""},
                {"phone_id": "1678567b8bab40f93711234cb80d0764", "job_id": "1564567b8bab40f34711234cb80d5678",
                 "error_code": null, "error_msg": null}]}"#,
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("jobs")))
        .respond_with(json_answer(200, REFERENCE_JOB_LIST))
        .mount(&server)
        .await;
    let client = client(&server);

    let outcome = client
        .restart(&["1234567b8bab40ffb711234cb80d0234".into()])
        .await
        .unwrap();
    assert_eq!(outcome.failures().count(), 0, "{:?}", outcome.items);
    assert_eq!(outcome.jobs().count(), 2);

    let jobs = client
        .jobs_by_request("6a63a18b8bab40ffb71ebd9cb80d0085")
        .await
        .unwrap();
    assert_eq!(jobs[0].error_code.as_deref(), Some("CPS0005"));
    assert_eq!((&jobs[1].error_code, &jobs[1].error_msg), (&None, &None));
}

/// 7.2: CPS.0006 (arrears), CPS.0007 (frozen) and CPS.0008 (unverified) are the account's
/// problem: asked once, never retried, and recognisable as such.
#[tokio::test]
async fn account_level_errors_are_not_retried_and_are_classified_7_2() {
    for code in ["CPS.0006", "CPS.0007", "CPS.0008"] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(api("phones")))
            .respond_with(cps_code(400, code))
            .expect(1)
            .mount(&server)
            .await;
        let error = client(&server)
            .list_phones(&Default::default())
            .await
            .unwrap_err();
        assert!(error.is_account_level(), "{code}: {error:?}");
        assert!(!error.is_transient(), "{code}");
        assert_eq!(error.code(), Some(code));
        server.verify().await;
    }
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(cps_code(400, "CPS.0001"))
        .mount(&server)
        .await;
    let error = client(&server).job("j").await.unwrap_err();
    assert!(!error.is_account_level(), "{error:?}");
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
