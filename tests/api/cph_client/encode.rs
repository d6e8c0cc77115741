//! Chapters 4.6 and 4.7.5 against the reference's own example requests and answers: the
//! encoding servers' list (4.6.1) and restart (4.6.2), and synchronous ADB commands (4.7.5)
//! with their answer per phone, their output kept and their time bounded.

use std::time::Duration;

use cphub::domain::{CommandOutcome, ShellCommand};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use super::verifier::assert_signed;
use super::{api, body_json, client, json_answer, only_request};

/// 4.6.1's example answer, as printed save the object closing the first server, which the
/// example leaves out (`}` added after `access_infos`' `]`).
const REFERENCE_ENCODE_SERVERS: &str = r#"{
  "encode_servers": [{
    "encode_server_name": "ENCODE_SERVER_2",
    "encode_server_id": "00b00d1b35094f13b360cdf15a9bfee",
    "encode_server_ip": "10.237.0.233",
    "server_id": "26fef5ef8f484e5fbd3d3974134b8091",
    "keypair_name": "keyPair2",
    "type": 0,
    "status": 1,
    "access_infos": [
      {"listen_port": 6902, "intranet_ip": "172.31.240.115", "access_port": 6902,
       "access_ip": "10.154.119.231", "server_ip": "172.31.240.115",
       "public_ip": "10.154.119.231", "type": "port1"},
      {"listen_port": 6903, "intranet_ip": "172.31.240.115", "access_port": 6903,
       "access_ip": "172.31.240.115", "server_ip": "172.31.240.115", "public_ip": "",
       "type": "port2"}
    ]
  }],
  "request_id": "4faba0b7f7cb4e829b18773718289b99"
}"#;

/// 4.6.2's example answer.
const REFERENCE_RESTART_ANSWER: &str = r#"{
  "jobs": [
    {"job_id": "e9d7b1a2572c4f2c9bf056a3d1b35e39",
     "encode_server_id": "d5cfa92995da40168c39b38d2aa478b3"},
    {"job_id": "4d0a42447cac4c9697b97f07934b74bd",
     "encode_server_id": "00b00d1b35094f13b360cdf15a9bfee"}
  ],
  "request_id": "c775bdf09bc0400a9138199b346cab62"
}"#;

/// 4.7.5's example answer: one phone failed (with its output), one succeeded with `""` codes.
const REFERENCE_SYNC_ANSWER: &str = r#"{
  "request_id": "6837531fd3f54550927b930180a706bf",
  "jobs": [{
    "phone_id": "1234567b8bab40ffb711234cb80d0234",
    "job_id": "3fc17538866a4ff3a014d8bc6aaa4b69",
    "status": -1,
    "error_code": "CPS.0191",
    "error_msg": "Run command failed.",
    "execute_msg": "ls: cannot access '/system': No such file or directory"
  },
  {
    "phone_id": "1678567b8bab40f93711234cb80d0764",
    "job_id": "1564567b8bab40f34711234cb80d5678",
    "status": 2,
    "error_code": "",
    "error_msg": "",
    "execute_msg": "xxxxx"
  }
]}"#;

const FAILED_PHONE: &str = "1234567b8bab40ffb711234cb80d0234";
const GOOD_PHONE: &str = "1678567b8bab40f93711234cb80d0764";

#[tokio::test]
async fn list_encode_servers_reads_the_4_6_1_example_a_page_at_a_time() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("encode-servers")))
        .respond_with(json_answer(200, REFERENCE_ENCODE_SERVERS))
        .mount(&server)
        .await;

    let servers = client(&server).list_encode_servers().await.unwrap();

    let request = only_request(&server).await;
    assert_signed(&request, &server);
    assert_eq!(request.url.query(), Some("limit=100&offset=0"));
    assert_eq!(servers.len(), 1);
    let first = &servers[0];
    assert_eq!(first.encode_server_id, "00b00d1b35094f13b360cdf15a9bfee");
    assert_eq!(first.server_id, "26fef5ef8f484e5fbd3d3974134b8091");
    assert_eq!((first.status, first.server_type), (1, 0));
}

