//! The `cphub phones …` and `cphub jobs …` commands end to end: the real binary against a
//! wiremock control plane, or against the simulator where the control plane must behave as
//! the reference says.

use std::process::Output;

use serde_json::{Value, json};
use wiremock::matchers::{body_json, header_regex, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

/// Runs `cphub ARGS` configured against `server`, off the async runtime.
async fn cphub(server: &MockServer, args: &[&str]) -> Output {
    cphub_with(server, args, &[]).await
}

/// [`cphub`], with `settings` (environment variables) over the test's own.
async fn cphub_with(server: &MockServer, args: &[&str], settings: &[(&str, &str)]) -> Output {
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
        .envs(settings.iter().copied())
        .args(args);
    crate::helpers::child_output(cmd).await
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

/// 101 phones are two batches; the first batch's answer is lost (500: 7.1.2, the restart
/// may have been done). Each of its phones gets its line saying so, the second batch is
/// still sent, and the command fails. Before, it ended at the first batch with the error
/// alone: nothing said which phones were touched, and the rest were never sent.
#[tokio::test]
async fn a_batch_whose_answer_is_lost_is_each_phones_line_and_the_next_batch_goes_on_7_1_2() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "error_code": "CPS.0001", "error_msg": "System error."})))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .and(body_json(json!({"phones": [{"phone_id": "p-100"}]})))
        .respond_with(jobs_answer(
            json!([{"phone_id": "p-100", "job_id": "j-100"}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let phones: Vec<String> = (0..101).map(|i| format!("p-{i:03}")).collect();
    let mut args = vec!["phones", "restart"];
    args.extend(phones.iter().map(String::as_str));

    let out = cphub(&server, &args).await;

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let printed = stdout(&out);
    for phone in &phones[..100] {
        assert!(
            printed.contains(&format!("{phone}\tfailed\tOUTCOME_UNKNOWN\t")),
            "{phone}: {printed}"
        );
    }
    assert!(printed.contains("p-100\tsubmitted\tjob=j-100"), "{printed}");
}

/// `jobs list --wait` whose job is still running at `cph.job_deadline_secs` prints it
/// `running` and fails: a script asked for the end and did not get it. It exited 0.
#[tokio::test]
async fn jobs_list_wait_fails_when_a_job_has_not_ended_by_the_deadline_4_4_1() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs")))
        .and(query_param("request_id", "req-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"jobs": [
            {"job_id": "j-1", "phone_id": "p-1", "status": 2},
            {"job_id": "j-2", "phone_id": "p-2", "status": 1}]})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-2")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "job_id": "j-2", "phone_id": "p-2", "status": 1})))
        .mount(&server)
        .await;

    let deadline = [("CPHUB__CPH__JOB_DEADLINE_SECS", "1")];
    let args = ["jobs", "list", "--request-id", "req-1", "--wait"];
    let out = cphub_with(&server, &args, &deadline).await;

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        stdout(&out),
        "p-1\tsucceeded\tjob=j-1\np-2\trunning\tjob=j-2\n"
    );
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
    // 4.3.2: p-1 reads back with the values written.
    Mock::given(method("GET"))
        .and(path(api("phones/p-1")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "phone_id": "p-1", "status": 2, "property": expected_property("5")})))
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
        "p-1\tapplied\tjob=j-1\np-2\tfailed\tCPS.0003\tjob=j-2\n"
    );
}

/// 101 phones are two batches of 4.3.9; the first is refused whole (7.2 `CPS.0200`). The
/// command goes on with the second and prints a line for every phone — the refused ones
/// with the code — instead of ending with the error alone and nothing said of the others.
#[tokio::test]
async fn a_batch_refused_whole_is_each_of_its_phones_line_and_the_next_batch_goes_4_3_9() {
    let server = MockServer::start().await;
    let phones: Vec<String> = (0..=100).map(|i| format!("p-{i:03}")).collect();
    Mock::given(method("POST"))
        .and(path(api("phones/batch-update-property")))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(
                json!({"error_code": "CPS.0200", "error_msg": "Invalid parameters."}),
            ),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-update-property")))
        .respond_with(jobs_answer(
            json!([{"phone_id": "p-100", "job_id": "j-100"}]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("jobs/j-100")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "job_id": "j-100", "status": 2, "error_code": null, "error_msg": null})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(api("phones/p-100")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "phone_id": "p-100", "status": 2, "property": expected_property("5")})))
        .mount(&server)
        .await;
    let mut args = vec![
        "phones",
        "configure-callbacks",
        "--public-url",
        "http://cphub.test:8080",
    ];
    for phone in &phones {
        args.extend(["--phone-id", phone.as_str()]);
    }
    args.push("--wait");

    let out = cphub(&server, &args).await;

    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let printed = stdout(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 101, "{printed}");
    assert!(
        lines[0].starts_with("p-000\tfailed\tCPS.0200\t"),
        "{printed}"
    );
    assert_eq!(lines[100], "p-100\tapplied\tjob=j-100", "{printed}");
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

