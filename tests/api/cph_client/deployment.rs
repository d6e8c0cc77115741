//! Chapter 5.3's calls, against the reference's own example requests and answers: what a
//! rollout sends (5.3.4, 5.3.7) and reads (5.3.1, 5.3.6).

use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer};

use super::verifier::assert_signed;
use super::{api, body_json, client, json_answer, only_request};

/// 5.3.1's example, as printed: the version id spelt `app_verison_id`, `""` for unknowns.
const REFERENCE_SERVER_APPS: &str = r#"{
  "request_id": "6a63a18b8bab40ffb71ebd9cb80d0085",
  "apps": [
    {"app_id": "xxxxxx", "app_verison_id": "", "package_name": "com.game.package",
     "name": "", "description": "", "version_code": "", "version_name": "",
     "launch_activity": "xxx"},
    {"app_id": "xxxxxx", "package_name": "com.game.package1", "name": "",
     "description": "", "app_verison_id": "", "version_code": "", "version_name": "",
     "launch_activity": "xxx"}
  ]
}"#;

/// 5.3.4's example answer.
const REFERENCE_PUSH_ANSWER: &str = r#"{
  "request_id": "6837531fd3f54550927b930180a706bf",
  "jobs": [
    {"job_type": 31, "job_id": "1564567b8bab40f34711234cb80d0123",
     "server_id": "0da365fde47b439ea4bdd4085fb9c6ba",
     "app_version_id": "1564567b8bab40f34711234cb80d0124"}
  ]
}"#;

/// 5.3.7's example answer.
const REFERENCE_UPDATE_ANSWER: &str = r#"{
  "request_id": "6837531fd3f54550927b930180a706bf",
  "jobs": [
    {"job_type": 32, "job_id": "1564567b8bab40f34711234cb80d0123",
     "phone_id": "1564567b8bab40f34711234cb80d0124",
     "app_version_id": "1564567b8bab40f34711234cb80d0124"},
    {"job_type": 32, "job_id": "1564567b8bab40f34711234cb80d0177",
     "phone_id": "1564567b8bab40f34711234cb80d0188",
     "app_version_id": "1564567b8bab40f34711234cb80d0124"}
  ]
}"#;

#[tokio::test]
async fn server_apps_reads_the_5_3_1_example_with_its_spelling_and_blanks() {
    let server = MockServer::start().await;
    let server_id = "88b8449b896f3a4f0ad57222dd91909";
    Mock::given(method("GET"))
        .and(path(api(&format!("servers/{server_id}/apps"))))
        .respond_with(json_answer(200, REFERENCE_SERVER_APPS))
        .mount(&server)
        .await;

    let apps = client(&server).server_apps(server_id).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), Some("limit=100&offset=0"));
    assert_signed(&request, &server);
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[1].package_name.as_deref(), Some("com.game.package1"));
    assert_eq!(apps[0].app_version_id, None, "\"\" is no version id");
    assert_eq!(apps[0].version_code, None);
}

#[tokio::test]
async fn push_app_version_sends_5_3_4s_body_and_reads_its_server_jobs() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("servers/action")))
        .respond_with(json_answer(201, REFERENCE_PUSH_ANSWER))
        .mount(&server)
        .await;
    let versions = ["1564567b8bab40f34711234cb80d0124".to_owned()];
    let servers = ["88b8449b896f3a4f0ad57222dd91909".to_owned()];

    let outcome = client(&server)
        .push_app_version(&versions, &servers)
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_signed(&request, &server);
    assert_eq!(
        body_json(&request),
        json!({"batch_push_app_version": {
            "app_version_ids": ["1564567b8bab40f34711234cb80d0124"],
            "server_ids": ["88b8449b896f3a4f0ad57222dd91909"]}})
    );
    let item = &outcome.items[0];
    assert_eq!(
        item.server_id.as_deref(),
        Some("0da365fde47b439ea4bdd4085fb9c6ba")
    );
    assert_eq!(item.phone_id, None);
    assert_eq!(
        item.job_id.as_deref(),
        Some("1564567b8bab40f34711234cb80d0123")
    );
    assert_eq!(outcome.failures().count(), 0);
}

#[tokio::test]
async fn update_app_version_sends_5_3_7s_body_and_reads_a_job_per_version() {
    let server = MockServer::start().await;
    let phone_id = "1564567b8bab40f34711234cb80d0124";
    Mock::given(method("POST"))
        .and(path(api(&format!("phones/{phone_id}/action"))))
        .respond_with(json_answer(201, REFERENCE_UPDATE_ANSWER))
        .mount(&server)
        .await;
    let versions = ["xxxx".to_owned(), "yyyy".to_owned()];

    let outcome = client(&server)
        .update_app_version(phone_id, &versions)
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_signed(&request, &server);
    assert_eq!(
        body_json(&request),
        json!({"update_app_version": {"app_version_ids": ["xxxx", "yyyy"]}})
    );
    assert_eq!(outcome.jobs().count(), 2);
    assert_eq!(
        outcome.items[1].app_version_id.as_deref(),
        Some("1564567b8bab40f34711234cb80d0124")
    );
}
