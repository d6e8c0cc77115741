//! The `cphub phones …` and `cphub jobs …` commands end to end: the real binary against a
//! wiremock control plane.

use std::process::Output;

use serde_json::{Value, json};
use wiremock::matchers::{body_json, header_regex, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// Runs `cphub ARGS` configured against `server`, off the async runtime.
async fn cphub(server: &MockServer, args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cphub"));
    cmd.env_clear()
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .env("CPHUB__CPH__ENDPOINT", server.uri())
        .env("CPHUB__CPH__PROJECT_ID", PROJECT)
        .env("CPHUB__CPH__AUTH__AK", "CLITESTAK")
        .env("CPHUB__CPH__AUTH__SK", "CLITESTSK")
        .env("CPHUB__CPH__RETRY_BASE_MS", "1")
        .env("CPHUB__CPH__JOB_POLL_INTERVAL_MS", "10")
        // No book here: `phones stop` warns that it cannot record the stop, and creates
        // no database file in the working directory.
        .env("DATABASE_URL", "sqlite:///nonexistent/cphub.db")
        .args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn api(suffix: &str) -> String {
    format!("/v1/{PROJECT}/cloud-phone/{suffix}")
}

fn jobs_answer(items: Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"request_id": "6837531fd3f54550927b930180a706bf", "jobs": items}))
}

/// The property string configure-callbacks must write for public URL `http://cphub.test:8080`.
fn expected_property(interval: &str) -> String {
    json!({
        "com.cph.cg.event_notify_url": "http://cphub.test:8080/cph/events",
        "com.cph.cg.heartbeat_interval": interval,
        "com.cph.cg.heartbeat_url": "http://cphub.test:8080/cph/heartbeat",
        "com.cph.cg.sign_check_url": "http://cphub.test:8080/cph/sign-check",
    })
    .to_string()
}

#[tokio::test]
async fn configure_callbacks_writes_the_exact_property_string() {
    let server = MockServer::start().await;
    let property = expected_property("7");
    Mock::given(method("POST"))
        .and(path(api("phones/batch-update-property")))
        .and(header_regex(
            "Authorization",
            "^SDK-HMAC-SHA256 Access=CLITESTAK, SignedHeaders=[a-z;-]+, Signature=[0-9a-f]{64}$",
        ))
        .and(body_json(json!({"phones": [
            {"phone_id": "p-1", "property": property},
            {"phone_id": "p-2", "property": property},
        ]})))
        .respond_with(jobs_answer(json!([
            {"phone_id": "p-1", "job_id": "j-1"}, {"phone_id": "p-2", "job_id": "j-2"}])))
        .expect(1)
        .mount(&server)
        .await;

    let out = cphub(
        &server,
        &[
            "phones",
            "configure-callbacks",
            "--public-url",
            "http://cphub.test:8080/",
            "--phone-id",
            "p-1",
            "--phone-id",
            "p-2",
            "--heartbeat-interval",
            "7",
        ],
    )
    .await;

    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "p-1\tsubmitted\tjob=j-1\np-2\tsubmitted\tjob=j-2\n"
    );
}

#[tokio::test]
async fn configure_callbacks_refuses_an_invalid_public_url_before_any_call() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;

    for bad in [
        "https://cphub.test/?secret=1",
        "ftp://cphub.test",
        "cphub.test",
    ] {
        let out = cphub(
            &server,
            &[
                "phones",
                "configure-callbacks",
                "--public-url",
                bad,
                "--all",
            ],
        )
        .await;

        assert!(!out.status.success(), "{bad} accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a valid phone property URL"),
            "{out:?}"
        );
    }
}

#[tokio::test]
async fn a_phone_refused_inside_a_200_batch_fails_the_command() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .and(body_json(json!({"phones": [{"phone_id": "p-1"}, {"phone_id": "p-bad"}]})))
        .respond_with(jobs_answer(json!([
            {"phone_id": "p-1", "job_id": "j-1"},
            {"phone_id": "p-bad", "error_code": "CPS.0004", "error_msg": "Parameter: phone_id is invalid."}])))
        .expect(1)
        .mount(&server)
        .await;

    let out = cphub(&server, &["phones", "restart", "p-1", "p-bad"]).await;

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let printed = stdout(&out);
    assert!(
        printed.contains("p-bad\tfailed\tCPS.0004\tParameter: phone_id is invalid."),
        "{printed}"
    );
    assert!(printed.contains("p-1\tsubmitted\tjob=j-1"), "{printed}");
}

