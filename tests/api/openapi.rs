//! `GET /api/v1/openapi.json`, and the route table (`cphub::routes::table`) it is checked
//! against: the document and the registered routes must be the same set, and every operator
//! route must refuse a request without the right bearer token.

use std::collections::BTreeSet;

use cphub::config::Settings;
use cphub::routes::{Entry, Group, table};
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error};

/// A base path unlike the default, to show the document follows the configuration.
const BASE_PATH: &str = "/hooks/Zq3xv9TqW";

fn overrides() -> String {
    format!("[callbacks]\nbase_path = \"{BASE_PATH}\"\n")
}

fn routes() -> Vec<Entry> {
    table(&Settings::with_overrides(&overrides()).unwrap())
}

async fn document(app: &TestApp) -> Value {
    let res = app.get("/api/v1/openapi.json", Some(TOKEN)).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// (METHOD, path) of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let methods = item.as_object().expect("path item").keys();
            methods.map(move |m| (m.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

fn operation<'a>(doc: &'a Value, entry: &Entry) -> &'a Value {
    &doc["paths"][&entry.path][entry.method.as_str().to_ascii_lowercase()]
}

/// The path with every `{param}` filled in.
fn concrete(path: &str) -> String {
    path.replace("{session_id}", "s-1")
        .replace("{phone_id}", "p-1")
}

async fn send(app: &TestApp, entry: &Entry, token: Option<&str>) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(entry.method.as_str().as_bytes()).unwrap();
    let url = format!("{}{}", app.address, concrete(&entry.path));
    let mut req = app.client.request(method, url).body("{}");
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("request sent")
}

async fn the_document_describes_exactly_the_registered_routes(backend: Backend) {
    let app = TestApp::spawn_with(backend, &overrides()).await;

    let documented = operations(&document(&app).await);
    // The console's pages are HTML for people, not API (docs/console.md).
    let registered: BTreeSet<_> = routes()
        .into_iter()
        .filter(|e| e.group != Group::Console)
        .map(|e| (e.method.to_string(), e.path))
        .collect();
    let undocumented: Vec<_> = registered.difference(&documented).collect();
    let unregistered: Vec<_> = documented.difference(&registered).collect();
    assert!(
        undocumented.is_empty(),
        "registered but not in the OpenAPI document: {undocumented:?}"
    );
    assert!(
        unregistered.is_empty(),
        "in the OpenAPI document but not registered: {unregistered:?}"
    );
    assert!(registered.contains(&("POST".into(), format!("{BASE_PATH}/events"))));
}

/// The table is what actix serves: each line reaches a handler, not the fallback answers
/// for unknown routes and methods.
async fn every_route_in_the_table_is_served(backend: Backend) {
    let app = TestApp::spawn_with(backend, &overrides()).await;

    for entry in routes() {
        let res = send(&app, &entry, Some(TOKEN)).await;
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        let fallback = status == 405 || (status == 404 && body.contains("no route for"));
        assert!(
            !fallback,
            "{} {}: {status} {body}",
            entry.method, entry.path
        );
    }
}

/// The table is the only registration (`http::route::register` builds resources from it): a
/// `.route(...)` or resource elsewhere would be served without being in the table, and so
/// possibly without being documented.
#[test]
fn no_route_is_registered_outside_the_table() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // The simulator's fake CPH control plane is another server, not cphub's API; the
    // telemetry set-up serves nothing (its `with_resource(` is OpenTelemetry's).
    let exempt = [
        src.join("http/route.rs"),
        src.join("simulator"),
        src.join("telemetry.rs"),
        src.join("telemetry"),
    ];
    let markers = [
        ".route(",
        "resource(",
        "#[get(",
        "#[post(",
        "#[put(",
        "#[delete(",
    ];
    let mut found = Vec::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if exempt.iter().any(|e| path.starts_with(e)) {
                continue;
            } else if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    if markers.iter().any(|m| line.contains(m)) {
                        found.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "register routes through an endpoints() table (see src/routes.rs, src/http/route.rs): {found:#?}"
    );
}

