//! Chapter 5.3's calls, against the reference's own example requests and answers: what a
//! rollout sends (5.3.4, 5.3.7) and reads (5.3.1, 5.3.6).

use std::time::Duration;

use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer};

use super::verifier::assert_signed;
use super::{api, body_json, client, json_answer, only_request, tweaked_client};

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

/// A 5.3.6 entry for `app`, blanks as the example answers them.
fn installed(app: &str) -> Value {
    json!({"app_id": app, "package_name": "com.game.package", "app_version_id": "",
           "version_code": "", "version_name": "", "launch_activity": "xxx"})
}

/// 5.3.6 lists without a key (an app may be listed once per version), so the rule that ends
/// a keyed list on a page of items already read cannot apply. A service that ignores
/// `offset` answers the same full page for ever: the second time it is the end.
#[tokio::test]
async fn a_keyless_list_ends_when_the_service_ignores_offset_5_3_6() {
    let server = MockServer::start().await;
    let phone_id = "1564567b8bab40f34711234cb80d0124";
    let apps: Vec<Value> = (0..100)
        .map(|n| installed(&format!("app-{}", n / 2)))
        .collect();
    Mock::given(method("GET"))
        .and(path(api(&format!("phones/{phone_id}/apps"))))
        .respond_with(json_answer(
            200,
            &json!({"request_id": "x", "apps": apps}).to_string(),
        ))
        .expect(2)
        .mount(&server)
        .await;

    // Bounded: paging for ever is the failure.
    let client = client(&server);
    let read = client.phone_apps(phone_id);
    let listed = tokio::time::timeout(Duration::from_secs(10), read).await;
    let listed = listed.expect("the list ends").unwrap();

    assert_eq!(listed.len(), 100, "the page once, its repeats kept");
    assert_eq!(listed[99].app_id, "app-49");
}

/// 5.1.2's example lists one phone twice: a keyless list keeps what repeats, also across
/// pages, and reads on after a full page that differs from the one before it.
#[tokio::test]
async fn a_keyless_list_keeps_its_repeated_entries_across_pages_5_1_2() {
    let server = MockServer::start().await;
    let phone = |id: &str| {
        json!({"phone_id": id, "app_verison_id": "", "version_code": "", "version_name": "",
               "launch_activity": "xxx"})
    };
    let same: Vec<Value> = (0..100).map(|_| phone("p-a")).collect();
    let mixed: Vec<Value> = (0..100)
        .map(|n| phone(if n < 50 { "p-a" } else { "p-b" }))
        .collect();
    let last = vec![phone("p-c"); 3];
    app_phone_pages(&server, [(0, same), (100, mixed), (200, last)]).await;

    let listed = client(&server).app_phones("app-1").await.unwrap();

    let count = |id: &str| listed.iter().filter(|p| p.phone_id == id).count();
    assert_eq!((count("p-a"), count("p-b"), count("p-c")), (150, 50, 3));
}

/// 5.1.2's example, one phone listed twice, read a page of one at a time (`cph.page_limit`
/// takes 1): two equal pages in a row are the list, not a service ignoring `offset`, and
/// the phone after them is read.
#[tokio::test]
async fn a_keyless_list_read_a_page_of_one_keeps_an_entry_listed_twice_5_1_2() {
    let server = MockServer::start().await;
    let phone = |id: &str| json!({"phone_id": id, "app_verison_id": "", "launch_activity": "xxx"});
    let pages = [
        vec![phone("p-a")],
        vec![phone("p-a")],
        vec![phone("p-b")],
        vec![],
    ];
    app_phone_pages(&server, pages.into_iter().enumerate()).await;

    let client = tweaked_client(&server, &[("page_limit", "1")]);
    let listed = client.app_phones("app-1").await.unwrap();

    let ids: Vec<&str> = listed.iter().map(|p| p.phone_id.as_str()).collect();
    assert_eq!(ids, ["p-a", "p-a", "p-b"]);
}

/// `app-1`'s 5.1.2 list on `server`: each `(offset, phones)` answered once.
async fn app_phone_pages(
    server: &MockServer,
    pages: impl IntoIterator<Item = (usize, Vec<Value>)>,
) {
    for (offset, phones) in pages {
        Mock::given(method("GET"))
            .and(path(api("apps/app-1/phones")))
            .and(query_param("offset", offset.to_string()))
            .respond_with(json_answer(
                200,
                &json!({"request_id": "x", "phones": phones}).to_string(),
            ))
            .expect(1)
            .mount(server)
            .await;
    }
}