#[tokio::test]
async fn all_phones_are_listed_then_configured_and_followed_to_their_end() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones")))
        .and(query_param("offset", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"phones": [
            {"phone_id": "p-1", "status": 2}, {"phone_id": "p-2", "status": 2}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-update-property")))
        .respond_with(jobs_answer(json!([
            {"phone_id": "p-1", "job_id": "j-1"}, {"phone_id": "p-2", "job_id": "j-2"}])))
        .expect(1)
        .mount(&server)
        .await;
    for (job, status, error) in [("j-1", 2, Value::Null), ("j-2", -1, json!("CPS.0003"))] {
        Mock::given(method("GET"))
            .and(path(api(&format!("jobs/{job}"))))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "job_id": job, "status": status, "error_code": error, "error_msg": null})))
            .mount(&server)
            .await;
    }

    let out = cphub(
        &server,
        &[
            "phones",
            "configure-callbacks",
            "--public-url",
            "http://cphub.test:8080",
            "--all",
            "--wait",
        ],
    )
    .await;

    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed job fails the command: {out:?}"
    );
    assert_eq!(
        stdout(&out),
        "p-1\tsucceeded\tjob=j-1\np-2\tfailed\tjob=j-2\tCPS.0003\t\n"
    );
}

#[tokio::test]
async fn dry_run_shows_the_property_and_calls_nothing_that_writes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&server)
        .await;

    let out = cphub(
        &server,
        &[
            "phones",
            "configure-callbacks",
            "--public-url",
            "http://cphub.test:8080",
            "--phone-id",
            "p-1",
            "--dry-run",
        ],
    )
    .await;

    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        format!(
            "property {}\np-1\twould configure\n",
            expected_property("5")
        )
    );
}

#[tokio::test]
async fn reset_carries_the_callback_properties() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-reset")))
        .and(body_json(
            json!({"phones": [{"phone_id": "p-1", "property": expected_property("5")}]}),
        ))
        .respond_with(jobs_answer(json!([{"phone_id": "p-1", "job_id": "j-1"}])))
        .expect(1)
        .mount(&server)
        .await;

    let out = cphub(
        &server,
        &[
            "phones",
            "reset",
            "p-1",
            "--public-url",
            "http://cphub.test:8080",
        ],
    )
    .await;

    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn stop_sends_phone_ids() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .and(body_json(json!({"phone_ids": ["p-1", "p-2"]})))
        .respond_with(jobs_answer(
            json!([{"phone_id": "p-1", "job_id": "j-1"}, {"phone_id": "p-2", "job_id": "j-2"}]),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let out = cphub(&server, &["phones", "stop", "p-1", "p-2"]).await;

    assert!(out.status.success(), "{out:?}");
}

#[tokio::test]
async fn phones_list_prints_json_with_filters_applied() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones")))
        .and(query_param("server_id", "srv-1"))
        .and(query_param("status", "-7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"phones": [
            {"phone_id": "p-9", "phone_name": "mobile-0009", "server_id": "srv-1", "status": -7}]})))
        .expect(1)
        .mount(&server)
        .await;

    let out = cphub(
        &server,
        &[
            "phones",
            "list",
            "--server-id",
            "srv-1",
            "--status",
            "-7",
            "--format",
            "json",
        ],
    )
    .await;

    assert!(out.status.success(), "{out:?}");
    let phones: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(phones[0]["phone_id"], "p-9");
    assert_eq!(phones[0]["status"], -7);
}

#[tokio::test]
async fn jobs_list_shows_each_job_of_a_request() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs")))
        .and(query_param("request_id", "req-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jobs": [
            {"job_id": "j-1", "phone_id": "p-1", "status": 2},
            {"job_id": "j-2", "phone_id": "p-2", "status": 1}]})))
        .expect(1)
        .mount(&server)
        .await;

    let out = cphub(&server, &["jobs", "list", "--request-id", "req-1"]).await;

    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        stdout(&out),
        "p-1\tsucceeded\tjob=j-1\np-2\trunning\tjob=j-2\n"
    );
}

#[tokio::test]
async fn the_commands_refuse_to_run_without_cph_settings() {
    let out = tokio::task::spawn_blocking(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cphub"))
            .env_clear()
            .env("CPHUB_CONFIG_DIR", "/nonexistent")
            .args(["phones", "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();

    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cph.endpoint is not set"),
        "{out:?}"
    );
}