/// A reset goes to the recovery log and keeps to the watchdog's budgets, both in the
/// database: without it nothing is sent (a reset restores factory settings, 4.3.5, and must
/// not go unrecorded).
#[tokio::test]
async fn reset_without_the_database_sends_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-reset")))
        .respond_with(jobs_answer(json!([{"phone_id": "p-1", "job_id": "j-1"}])))
        .expect(0)
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

    assert!(!out.status.success(), "{out:?}");
    assert!(stdout(&out).is_empty(), "{out:?}");
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

/// Runs `cphub ARGS` against the simulator's control plane, with the book at `database`.
pub(crate) async fn cphub_on_simulator(
    simulator: &cphub::simulator::Simulator,
    options: &cphub::simulator::SimOptions,
    database: &str,
    args: &[&str],
) -> Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cphub"));
    cmd.env_clear()
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .env("CPHUB__CPH__ENDPOINT", simulator.cph_endpoint())
        .env("CPHUB__CPH__PROJECT_ID", &options.project_id)
        .env("CPHUB__CPH__AUTH__AK", &options.ak)
        .env("CPHUB__CPH__AUTH__SK", &options.sk)
        .env("CPHUB__CPH__JOB_POLL_INTERVAL_MS", "20")
        .env("CPHUB__WATCHDOG__MAX_IN_FLIGHT", "1")
        .env("DATABASE_URL", database)
        .args(args);
    crate::helpers::child_output(cmd).await
}

/// The line printed for `phone`, split at its tabs.
fn line_of(printed: &str, phone: &str) -> Vec<String> {
    printed
        .lines()
        .find(|l| l.starts_with(phone))
        .unwrap_or_else(|| panic!("no line for {phone}: {printed}"))
        .split('\t')
        .map(str::to_owned)
        .collect()
}

/// 4.3.9 jobs end, then each phone is read back (4.3.2): one holding the values already is
/// `applied`, one whose update waits for a restart (the simulator holds every update until
/// then) is `waiting for a restart`, one the control plane refuses is `failed`, and a failed
/// phone makes the command exit 1.
#[tokio::test]
async fn configure_callbacks_wait_reports_applied_waiting_or_failed_per_phone_4_3_2_4_3_9() {
    let options = crate::simulation::simulator_options("http://cphub.test:8080", 2);
    let simulator = cphub::simulator::Simulator::start(options.clone())
        .await
        .unwrap();
    let [configured, fresh] = <[String; 2]>::try_from(simulator.phone_ids()).unwrap();
    let wanted: serde_json::Map<String, Value> =
        serde_json::from_str(&expected_property("5")).unwrap();
    simulator.fleet.lock().phones[0].properties.extend(
        wanted
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())),
    );
    let unknown = "ffffffffffffffffffffffffffffffff";

    let out = cphub_on_simulator(
        &simulator,
        &options,
        "sqlite:///nonexistent/cphub.db",
        &[
            "phones",
            "configure-callbacks",
            "--public-url",
            "http://cphub.test:8080",
            "--phone-id",
            &configured,
            "--phone-id",
            &fresh,
            "--phone-id",
            unknown,
            "--wait",
        ],
    )
    .await;

    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "a failed phone: {out:?}");
    assert_eq!(line_of(&printed, &configured)[1], "applied", "{printed}");
    assert_eq!(
        line_of(&printed, &fresh)[1],
        "waiting for a restart",
        "{printed}"
    );
    assert_eq!(
        line_of(&printed, unknown)[1..3],
        ["failed", "CPS.0004"],
        "{printed}"
    );
    assert_eq!(printed.lines().count(), 3, "{printed}");
    simulator.stop().await;
}

