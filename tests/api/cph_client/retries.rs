//! Retries and timeouts: a GET is repeated while repeating is safe; a POST is resent only
//! when the control plane cannot have processed it (429, 400 CPS.0003 of 7.2, or nothing
//! sent at all), never after a 500/502/503/504 (7.1.2) or a timeout, whose outcome is
//! unknown: a lost answer that names its request is reconciled from its jobs (4.4.2).
//! Chapter 7.1.1's error bodies, `Retry-After`, and `cph.max_attempts`.
//!
//! One table, `retry_cases!`, one `#[tokio::test]` per row so the rows run in parallel
//! (some wait a second or more) and a failure names its row. Each row says what the control
//! plane answers, which call is made, how many requests arrive and how the call ends; every
//! row also checks that each request is signed and carries the same body.

use std::time::{Duration, Instant};

use cphub::cph::{BatchOutcome, CphClient, CphError, Job, Phone, PhoneFilter, PhoneItem};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::verifier::assert_signed;
use super::{
    AKSK_AUTH, JOB_ID, REFERENCE_BATCH_ANSWER, REFERENCE_JOB, REFERENCE_JOB_LIST,
    REFERENCE_STOP_ANSWER, api, client, client_from, cph_toml_for, cps_code, cps_error,
    json_answer, received, tweaked_client,
};

/// The client call a row makes.
#[derive(Debug, Clone, Copy)]
enum Call {
    /// `job(JOB_ID)`: GET `jobs/{JOB_ID}`.
    Job,
    /// `list_phones` without a filter: GET `phones`.
    ListPhones,
    /// `restart(["p-1"])`: POST `phones/batch-restart`.
    Restart,
    /// `reset` of `p-1` without a property: POST `phones/batch-reset`.
    Reset,
    /// `stop(["p-1"])`: POST `phones/batch-stop`.
    Stop,
}

/// What a call returned when it succeeded.
#[derive(Debug)]
enum Answer {
    Job(Job),
    Phones(Vec<Phone>),
    Batch(BatchOutcome),
}

impl Call {
    /// The method and path the call's requests go to.
    fn route(self) -> (&'static str, String) {
        match self {
            Call::Job => ("GET", api(&format!("jobs/{JOB_ID}"))),
            Call::ListPhones => ("GET", api("phones")),
            Call::Restart => ("POST", api("phones/batch-restart")),
            Call::Reset => ("POST", api("phones/batch-reset")),
            Call::Stop => ("POST", api("phones/batch-stop")),
        }
    }

    async fn make(self, client: &CphClient) -> Result<Answer, CphError> {
        match self {
            Call::Job => client.job(JOB_ID).await.map(Answer::Job),
            Call::ListPhones => client
                .list_phones(&PhoneFilter::default())
                .await
                .map(Answer::Phones),
            Call::Restart => client.restart(&["p-1".into()]).await.map(Answer::Batch),
            Call::Reset => client
                .reset(vec![PhoneItem {
                    phone_id: "p-1".into(),
                    property: None,
                }])
                .await
                .map(Answer::Batch),
            Call::Stop => client.stop(&["p-1".into()]).await.map(Answer::Batch),
        }
    }
}

/// What the control plane does.
enum ControlPlane {
    /// Each reply `n` times, in order: every reply but the last is used up after its `n`
    /// requests; the last one answers for good. Each must receive exactly its `n`.
    Replies(Vec<(ResponseTemplate, u64)>),
    /// Nobody listens on the port: every attempt is refused before anything is sent.
    Refusing,
}

/// The last error inside `CphError::RetriesExhausted`.
#[derive(Debug)]
enum Last {
    Api(u16),
    Unreachable,
}

/// How the call ends.
#[derive(Debug)]
enum Outcome {
    /// The reference's job (chapter 4.4.1): `JOB_ID`, status 2.
    Job,
    /// A batch answer with `items` entries of which `jobs` are jobs.
    Batch { items: usize, jobs: usize },
    /// `CphError::Api` with this HTTP status.
    Api(u16),
    /// `CphError::RetriesExhausted` after `attempts`, the last error being `last`.
    Exhausted { attempts: u32, last: Last },
    /// `CphError::OutcomeUnknown` from a timeout.
    TimedOut,
    /// `CphError::AnswerLost` with this status and no request id to reconcile with.
    Lost(u16),
}

/// One row of the table.
struct Case {
    control_plane: ControlPlane,
    call: Call,
    /// Requests the control plane receives in all.
    requests: usize,
    outcome: Outcome,
    /// The call takes at least this long (a `Retry-After` honoured).
    waits_at_least: Duration,
    /// `[cph]` keys the client has besides the tests' tiny backoffs (`cph_toml`).
    tweaks: &'static [(&'static str, &'static str)],
}

