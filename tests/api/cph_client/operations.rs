//! Every operation: the request on the wire (method, path, query, body, signed headers),
//! and the reference's example answer read (chapters 4.3.1, 4.3.2, 4.3.5–4.3.7, 4.3.9,
//! 4.4.1 and 4.4.2).

use std::time::Duration;

use cphub::cph::{PhoneFilter, PhoneItem};
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::verifier::assert_signed;
use super::{
    JOB_ID, REFERENCE_BATCH_ANSWER, REFERENCE_JOB, REFERENCE_JOB_LIST, REFERENCE_PHONE_DETAIL,
    REFERENCE_PHONE_LIST, REFERENCE_RESET_REQUEST, REFERENCE_STOP_ANSWER, REFERENCE_STOP_REQUEST,
    REFERENCE_UPDATE_PROPERTY_REQUEST, api, body_json, client, json_answer, only_request,
};

#[tokio::test]
async fn list_phones_sends_a_signed_get_and_reads_the_reference_example() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones")))
        .respond_with(json_answer(200, REFERENCE_PHONE_LIST))
        .expect(1)
        .mount(&server)
        .await;

    let phones = client(&server)
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.url.path(), api("phones"));
    assert_eq!(request.url.query(), Some("limit=100&offset=0"));
    assert!(request.body.is_empty());
    assert_signed(&request, &server);
    assert_eq!(phones.len(), 1);
    let phone = &phones[0];
    assert_eq!(phone.phone_id, "1234567b8bab40ffb711234cb80d0234");
    assert_eq!(phone.phone_name, "mobile-0001");
    assert_eq!(phone.server_id, "88b8449b896f3a4f0ad57222dd91909");
    assert_eq!(phone.status, 2);
    assert_eq!(phone.phone_model_name, "AOSP-1U4G15G-001");
    assert_eq!(phone.image_id, "88b8449b896f3a4f0ad57222dd91909");
    assert_eq!(phone.phone_type, 0);
    assert_eq!(phone.create_time.as_deref(), Some("2017-10-10T00:00:00Z"));
    assert_eq!(phone.update_time.as_deref(), Some("2018-10-10T00:00:00Z"));
}

#[tokio::test]
async fn phone_sends_a_signed_get_for_one_phone() {
    let server = MockServer::start().await;
    let phone_id = "1564567b8bab40f34711234cb80d8574";
    // The official SDK's form: `property` is a string holding JSON.
    let mut answer: Value = serde_json::from_str(REFERENCE_PHONE_DETAIL).unwrap();
    answer["property"] = json!(answer["property"].to_string());
    Mock::given(method("GET"))
        .and(path(api(&format!("phones/{phone_id}"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(&answer))
        .expect(1)
        .mount(&server)
        .await;

    let detail = client(&server).phone(phone_id).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "GET");
    assert_eq!(request.url.query(), None);
    assert_signed(&request, &server);
    assert_eq!(detail.phone.phone_id, phone_id);
    assert_eq!(detail.phone.phone_name, "mobile-0049");
    assert_eq!(detail.phone.phone_model_name, "aphs1.large.2.aosp");
    assert_eq!(detail.property.as_deref(), answer["property"].as_str());
    assert_eq!(detail.access_infos.len(), 2);
    assert_eq!(detail.access_infos[1]["access_port"], 14328);
}

/// CPH_WIRE.md §2: "A simulator should return a string; a client should accept both."
#[tokio::test]
async fn phone_reads_the_reference_example_whose_property_is_an_object() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones/1564567b8bab40f34711234cb80d8574")))
        .respond_with(json_answer(200, REFERENCE_PHONE_DETAIL))
        .expect(1)
        .mount(&server)
        .await;

    let detail = client(&server)
        .phone("1564567b8bab40f34711234cb80d8574")
        .await
        .expect("the reference's own example is readable");

    assert_eq!(detail.phone.status, 2);
    assert_eq!(detail.access_infos.len(), 2);
    let property: Value = serde_json::from_str(detail.property.as_deref().unwrap()).unwrap();
    assert_eq!(
        property,
        json!({"phone_num": "13666666666", "imsi": "460021624617113",
               "iccid": "42947a38410b137c", "wifi_name": "test_wifi"})
    );
}

/// The phones of a reference request example, as the client's callers pass them.
fn phone_items(example: &Value) -> Vec<PhoneItem> {
    example["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PhoneItem {
            phone_id: p["phone_id"].as_str().unwrap().to_owned(),
            property: p["property"].as_str().map(str::to_owned),
        })
        .collect()
}

