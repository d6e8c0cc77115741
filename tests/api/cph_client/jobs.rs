//! Following jobs (chapter 4.4.1): polling until the job ends, successfully or not, and
//! giving up at the deadline.

use std::time::{Duration, Instant};

use cphub::cph::CphError;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{JOB_ID, api, client, cps_code, cps_error, job_answer, received, tweaked_client};

#[tokio::test]
async fn follow_job_polls_until_the_job_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(job_answer(1))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(job_answer(2))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).follow_job(JOB_ID).await.unwrap();

    assert_eq!(job.job_id, JOB_ID);
    assert_eq!(job.status, 2);
}

/// 7.2: CPS.0003 ("System error … Try again later") while polling says nothing about the
/// job: the follow goes on, even past the call's own retries (`max_attempts` 2 here).
#[tokio::test]
async fn follow_job_polls_on_through_cps_0003_7_2() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(cps_code(400, "CPS.0003"))
        .up_to_n_times(5)
        .expect(5)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(job_answer(2))
        .expect(1)
        .mount(&server)
        .await;

    let client = tweaked_client(
        &server,
        &[("max_attempts", "2"), ("breaker_failures", "100")],
    );
    let job = client.follow_job(JOB_ID).await.unwrap();

    assert_eq!(job.status, 2);
}

/// 5xx answers while polling open the circuit breaker, which then refuses calls locally
/// for `breaker_open_secs`: a poll never sent says nothing of the job either (4.4.1), so the
/// follow goes on until the breaker lets a poll through and the job is read done. It used
/// to end at the first refusal, and a recovery whose job went on running was logged as an
/// error.
#[tokio::test]
async fn follow_job_polls_on_while_the_circuit_breaker_is_open_4_4_1() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(cps_error(500))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(job_answer(2))
        .expect(1)
        .mount(&server)
        .await;
    let tweaks = [
        ("max_attempts", "1"),
        ("breaker_failures", "2"),
        ("breaker_open_secs", "1"),
        ("job_deadline_secs", "10"),
    ];

    let job = tweaked_client(&server, &tweaks)
        .follow_job(JOB_ID)
        .await
        .unwrap();

    assert_eq!(job.status, 2);
}

#[tokio::test]
async fn follow_job_returns_a_failed_job_with_its_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "job_id": JOB_ID, "status": -1, "phone_id": "1234567b8bab40ffb711234cb80d0234",
            "begin_time": "2017-10-25T00:00:00Z", "end_time": "2017-10-25T00:00:30Z",
            "error_code": "CPS0005", "error_msg": "Phone not found."
        })))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).follow_job(JOB_ID).await.unwrap();

    assert_eq!(job.status, -1);
    assert!(job.is_finished());
    assert_eq!(job.error_code.as_deref(), Some("CPS0005"));
    assert_eq!(job.error_msg.as_deref(), Some("Phone not found."));
}

#[tokio::test]
async fn follow_job_gives_up_at_the_deadline() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(job_answer(1))
        .mount(&server)
        .await;
    let client = tweaked_client(
        &server,
        &[("job_deadline_secs", "1"), ("job_poll_interval_ms", "50")],
    );
    let started = Instant::now();

    let error = client.follow_job(JOB_ID).await.unwrap_err();

    let took = started.elapsed();
    match error {
        CphError::JobDeadline { job_id, waited } => {
            assert_eq!(job_id, JOB_ID);
            assert!(
                waited >= Duration::from_millis(900) && waited <= took,
                "waited {waited:?}"
            );
        }
        other => panic!("expected JobDeadline, got {other:?}"),
    }
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let polls = received(&server).await.len();
    assert!((10..=21).contains(&polls), "{polls} polls at 50 ms in 1 s");
}
