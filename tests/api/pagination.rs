//! One pagination vocabulary on every list route: `cursor` in the query, `next_cursor` in the
//! answer, null on the last page. The phones route's older spelling (`after` / `next`) keeps
//! working, deprecated (docs/api.md "Pagination").

use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp};

const PHONES: [&str; 5] = ["p-1", "p-2", "p-3", "p-4", "p-5"];

/// Follows a list route page by page, two items a page, with `param` carrying the position
/// from the answer's `field`; returns the ids in the order served.
async fn walk(app: &TestApp, param: &str, field: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut position: Option<String> = None;
    for _ in 0..10 {
        let path = match &position {
            Some(p) => format!("/api/v1/phones?limit=2&{param}={p}"),
            None => "/api/v1/phones?limit=2".to_owned(),
        };
        let res = app.get(&path, Some(TOKEN)).await;
        assert_eq!(res.status(), 200, "{path}");
        let page: Value = res.json().await.unwrap();
        let ids = page["phones"].as_array().unwrap().iter();
        seen.extend(ids.map(|p| p["phone_id"].as_str().unwrap().to_owned()));
        assert_eq!(
            page["next_cursor"], page["next"],
            "both spellings agree: {page}"
        );
        match page[field].as_str() {
            Some(next) => position = Some(next.to_owned()),
            None => return seen,
        }
    }
    panic!("paging did not end: {seen:?}");
}

async fn phones_page_with_cursor_and_next_cursor(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&PHONES).await;
    assert_eq!(walk(&app, "cursor", "next_cursor").await, PHONES);
}

async fn phones_still_page_with_the_deprecated_after_and_next(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.idle_phones(&PHONES).await;
    assert_eq!(walk(&app, "after", "next").await, PHONES);
}

async fn a_cursor_that_is_no_phone_id_is_a_400_naming_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.get("/api/v1/phones?cursor=%00", Some(TOKEN)).await;
    let body = crate::helpers::assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
    assert!(
        body["error_msg"].as_str().unwrap().contains("cursor"),
        "{body}"
    );
}

backend_tests!(
    phones_page_with_cursor_and_next_cursor,
    phones_still_page_with_the_deprecated_after_and_next,
    a_cursor_that_is_no_phone_id_is_a_400_naming_it,
);