#[tokio::test]
async fn update_property_posts_the_reference_body_signed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-update-property")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let example: Value = serde_json::from_str(REFERENCE_UPDATE_PROPERTY_REQUEST).unwrap();

    let outcome = client(&server)
        .update_property(phone_items(&example))
        .await
        .unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.query(), None);
    assert_eq!(body_json(&request), example);
    assert_signed(&request, &server);
    assert_eq!(
        outcome.request_id.as_deref(),
        Some("6837531fd3f54550927b930180a706bf")
    );
    assert_eq!(outcome.items.len(), 2);
}

#[tokio::test]
async fn restart_posts_one_object_per_phone_signed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-restart")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let ids = [
        "a7f3a1c5258347d6b6f1def79e11f2bc".to_owned(),
        "1678567b8bab40f93711234cb80d0764".to_owned(),
    ];

    let outcome = client(&server).restart(&ids).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(
        body_json(&request),
        json!({"phones": [{"phone_id": ids[0]}, {"phone_id": ids[1]}]})
    );
    assert_signed(&request, &server);
    assert_eq!(outcome.items.len(), 2);
}

#[tokio::test]
async fn reset_posts_each_phone_with_its_property_string_signed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-reset")))
        .respond_with(json_answer(200, REFERENCE_BATCH_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let example: Value = serde_json::from_str(REFERENCE_RESET_REQUEST).unwrap();

    let outcome = client(&server).reset(phone_items(&example)).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    let body = body_json(&request);
    assert_eq!(body, example);
    assert!(
        body["phones"][0]["property"].is_string(),
        "property is JSON serialised into a string"
    );
    assert_signed(&request, &server);
    assert_eq!(outcome.items.len(), 2);
}

#[tokio::test]
async fn stop_posts_phone_ids_signed_and_reads_the_reference_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(api("phones/batch-stop")))
        .respond_with(json_answer(200, REFERENCE_STOP_ANSWER))
        .expect(1)
        .mount(&server)
        .await;
    let example: Value = serde_json::from_str(REFERENCE_STOP_REQUEST).unwrap();
    let ids: Vec<String> = serde_json::from_value(example["phone_ids"].clone()).unwrap();

    let outcome = client(&server).stop(&ids).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(body_json(&request), example);
    assert_signed(&request, &server);
    assert_eq!(outcome.failures().count(), 0);
    assert_eq!(
        outcome.jobs().collect::<Vec<_>>(),
        [
            (
                "1234567b8bab40ffb711234cb80d0234",
                "1564567b8bab40f34711234cb80d0123"
            ),
            (
                "1678567b8bab40f93711234cb80d0764",
                "1564567b8bab40f34711234cb80d5678"
            ),
        ]
    );
}

#[tokio::test]
async fn job_sends_a_signed_get_and_reads_the_reference_example() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api(&format!("jobs/{JOB_ID}"))))
        .respond_with(json_answer(200, REFERENCE_JOB))
        .expect(1)
        .mount(&server)
        .await;

    let job = client(&server).job(JOB_ID).await.unwrap();

    let request = only_request(&server).await;
    assert_eq!(request.url.query(), None);
    assert_signed(&request, &server);
    assert_eq!(job.job_id, JOB_ID);
    assert_eq!(job.status, 2);
    assert!(job.is_finished());
    assert_eq!(job.begin_time.as_deref(), Some("2019-04-26T07:00:00Z"));
    assert_eq!(job.end_time.as_deref(), Some("2019-04-26T07:00:06Z"));
    assert_eq!(job.error_code, None);
    assert_eq!(job.error_msg, None);
    assert_eq!(job.execute_msg, None);
}

