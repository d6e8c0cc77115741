//! `GET /api/v1/sessions`: newest first, filters, and a cursor that returns every session
//! exactly once while new ones keep arriving.

use std::collections::HashSet;

use cphub::clock::ManualClock;
use cphub::domain::UtcTime;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error, enter, quit};

async fn page(app: &TestApp, query: &str) -> Value {
    let res = app
        .get(&format!("/api/v1/sessions?{query}"), Some(TOKEN))
        .await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn paging_returns_every_session_once_while_new_ones_arrive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let existing: Vec<String> = (0..7).map(|i| format!("old-{i}")).collect();
    for id in &existing {
        app.send_event(&enter(id, "p-1", "2026-11-28T10:00:00Z"))
            .await;
    }

    let mut seen = Vec::new();
    let mut query = "limit=3".to_owned();
    for round in 0.. {
        let page = page(&app, &query).await;
        seen.extend(ids(&page));
        // Newer sessions arrive between pages.
        app.send_event(&enter(
            &format!("new-{round}"),
            "p-2",
            "2026-11-28T10:00:00Z",
        ))
        .await;
        match page["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=3&cursor={cursor}"),
            None => break,
        }
    }

    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no session twice: {seen:?}");
    assert_eq!(
        unique,
        existing.into_iter().collect::<HashSet<_>>(),
        "exactly the sessions that existed"
    );
    assert_eq!(seen.first().unwrap(), "old-6", "newest first");
}

/// Two sessions created within one millisecond, half a millisecond apart (PostgreSQL keeps
/// microseconds): a page of one, then the next page from its cursor, returns both. The
/// cursor held milliseconds, and the next page skipped the earlier one for good.
async fn sessions_created_within_one_millisecond_are_each_paged_once(backend: Backend) {
    use std::sync::Arc;
    let start = "2026-11-28T12:00:00.123400Z";
    let clock = Arc::new(ManualClock::new(UtcTime::parse("start", start).unwrap()));
    let app = TestApp::spawn_with_clock(backend, "", Arc::clone(&clock)).await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T12:00:00Z"))
        .await;
    clock.advance(std::time::Duration::from_micros(500));
    app.send_event(&enter("s-2", "p-2", "2026-11-28T12:00:00Z"))
        .await;

    let first = page(&app, "limit=1").await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second = page(&app, &format!("limit=1&cursor={cursor}")).await;

    assert_eq!(ids(&first), ["s-2"]);
    assert_eq!(ids(&second), ["s-1"], "{second}");
}

async fn filters_narrow_the_list(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.send_event(&enter("s-1", "p-1", "2026-11-28T10:00:00Z"))
        .await;
    app.send_event(&enter("s-2", "p-2", "2026-11-28T10:00:00Z"))
        .await;
    app.send_event(&quit("s-2", "p-2", "2026-11-28T10:05:00Z", 300))
        .await;

    assert_eq!(ids(&page(&app, "state=ended").await), ["s-2"]);
    assert_eq!(ids(&page(&app, "phone_id=p-1").await), ["s-1"]);
    assert_eq!(ids(&page(&app, "app_id=com.example.game").await).len(), 2);
    assert!(ids(&page(&app, "to=2000-01-01T00:00:00Z").await).is_empty());
    assert_eq!(
        page(&app, "state=playing").await["sessions"][0]["state"],
        "playing"
    );
}

async fn bad_queries_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    for query in [
        "state=sleeping",
        "cursor=not-a-cursor",
        // "-300000000000000000us.s1": a time chrono holds, 7537 BC, which PostgreSQL's
        // timestamps do not (a 500 there before).
        "cursor=LTMwMDAwMDAwMDAwMDAwMDAwMHVzLnMx",
        "limit=ten",
        "from=yesterday",
        "phone_id=a%20b",
    ] {
        let res = app
            .get(&format!("/api/v1/sessions?{query}"), Some(TOKEN))
            .await;
        let body = assert_error(res, 400, "CPHUB.INVALID_FIELD").await;
        assert!(!body["error_msg"].as_str().unwrap().is_empty(), "{query}");
    }
}

/// `cphub sessions list|show` read the database directly and agree with the API.
async fn the_cli_lists_what_the_api_lists(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for i in 0..5 {
        app.send_event(&enter(
            &format!("s-{i}"),
            &format!("p-{i}"),
            "2026-11-28T10:00:00Z",
        ))
        .await;
    }
    app.send_event(&quit("s-4", "p-4", "2026-11-28T10:01:40Z", 100))
        .await;
    let cli_json = |args: &'static [&'static str]| {
        let app = &app;
        async move {
            let out = app.cli(args).await;
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        }
    };

    let api = page(&app, "limit=3&phone_id=p-4").await;
    let cli = cli_json(&["sessions", "list", "--phone-id", "p-4", "--format", "json"]).await;
    assert_eq!(cli, api["sessions"]);
    let newest = ids(&page(&app, "limit=2").await);
    let cli = cli_json(&["sessions", "list", "--limit", "2", "--format", "json"]).await;
    let cli: Vec<&str> = cli
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(cli, newest);

    let shown = cli_json(&["sessions", "show", "s-4"]).await;
    assert_eq!(shown["duration_seconds"], 100);
    assert_eq!(shown["events"].as_array().unwrap().len(), 2);
    let res = app.get("/api/v1/sessions/s-4", Some(TOKEN)).await;
    let answered: Value = res.json().await.unwrap();
    assert_eq!(
        shown, answered,
        "the CLI shows what the API answers (missing_start too)"
    );

    let out = app.cli(&["sessions", "list", "--state", "sleeping"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("state"));
}

backend_tests!(
    the_cli_lists_what_the_api_lists,
    paging_returns_every_session_once_while_new_ones_arrive,
    sessions_created_within_one_millisecond_are_each_paged_once,
    filters_narrow_the_list,
    bad_queries_are_refused,
);