async fn operator_routes_need_the_bearer_token_and_say_so(backend: Backend) {
    let app = TestApp::spawn_with(backend, &overrides()).await;
    let doc = document(&app).await;

    let scheme = &doc["components"]["securitySchemes"]["bearer_token"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for entry in routes() {
        let op = operation(&doc, &entry);
        // The route table's scope, the one place it is declared, is what the document says.
        let scope = entry.scope.map(|s| s.as_str());
        let required = serde_json::json!([{"bearer_token": [scope]}]);
        let secured = op["security"] == required;
        let is_operator = entry.group == Group::Operator;
        assert_eq!(secured, is_operator, "{} {}", entry.method, entry.path);
        assert_eq!(
            op["x-required-scope"].as_str(),
            scope.filter(|_| is_operator)
        );
        if is_operator {
            let forbidden = op["responses"]["403"]["description"]
                .as_str()
                .unwrap_or_default();
            assert!(
                forbidden.contains(scope.unwrap()),
                "{} {}",
                entry.method,
                entry.path
            );
        }
        assert_eq!(
            op["responses"]["401"].is_object(),
            is_operator,
            "{} {}",
            entry.method,
            entry.path
        );
    }
}

async fn the_document_describes_bodies_parameters_and_errors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = document(&app).await;

    let schemas = &doc["components"]["schemas"];
    let error = &schemas["ErrorBody"];
    for field in ["request_id", "error_code", "error_msg"] {
        assert!(error["properties"][field].is_object(), "{error}");
    }
    let codes = error["properties"]["error_code"]["enum"]
        .as_array()
        .unwrap();
    assert!(codes.contains(&"CPHUB.UNAUTHORIZED".into()), "{codes:?}");
    for name in [
        "MintBody",
        "SignCheckBody",
        "EventEnvelope",
        "HeartbeatEnvelope",
    ] {
        assert!(schemas[name].is_object(), "no schema {name}");
    }

    let paths = &doc["paths"];
    let mint = &paths["/api/v1/sessions"]["post"];
    assert!(mint["requestBody"].is_object(), "{mint}");
    assert!(mint["responses"]["201"].is_object(), "{mint}");
    assert!(mint["responses"]["503"].is_object(), "{mint}");
    let list = &paths["/api/v1/sessions"]["get"]["parameters"];
    let names: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["name"])
        .collect();
    assert!(names.contains(&&"cursor".into()), "{names:?}");
    let show = &paths["/api/v1/phones/{phone_id}"]["get"]["parameters"][0];
    assert_eq!(
        (&show["name"], &show["in"]),
        (&"phone_id".into(), &"path".into())
    );
    assert!(paths["/cph/sign-check"]["post"]["responses"]["403"].is_object());
    let refused = &paths["/api/v1/phones/{phone_id}/reset"]["post"]["responses"]["409"];
    let schema = &refused["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(schema, "#/components/schemas/ErrorBody", "{refused}");
}

async fn operator_routes_refuse_requests_without_the_right_token(backend: Backend) {
    // A wrong token on every route is more than a minute's wrong tokens from one address
    // (`api.auth_failures_per_minute`): here each must be answered 401, not 429.
    let counted_off = format!("{}[api]\nauth_failures_per_minute = 0\n", overrides());
    let app = TestApp::spawn_with(backend, &counted_off).await;

    let operator: Vec<_> = routes()
        .into_iter()
        .filter(|e| e.group == Group::Operator)
        .collect();
    assert!(operator.iter().any(|e| e.path == "/api/v1/openapi.json"));
    for entry in &operator {
        for token in [None, Some("wrong-token")] {
            let res = send(&app, entry, token).await;
            assert_eq!(res.headers()["www-authenticate"], "Bearer");
            let body = assert_error(res, 401, "CPHUB.UNAUTHORIZED").await;
            assert!(
                !body.to_string().contains(BASE_PATH),
                "{} {}",
                entry.method,
                entry.path
            );
        }
    }
}

backend_tests!(
    the_document_describes_exactly_the_registered_routes,
    every_route_in_the_table_is_served,
    operator_routes_need_the_bearer_token_and_say_so,
    the_document_describes_bodies_parameters_and_errors,
    operator_routes_refuse_requests_without_the_right_token,
);