#[tokio::test]
async fn jobs_by_request_queries_the_request_id_and_reads_the_reference_example() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("jobs")))
        .and(query_param(
            "request_id",
            "6837531fd3f54550927b930180a706bf",
        ))
        .respond_with(json_answer(200, REFERENCE_JOB_LIST))
        .expect(1)
        .mount(&server)
        .await;

    let jobs = client(&server)
        .jobs_by_request("6837531fd3f54550927b930180a706bf")
        .await
        .unwrap();

    let request = only_request(&server).await;
    // The reference shows `request_id` alone; the paging is Huawei's SDK's (its vector
    // `list_jobs_by_request_id_paged`), the query in the signer's sorted order.
    assert_eq!(
        request.url.query(),
        Some("limit=100&offset=0&request_id=6837531fd3f54550927b930180a706bf")
    );
    assert_signed(&request, &server);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].job_id, "1564567b8bab40f34711234cb80d0123");
    assert_eq!(
        jobs[0].phone_id.as_deref(),
        Some("1234567b8bab40ffb711234cb80d0234")
    );
    assert_eq!(jobs[0].status, -1);
    assert_eq!(jobs[0].error_code.as_deref(), Some("CPS0005"));
    assert_eq!(jobs[0].error_msg.as_deref(), Some("Phone not found."));
    assert_eq!(jobs[1].status, 2);
    assert_eq!(jobs[1].end_time.as_deref(), Some("2017-10-25T00:00:32Z"));
}

/// 4.4.2 documents `request_id` and no paging: a service that ignores `offset` answers the
/// same full page again. The list ends there, each job once; before, the client asked for
/// the next page for ever.
#[tokio::test]
async fn jobs_by_request_ends_when_the_service_ignores_offset_4_4_2() {
    let server = MockServer::start().await;
    let jobs: Vec<_> = (0..100)
        .map(|n| json!({"job_id": format!("job-{n:03}"), "status": 2}))
        .collect();
    Mock::given(method("GET"))
        .and(path(api("jobs")))
        .and(query_param("request_id", "r-1"))
        .respond_with(json_answer(
            200,
            &json!({"request_id": "x", "jobs": jobs}).to_string(),
        ))
        .expect(2)
        .mount(&server)
        .await;

    // Bounded: paging for ever is the failure.
    let client = client(&server);
    let read = client.jobs_by_request("r-1");
    let jobs = tokio::time::timeout(Duration::from_secs(10), read).await;
    let jobs = jobs.expect("the list ends").unwrap();

    let ids: Vec<String> = jobs.into_iter().map(|job| job.job_id).collect();
    let expected: Vec<String> = (0..100).map(|n| format!("job-{n:03}")).collect();
    assert_eq!(ids, expected);
}

/// 4.4.2 by Huawei's SDK: at most `limit` (100) jobs a page. A request with more jobs (an app
/// version pushed to many servers, 5.3.4) is read page by page until a page comes back short;
/// before, the first page was taken for the whole request.
#[tokio::test]
async fn jobs_by_request_reads_every_page_of_a_large_request() {
    const JOBS: usize = 230;
    let server = MockServer::start().await;
    for offset in [0, 100, 200] {
        let jobs: Vec<_> = (offset..JOBS.min(offset + 100))
            .map(|n| {
                json!({"job_id": format!("job-{n:03}"), "status": 2,
                            "error_code": "", "error_msg": ""})
            })
            .collect();
        Mock::given(method("GET"))
            .and(path(api("jobs")))
            .and(query_param("request_id", "r-1"))
            .and(query_param("offset", offset.to_string()))
            .and(query_param("limit", "100"))
            .respond_with(json_answer(
                200,
                &json!({"request_id": "x", "jobs": jobs}).to_string(),
            ))
            .expect(1)
            .mount(&server)
            .await;
    }

    let jobs = client(&server).jobs_by_request("r-1").await.unwrap();

    let ids: Vec<String> = jobs.into_iter().map(|job| job.job_id).collect();
    let expected: Vec<String> = (0..JOBS).map(|n| format!("job-{n:03}")).collect();
    assert_eq!(ids, expected);
}
