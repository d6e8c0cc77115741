//! Retries and timeouts: a GET is repeated while repeating is safe; a POST is resent only
//! when the control plane cannot have processed it (429, 503, or nothing sent at all), never
//! after a 500 or a timeout, whose outcome is unknown. Chapter 7.1.1's error bodies,
//! `Retry-After`, and `cph.max_attempts`.

use std::time::{Duration, Instant};

use cphub::cph::{CphError, PhoneFilter, PhoneItem};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use super::verifier::assert_signed;
use super::{
    AKSK_AUTH, JOB_ID, REFERENCE_BATCH_ANSWER, REFERENCE_JOB, REFERENCE_STOP_ANSWER, api, client,
    client_from, cph_toml_for, cps_error, json_answer, received,
};

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_get_answering_503_is_retried_until_it_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(cps_error(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).job(JOB_ID).await.unwrap();

    assert_eq!(job.status, 2);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_signed(request, &server);
    }
}

#[tokio::test]
async fn a_429_with_retry_after_zero_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(cps_error(429).insert_header("Retry-After", "0"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).job(JOB_ID).await.unwrap();

    assert_eq!(job.job_id, JOB_ID);
}

#[tokio::test]
async fn a_post_answering_429_is_resent_after_its_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .respond_with(cps_error(429).insert_header("Retry-After", "1"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .respond_with(json_answer(200, REFERENCE_STOP_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let started = Instant::now();

    let outcome = client(&server).stop(&["p-1".into()]).await.unwrap();

    assert_eq!(outcome.jobs().count(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}, less than Retry-After (the backoff alone is at most 5 ms)",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_post_answering_503_is_resent_because_it_was_not_processed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(cps_error(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client(&server).restart(&["p-1".into()]).await.unwrap();

    assert_eq!(outcome.items.len(), 2);
    let requests = received(&server).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body, "the same body resent");
    assert_signed(&requests[1], &server);
}

#[tokio::test]
async fn a_post_answering_500_is_not_resent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-reset")))
        .respond_with(cps_error(500))
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server)
        .reset(vec![PhoneItem {
            phone_id: "p-1".into(),
            property: None,
        }])
        .await
        .unwrap_err();

    assert!(
        matches!(error, CphError::Api { status: 500, .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_get_that_keeps_failing_gives_up_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones")))
        .respond_with(cps_error(503))
        .expect(4)
        .mount(&server)
        .await;

    let error = client(&server)
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap_err();

    match error {
        CphError::RetriesExhausted { attempts: 4, last } => {
            assert!(
                matches!(*last, CphError::Api { status: 503, .. }),
                "{last:?}"
            );
        }
        other => panic!("expected RetriesExhausted after 4 attempts, got {other:?}"),
    }
}

#[tokio::test]
async fn a_post_that_could_not_be_sent_is_retried() {
    // A port nobody listens on: every attempt is refused before anything is sent.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = client_from(&cph_toml_for(&endpoint, &[], AKSK_AUTH));

    let error = client.restart(&["p-1".into()]).await.unwrap_err();

    match error {
        CphError::RetriesExhausted { attempts: 4, last } => {
            assert!(matches!(*last, CphError::Unreachable(_)), "{last:?}");
        }
        other => panic!("expected RetriesExhausted after 4 attempts, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_post_that_timed_out_is_not_resent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(
            json_answer(200, REFERENCE_BATCH_ANSWER).set_delay(Duration::from_millis(1500)),
        )
        .expect(1)
        .mount(&server)
        .await;

    let error = client(&server).restart(&["p-1".into()]).await.unwrap_err();

    assert!(
        matches!(&error, CphError::OutcomeUnknown(e) if e.is_timeout()),
        "{error:?}"
    );
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn a_get_that_timed_out_is_repeated() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB).set_delay(Duration::from_millis(1500)))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).job(JOB_ID).await.unwrap();

    assert_eq!(job.status, 2);
}
