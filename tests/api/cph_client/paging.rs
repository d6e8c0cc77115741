//! Paging and filters of the phone list (chapter 4.3.1): every page walked in order, and
//! the filters in the sorted, encoded, signed query.

use cphub::cph::PhoneFilter;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::verifier::assert_signed;
use super::{api, client, only_request, received};

fn numbered_phones(range: std::ops::Range<usize>) -> Value {
    range
        .map(|i| json!({"phone_id": format!("phone-{i:03}"), "server_id": "srv-1", "status": 2}))
        .collect()
}

#[tokio::test]
async fn list_phones_walks_every_page_in_order() {
    let server = MockServer::start().await;
    for (offset, range) in [(0, 0..100), (100, 100..200), (200, 200..250)] {
        Mock::given(method("GET"))
            .and(path(api("phones")))
            .and(query_param("offset", offset.to_string()))
            .and(query_param("limit", "100"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"phones": numbered_phones(range)})),
            )
            .expect(1)
            .mount(&server)
            .await;
    }

    let phones = client(&server)
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap();

    let ids: Vec<_> = phones.iter().map(|p| p.phone_id.clone()).collect();
    let expected: Vec<_> = (0..250).map(|i| format!("phone-{i:03}")).collect();
    assert_eq!(ids, expected);
    assert_eq!(received(&server).await.len(), 3);
}

#[tokio::test]
async fn a_full_last_page_is_followed_by_one_empty_page() {
    let server = MockServer::start().await;
    for (offset, range) in [(0, 0..100), (100, 100..100)] {
        Mock::given(method("GET"))
            .and(path(api("phones")))
            .and(query_param("offset", offset.to_string()))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"phones": numbered_phones(range)})),
            )
            .expect(1)
            .mount(&server)
            .await;
    }

    let phones = client(&server)
        .list_phones(&PhoneFilter::default())
        .await
        .unwrap();

    assert_eq!(phones.len(), 100);
}

#[tokio::test]
async fn list_phones_filters_go_into_the_sorted_encoded_signed_query() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(api("phones")))
        .and(query_param("server_id", "edge server/1"))
        .and(query_param("status", "-7"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"phones": []})))
        .expect(1)
        .mount(&server)
        .await;
    let filter = PhoneFilter {
        server_id: Some("edge server/1".into()),
        status: Some(-7),
    };

    let phones = client(&server).list_phones(&filter).await.unwrap();

    assert!(phones.is_empty());
    let request = only_request(&server).await;
    // The wire query is the canonical one: sorted, `%20` for space, `%2F` for `/`.
    assert_eq!(
        request.url.query(),
        Some("limit=100&offset=0&server_id=edge%20server%2F1&status=-7")
    );
    assert_signed(&request, &server);
}