/// Without --wait nothing is read back, and the command says so.
#[tokio::test]
async fn configure_callbacks_without_wait_says_nothing_was_confirmed() {
    let options = crate::simulation::simulator_options("http://cphub.test:8080", 1);
    let simulator = cphub::simulator::Simulator::start(options.clone())
        .await
        .unwrap();
    let out = cphub_on_simulator(
        &simulator,
        &options,
        "sqlite:///nonexistent/cphub.db",
        &[
            "phones",
            "configure-callbacks",
            "--public-url",
            "http://cphub.test:8080",
            "--all",
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("\tsubmitted\tjob="), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing was confirmed"),
        "{out:?}"
    );
    simulator.stop().await;
}

/// cphub and three simulated phones pointed at it, all idle in its book; the simulator's
/// jobs take `job_delay_ms` when given.
async fn idle_fleet(
    backend: crate::helpers::Backend,
    job_delay_ms: Option<u64>,
) -> (
    crate::helpers::TestApp,
    cphub::simulator::Simulator,
    cphub::simulator::SimOptions,
) {
    let app =
        crate::helpers::TestApp::spawn_with(backend, "[fleet]\nheartbeat_interval_secs = 1").await;
    let mut options = crate::simulation::simulator_options(&app.address, 3);
    if let Some(delay) = job_delay_ms {
        options.job_delay_ms = delay;
    }
    let simulator = cphub::simulator::Simulator::start(options.clone())
        .await
        .unwrap();
    crate::simulation::configure_callbacks(&app.address, &simulator, &options).await;
    for phone in simulator.phone_ids() {
        app.wait_for_phone(&phone, |p| p["state"] == "idle").await;
    }
    (app, simulator, options)
}

/// `configure-callbacks --restart-idle` with a new heartbeat interval: every phone must take
/// a new value, so each waits for a restart.
fn restart_idle(app: &crate::helpers::TestApp) -> Vec<&str> {
    vec![
        "phones",
        "configure-callbacks",
        "--public-url",
        &app.address,
        "--heartbeat-interval",
        "2",
        "--all",
        "--wait",
        "--restart-idle",
    ]
}

/// `--restart-idle` restarts (4.3.6, with the properties) the phones waiting for a restart
/// that cphub's book shows idle, and leaves a phone with a minted session alone.
async fn restart_idle_restarts_idle_phones_and_leaves_a_busy_one_4_3_6(
    backend: crate::helpers::Backend,
) {
    let (app, simulator, options) = idle_fleet(backend, None).await;
    let minted = app
        .mint_ok(&json!({"app_id": "com.example.game", "user_id": "u-1"}))
        .await;
    let busy = minted["phone_id"].as_str().unwrap().to_owned();
    let boots = |phone: &str| {
        simulator
            .fleet
            .lock()
            .phone(phone)
            .map(|p| p.boots)
            .unwrap()
    };
    let busy_boots = boots(&busy);

    let out = cphub_on_simulator(&simulator, &options, &app.db.url, &restart_idle(&app)).await;

    let printed = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        line_of(&printed, &busy)[1],
        "waiting for a restart (busy, not restarted)",
        "{printed}"
    );
    assert_eq!(boots(&busy), busy_boots, "the busy phone was not restarted");
    for phone in simulator.phone_ids().iter().filter(|p| **p != busy) {
        let line = line_of(&printed, phone);
        assert_eq!(line[1], "applied", "{printed}");
        assert!(line[3].starts_with("restart_job="), "{printed}");
        let sim = simulator.fleet.lock().phone(phone).cloned().unwrap();
        assert_eq!(sim.properties["com.cph.cg.heartbeat_interval"], "2");
    }
    simulator.stop().await;
}

/// `--restart-idle` restarts one batch (`watchdog.max_in_flight`, 1 here) at a time and
/// follows its jobs (4.4.1, a second each here) before the next: a phone given to a player
/// while an earlier batch runs is read busy when its batch comes, and not restarted. It was
/// restarted mid-session when idleness was read once, before the first batch.
async fn restart_idle_leaves_a_phone_minted_while_an_earlier_batch_restarts_4_3_6(
    backend: crate::helpers::Backend,
) {
    use cphub::simulator::fleet::JobKind;
    let (app, simulator, options) = idle_fleet(backend, Some(1000)).await;
    let restarts = |phone: &str| {
        let fleet = simulator.fleet.lock();
        (fleet.jobs.values())
            .filter(|j| j.kind == JobKind::Restart && j.phone_id.as_deref() == Some(phone))
            .count()
    };
    // The set-up restarted each phone once to point it at cphub.
    let before: Vec<usize> = simulator.phone_ids().iter().map(|p| restarts(p)).collect();
    let restarted = |phone: &str| {
        let at = simulator
            .phone_ids()
            .iter()
            .position(|p| p == phone)
            .unwrap();
        restarts(phone) > before[at]
    };
    let args = restart_idle(&app);
    let command = cphub_on_simulator(&simulator, &options, &app.db.url, &args);
    let player = async {
        // Once the first batch's restart is under way, a player gets a phone not yet restarted.
        loop {
            let ids = simulator.phone_ids();
            if ids.iter().any(|p| restarted(p)) {
                let later = ids.iter().rev().find(|p| !restarted(p)).unwrap().clone();
                let body =
                    json!({"app_id": "com.example.game", "user_id": "u-1", "phone_id": later});
                app.mint_ok(&body).await;
                return later;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    let (out, minted) = tokio::join!(command, player);

    let printed = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        line_of(&printed, &minted)[1],
        "waiting for a restart (busy, not restarted)",
        "{printed}"
    );
    assert!(
        !restarted(&minted),
        "the phone given to a player was restarted"
    );
    let applied = (simulator.phone_ids().iter())
        .filter(|p| line_of(&printed, p)[1] == "applied")
        .count();
    assert_eq!(applied, 2, "{printed}");
    simulator.stop().await;
}

crate::backend_tests!(
    restart_idle_restarts_idle_phones_and_leaves_a_busy_one_4_3_6,
    restart_idle_leaves_a_phone_minted_while_an_earlier_batch_restarts_4_3_6,
);
