//! The circuit breaker: it opens after consecutive control-plane failures and stops calls,
//! closes again once a trial call succeeds, and ignores client errors.

use std::time::Duration;

use cphub::cph::CphError;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use super::{api, cps_error, job_answer, received, tweaked_client};

#[tokio::test]
async fn the_breaker_opens_after_consecutive_failures_and_stops_calls() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(cps_error(500))
        .expect(2)
        .mount(&server)
        .await;
    let client = tweaked_client(&server, &[("breaker_failures", "2"), ("max_attempts", "1")]);

    for _ in 0..2 {
        assert!(!client.breaker_open());
        let error = client.job("j-1").await.unwrap_err();
        assert!(
            matches!(&error, CphError::RetriesExhausted { attempts: 1, .. })
                || matches!(&error, CphError::Api { status: 500, .. }),
            "{error:?}"
        );
    }
    assert!(client.breaker_open());
    let error = client.job("j-1").await.unwrap_err();

    assert!(matches!(error, CphError::CircuitOpen), "{error:?}");
    assert!(client.breaker_open());
    assert_eq!(received(&server).await.len(), 2, "no request while open");
}

/// After `breaker_open_secs` one trial call goes out; when it succeeds the breaker closes
/// and calls flow again (the half-open steps themselves: `cph::retry`'s unit tests).
#[tokio::test]
async fn the_breaker_closes_again_when_the_control_plane_is_back() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(cps_error(500))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(job_answer(2))
        .mount(&server)
        .await;
    let tweaks = [
        ("breaker_failures", "2"),
        ("max_attempts", "1"),
        ("breaker_open_secs", "1"),
    ];
    let client = tweaked_client(&server, &tweaks);
    for _ in 0..2 {
        client.job("j-1").await.unwrap_err();
    }
    assert!(client.breaker_open());

    tokio::time::sleep(Duration::from_millis(1100)).await;

    client
        .job("j-1")
        .await
        .expect("the trial call goes through");
    assert!(!client.breaker_open());
    client.job("j-1").await.expect("closed: calls flow again");
    assert_eq!(received(&server).await.len(), 4);
}

#[tokio::test]
async fn client_errors_do_not_open_the_breaker() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-1")))
        .respond_with(cps_error(404))
        .expect(3)
        .mount(&server)
        .await;
    let client = tweaked_client(&server, &[("breaker_failures", "2"), ("max_attempts", "1")]);

    for _ in 0..3 {
        let error = client.job("j-1").await.unwrap_err();
        assert!(
            matches!(error, CphError::Api { status: 404, .. }),
            "{error:?}"
        );
    }

    assert!(!client.breaker_open());
}