#[tokio::test]
async fn restart_encode_servers_sends_4_6_2s_body_and_reads_its_jobs() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("encode-servers/batch-restart")))
        .respond_with(json_answer(201, REFERENCE_RESTART_ANSWER))
        .mount(&server)
        .await;
    let ids = [
        "d5cfa92995da40168c39b38d2aa478b3".to_owned(),
        "00b00d1b35094f13b360cdfe15a9bfee".to_owned(),
    ];

    let outcome = client(&server).restart_encode_servers(&ids).await.unwrap();

    let request = only_request(&server).await;
    assert_signed(&request, &server);
    assert_eq!(
        body_json(&request),
        json!({"encode_server_ids": ["d5cfa92995da40168c39b38d2aa478b3",
                                     "00b00d1b35094f13b360cdfe15a9bfee"]})
    );
    assert_eq!(outcome.failures().count(), 0);
    let item = &outcome.items[0];
    assert_eq!(
        item.encode_server_id.as_deref(),
        Some("d5cfa92995da40168c39b38d2aa478b3")
    );
    assert_eq!(
        item.job_id.as_deref(),
        Some("e9d7b1a2572c4f2c9bf056a3d1b35e39")
    );
}

#[tokio::test]
async fn run_sync_command_sends_4_7_5s_body_and_reads_each_phones_run() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/sync-commands")))
        .respond_with(json_answer(201, REFERENCE_SYNC_ANSWER))
        .mount(&server)
        .await;
    let command = ShellCommand::parse("ls -l /system").unwrap();
    let phones = [FAILED_PHONE.to_owned(), GOOD_PHONE.to_owned()];

    let jobs = client(&server)
        .run_sync_command(&phones, &command)
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_signed(&request, &server);
    assert_eq!(
        body_json(&request),
        json!({"command": "shell", "content": "ls -l /system",
               "phone_ids": [FAILED_PHONE, GOOD_PHONE]})
    );
    assert_eq!(jobs[0].error_code.as_deref(), Some("CPS.0191"));
    assert_eq!(
        (&jobs[1].error_code, &jobs[1].error_msg),
        (&None, &None),
        "4.7.5's \"\" codes are no error"
    );
    assert_eq!(jobs[1].execute_msg.as_deref(), Some("xxxxx"));
}

/// 4.7.5: the failed phone's output is kept with the failure ("returned regardless of
/// whether the command is successfully executed").
#[tokio::test]
async fn a_failed_run_keeps_its_output_4_7_5() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/sync-commands")))
        .respond_with(json_answer(201, REFERENCE_SYNC_ANSWER))
        .mount(&server)
        .await;
    let command = ShellCommand::parse("ls -l /system").unwrap();
    let client = client(&server);

    let failed = client
        .run_command(FAILED_PHONE, &command, Duration::from_secs(5))
        .await;
    let good = client
        .run_command(GOOD_PHONE, &command, Duration::from_secs(5))
        .await;

    assert_eq!(failed.outcome, CommandOutcome::Failed);
    assert_eq!(
        failed.output.as_deref(),
        Some("ls: cannot access '/system': No such file or directory")
    );
    assert!(
        failed.error.as_deref().unwrap().contains("CPS.0191"),
        "{failed:?}"
    );
    assert_eq!(good.outcome, CommandOutcome::Succeeded);
    assert_eq!((good.output.as_deref(), good.error), (Some("xxxxx"), None));
}

/// Table 4-68 bounds `execute_msg` at 1,024 bytes: a longer one is cut, not kept whole.
#[tokio::test]
async fn an_output_beyond_1024_bytes_is_cut_4_7_5() {
    let server = MockServer::start().await;
    let answer = json!({"request_id": "r", "jobs": [{"phone_id": GOOD_PHONE, "job_id": "j",
        "status": 2, "error_code": "", "error_msg": "", "execute_msg": "x".repeat(5000)}]});
    Mock::given(method("POST"))
        .and(path(api("phones/sync-commands")))
        .respond_with(json_answer(201, &answer.to_string()))
        .mount(&server)
        .await;
    let command = ShellCommand::parse("dumpsys").unwrap();

    let run = client(&server)
        .run_command(GOOD_PHONE, &command, Duration::from_secs(5))
        .await;

    assert_eq!(run.output.map(|o| o.len()), Some(1024));
}

/// A POST that may have run is never sent again: an answer that does not come is a
/// timed-out run, after one request.
#[tokio::test]
async fn a_command_without_an_answer_times_out_and_is_not_resent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/sync-commands")))
        .respond_with(json_answer(201, REFERENCE_SYNC_ANSWER).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let command = ShellCommand::parse("ls").unwrap();

    let run = client(&server)
        .run_command(GOOD_PHONE, &command, Duration::from_millis(200))
        .await;

    assert_eq!(run.outcome, CommandOutcome::TimedOut, "{run:?}");
    assert_eq!(run.output, None);
    only_request(&server).await;
}