impl Case {
    async fn run(self, case: &str) {
        let (verb, route) = self.call.route();
        let (client, server) = match self.control_plane {
            ControlPlane::Replies(replies) => {
                let server = MockServer::start().await;
                let last = replies.len() - 1;
                for (i, (reply, times)) in replies.into_iter().enumerate() {
                    let mock = Mock::given(method(verb))
                        .and(path(route.as_str()))
                        .respond_with(reply);
                    let mock = if i < last {
                        mock.up_to_n_times(times)
                    } else {
                        mock
                    };
                    mock.expect(times).mount(&server).await;
                }
                (tweaked_client(&server, self.tweaks), Some(server))
            }
            ControlPlane::Refusing => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let endpoint = format!("http://{}", listener.local_addr().unwrap());
                drop(listener);
                (
                    client_from(&cph_toml_for(&endpoint, self.tweaks, AKSK_AUTH)),
                    None,
                )
            }
        };
        let started = Instant::now();

        let result = self.call.make(&client).await;

        let waited = started.elapsed();
        check(case, result, &self.outcome);
        assert!(
            waited >= self.waits_at_least,
            "{case}: waited {waited:?}, less than Retry-After (the backoff alone is at most 5 ms)"
        );
        let requests = match &server {
            Some(server) => received(server).await,
            None => Vec::new(),
        };
        assert_eq!(requests.len(), self.requests, "{case}: requests received");
        if let Some(server) = &server {
            for request in &requests {
                assert_signed(request, server);
                assert_eq!(
                    request.body, requests[0].body,
                    "{case}: the same body resent"
                );
            }
            server.verify().await;
        }
    }
}

fn check(case: &str, result: Result<Answer, CphError>, outcome: &Outcome) {
    match (outcome, result) {
        (Outcome::Job, Ok(Answer::Job(job))) => {
            assert_eq!(job.job_id, JOB_ID, "{case}");
            assert_eq!(job.status, 2, "{case}");
        }
        (Outcome::Batch { items, jobs }, Ok(Answer::Batch(batch))) => {
            assert_eq!(batch.items.len(), *items, "{case}: items");
            assert_eq!(batch.jobs().count(), *jobs, "{case}: jobs");
        }
        (Outcome::Api(status), Err(error)) => assert!(
            matches!(error, CphError::Api { status: s, .. } if s == *status),
            "{case}: expected a {status} API error, got {error:?}"
        ),
        (Outcome::Exhausted { attempts, last }, Err(error)) => match error {
            CphError::RetriesExhausted {
                attempts: made,
                last: error,
            } if made == *attempts => match last {
                Last::Api(status) => assert!(
                    matches!(*error, CphError::Api { status: s, .. } if s == *status),
                    "{case}: {error:?}"
                ),
                Last::Unreachable => assert!(
                    matches!(*error, CphError::Unreachable(_)),
                    "{case}: {error:?}"
                ),
            },
            other => {
                panic!("{case}: expected RetriesExhausted after {attempts} attempts, got {other:?}")
            }
        },
        (Outcome::Lost(status), Err(error)) => assert!(
            matches!(&error, CphError::AnswerLost { status: s, request_id: None, .. } if s == status)
                && error.is_outcome_unknown(),
            "{case}: {error:?}"
        ),
        (Outcome::TimedOut, Err(error)) => assert!(
            matches!(&error, CphError::OutcomeUnknown(e) if e.is_timeout()),
            "{case}: {error:?}"
        ),
        (outcome, Ok(Answer::Phones(phones))) => {
            panic!("{case}: expected {outcome:?}, got {} phones", phones.len())
        }
        (outcome, result) => panic!("{case}: expected {outcome:?}, got {result:?}"),
    }
}

/// `name: Case { ... };` rows, each becoming `#[tokio::test] async fn name()`.
macro_rules! retry_cases {
    ($($(#[$doc:meta])* $name:ident: $case:expr;)*) => {$(
        $(#[$doc])*
        #[tokio::test]
        async fn $name() {
            $case.run(stringify!($name)).await;
        }
    )*};
}

use ControlPlane::{Refusing, Replies};

retry_cases! {
    a_get_answering_503_is_retried_until_it_succeeds: Case {
        control_plane: Replies(vec![(cps_error(503), 2), (json_answer(200, REFERENCE_JOB), 1)]),
        call: Call::Job,
        requests: 3,
        outcome: Outcome::Job,
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_429_with_retry_after_zero_is_retried: Case {
        control_plane: Replies(vec![
            (cps_error(429).insert_header("Retry-After", "0"), 1),
            (json_answer(200, REFERENCE_JOB), 1),
        ]),
        call: Call::Job,
        requests: 2,
        outcome: Outcome::Job,
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_answering_429_is_resent_after_its_retry_after: Case {
        control_plane: Replies(vec![
            (cps_error(429).insert_header("Retry-After", "1"), 1),
            (json_answer(200, REFERENCE_STOP_ANSWER), 1),
        ]),
        call: Call::Stop,
        requests: 2,
        outcome: Outcome::Batch { items: 2, jobs: 2 },
        waits_at_least: Duration::from_secs(1),
        tweaks: &[("retry_max_ms", "1000")],
    };
    /// A pause beyond `cph.retry_max_ms` (5 ms here) is not waited for: it would stretch the
    /// call past `CphClient::longest_call`, the bound the watchdog waits out before it
    /// re-reads a phone whose reset may still be on its way (docs/operations.md).
    a_retry_after_beyond_retry_max_ends_the_retries_at_once: Case {
        control_plane: Replies(vec![(cps_error(429).insert_header("Retry-After", "1"), 1)]),
        call: Call::Stop,
        requests: 1,
        outcome: Outcome::Exhausted { attempts: 1, last: Last::Api(429) },
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    /// 7.1.2 gives 503 the same "internal service error" as 500: the restart may be running.
    a_post_answering_503_is_not_resent_its_outcome_is_unknown_7_1_2: Case {
        control_plane: Replies(vec![(cps_error(503), 1)]),
        call: Call::Restart,
        requests: 1,
        outcome: Outcome::Lost(503),
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    /// 7.1.2: "the server does not support the requested function" — asking again cannot help.
    a_get_answering_501_is_not_repeated_7_1_2: Case {
        control_plane: Replies(vec![(cps_error(501), 1)]),
        call: Call::Job,
        requests: 1,
        outcome: Outcome::Api(501),
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_get_answering_cps_0003_is_retried_7_2: Case {
        control_plane: Replies(vec![
            (cps_code(400, "CPS.0003"), 2),
            (json_answer(200, REFERENCE_JOB), 1),
        ]),
        call: Call::Job,
        requests: 3,
        outcome: Outcome::Job,
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_answering_cps_0003_is_resent_because_nothing_was_done_7_2: Case {
        control_plane: Replies(vec![
            (cps_code(400, "CPS.0003"), 2),
            (json_answer(201, REFERENCE_BATCH_ANSWER), 1),
        ]),
        call: Call::Restart,
        requests: 3,
        outcome: Outcome::Batch { items: 2, jobs: 1 },
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_that_keeps_answering_cps_0003_gives_up_after_max_attempts_7_2: Case {
        control_plane: Replies(vec![(cps_code(400, "CPS.0003"), 4)]),
        call: Call::Stop,
        requests: 4,
        outcome: Outcome::Exhausted { attempts: 4, last: Last::Api(400) },
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_answering_cps_0006_is_not_resent_7_2: Case {
        control_plane: Replies(vec![(cps_code(400, "CPS.0006"), 1)]),
        call: Call::Reset,
        requests: 1,
        outcome: Outcome::Api(400),
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_answering_502_without_a_request_id_is_not_resent_7_1_2: Case {
        control_plane: Replies(vec![(cps_error(502), 1)]),
        call: Call::Restart,
        requests: 1,
        outcome: Outcome::Lost(502),
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_answering_504_without_a_request_id_is_not_resent_7_1_2: Case {
        control_plane: Replies(vec![(cps_error(504), 1)]),
        call: Call::Stop,
        requests: 1,
        outcome: Outcome::Lost(504),
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_answering_500_is_not_resent_its_outcome_is_unknown_7_1_2: Case {
        control_plane: Replies(vec![(cps_error(500), 1)]),
        call: Call::Reset,
        requests: 1,
        outcome: Outcome::Lost(500),
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_get_that_keeps_failing_gives_up_after_max_attempts: Case {
        control_plane: Replies(vec![(cps_error(503), 4)]),
        call: Call::ListPhones,
        requests: 4,
        outcome: Outcome::Exhausted { attempts: 4, last: Last::Api(503) },
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_that_could_not_be_sent_is_retried: Case {
        control_plane: Refusing,
        call: Call::Restart,
        requests: 0,
        outcome: Outcome::Exhausted { attempts: 4, last: Last::Unreachable },
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_post_that_timed_out_is_not_resent: Case {
        control_plane: Replies(vec![(
            json_answer(200, REFERENCE_BATCH_ANSWER).set_delay(Duration::from_millis(1500)),
            1,
        )]),
        call: Call::Restart,
        requests: 1,
        outcome: Outcome::TimedOut,
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
    a_get_that_timed_out_is_repeated: Case {
        control_plane: Replies(vec![
            (json_answer(200, REFERENCE_JOB).set_delay(Duration::from_millis(1500)), 1),
            (json_answer(200, REFERENCE_JOB), 1),
        ]),
        call: Call::Job,
        requests: 2,
        outcome: Outcome::Job,
        waits_at_least: Duration::ZERO,
        tweaks: &[],
    };
}

/// 7.1.2 and 4.4.2: a restart answered 502 whose body names its request (7.1.1's
/// `request_id`) is not resent; the jobs of that request are its answer, so one decision
/// never restarts a phone twice.
#[tokio::test]
async fn a_post_answering_502_is_reconciled_from_its_request_jobs_4_4_2() {
    let answer = ResponseTemplate::new(502).set_body_json(serde_json::json!({
        "request_id": REQUEST_ID, "error_code": "APIGW.0202", "error_msg": "Backend unavailable"
    }));
    restart_reconciled_from_its_request(answer).await;
}

/// 7.1.2: 201 is "the normal response code for the POST operation" — the request was
/// accepted. A body not as the reference shows it (`"jobs": null`) says nothing against
/// that: the POST is not "not done" (a rollout took it so, and returned a phone to the pool
/// while its update installed) but an answer lost, followed by the request id the body
/// still names (4.4.2).
#[tokio::test]
async fn a_post_accepted_with_an_unreadable_body_is_followed_by_its_request_4_4_2() {
    let body = format!(r#"{{"request_id": "{REQUEST_ID}", "jobs": null}}"#);
    let answer = ResponseTemplate::new(201).set_body_raw(body, "application/json");
    restart_reconciled_from_its_request(answer).await;
}

const REQUEST_ID: &str = "6a63a18b8bab40ffb71ebd9cb80d0085";

/// A restart answered `answer`, naming [`REQUEST_ID`]: sent once, and answered by that
/// request's jobs (4.4.2, the reference's example list).
async fn restart_reconciled_from_its_request(answer: ResponseTemplate) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(answer)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("jobs")))
        .and(query_param("request_id", REQUEST_ID))
        .respond_with(json_answer(200, REFERENCE_JOB_LIST))
        .expect(1)
        .mount(&server)
        .await;

    let outcome = client(&server)
        .restart(&["1234567b8bab40ffb711234cb80d0234".into()])
        .await
        .unwrap();

    assert_eq!(outcome.request_id.as_deref(), Some(REQUEST_ID));
    assert_eq!(
        outcome.jobs().collect::<Vec<_>>(),
        [(
            "abc4567b8bab40ffb711234cb80d0abc",
            "1564567b8bab40f34711234cb80d0456"
        )]
    );
    assert_eq!(outcome.failures().count(), 1, "the failed job of the list");
    server.verify().await;
}

/// 7.1.2: a 504 naming its request (the `X-Request-Id` header the SDK reads) whose request
/// shows no job yet: the outcome stays unknown, with the request id to look again later;
/// the POST is never resent.
#[tokio::test]
async fn a_post_answering_504_whose_request_shows_no_job_stays_unknown_7_1_2() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-reset")))
        .respond_with(ResponseTemplate::new(504).insert_header("X-Request-Id", "abc123"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("jobs")))
        .and(query_param("request_id", "abc123"))
        .respond_with(json_answer(200, r#"{"request_id": "x", "jobs": []}"#))
        .expect(1)
        .mount(&server)
        .await;

    let error = reset_refused(&server).await;

    assert!(
        matches!(&error, CphError::AnswerLost { status: 504, request_id: Some(id), .. } if id == "abc123"),
        "{error:?}"
    );
    assert!(error.is_outcome_unknown());
    server.verify().await;
}

/// 7.1.2: a reset accepted (201) with a body cut short to nothing, and nothing to name the
/// request: the outcome is unknown (never "not done"), and the POST is not sent again.
#[tokio::test]
async fn a_post_accepted_with_an_empty_body_has_an_unknown_outcome_7_1_2() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-reset")))
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;

    let error = reset_refused(&server).await;

    assert!(
        matches!(
            &error,
            CphError::AnswerLost {
                status: 201,
                request_id: None,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.is_outcome_unknown() && !error.did_nothing());
    server.verify().await;
}

/// The error of a reset of `p-1`.
async fn reset_refused(server: &MockServer) -> CphError {
    let phone = PhoneItem {
        phone_id: "p-1".into(),
        property: None,
    };
    client(server).reset(vec![phone]).await.unwrap_err()
}
