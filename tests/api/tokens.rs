//! Scoped operator tokens (docs/operations.md "Tokens and scopes"): every operator route of
//! the route table refuses a token without its scope and admits one with it; tokens are
//! configured by their SHA-256 only; the old plain list still works as admin; the tokens
//! `cphub token new` prints authenticate; per-token rate limits.

use cphub::config::{Scope, Settings};
use cphub::routes::{Group, table};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::backend_tests;
use crate::helpers::{Backend, TOKEN, TestApp, assert_error};

backend_tests!(
    every_operator_route_refuses_a_token_without_its_scope_and_admits_one_with_it,
    the_plain_token_list_still_admits_as_admin,
    a_token_from_cphub_token_new_authenticates_with_its_scopes,
    a_token_beyond_its_rate_is_answered_429_and_other_tokens_are_not,
);

/// The secret of the token granting `scope` alone.
fn secret(scope: Scope) -> String {
    format!("secret-of-{}-0123456789abcdef", scope.as_str())
}

fn sha256_hex(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// One `[[api.tokens]]` table per scope, each granting that scope alone, by digest.
fn one_token_per_scope() -> String {
    let tables: Vec<String> = Scope::ALL
        .iter()
        .map(|scope| {
            format!(
                "[[api.tokens]]\nname = \"only-{s}\"\nsha256 = \"{}\"\nscopes = [\"{s}\"]\n",
                sha256_hex(&secret(*scope)),
                s = scope.as_str()
            )
        })
        .collect();
    tables.join("")
}

/// The path with every `{parameter}` filled with a value of the right shape.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').unwrap() + start;
        out.push_str(&rest[..start]);
        out.push_str(match &rest[start + 1..end] {
            "rollout_id" | "id" => "1",
            "endpoint" => "billing",
            _ => "x-1",
        });
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn call(
    app: &TestApp,
    method: &actix_web::http::Method,
    path: &str,
    token: &str,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    let mut req = app
        .client
        .request(method.clone(), format!("{}{}", app.address, concrete(path)))
        .bearer_auth(token);
    if method != reqwest::Method::GET {
        // A body no route accepts as an action: nothing is changed by the walk.
        req = req.json(&json!({}));
    }
    req.send().await.unwrap()
}

/// The walk goes over `routes::table`, the table the application registers its routes
/// from, so a route added without a scope, or with another, fails here.
async fn every_operator_route_refuses_a_token_without_its_scope_and_admits_one_with_it(
    backend: Backend,
) {
    let config = one_token_per_scope();
    for scope in Scope::ALL {
        assert!(!config.contains(&secret(scope)), "no token in the clear");
    }
    let app = TestApp::spawn_with(backend, &config).await;
    let routes = table(&Settings::with_overrides("").unwrap());
    let operator: Vec<_> = routes
        .iter()
        .filter(|r| r.group == Group::Operator)
        .collect();
    assert!(
        operator.len() > 20,
        "the walk found the table: {operator:?}"
    );

    for route in operator {
        let needed = route.scope.expect("every operator route has a scope");
        let other = match needed {
            Scope::SessionsRead => Scope::UsageRead,
            _ => Scope::SessionsRead,
        };
        let refused = call(&app, &route.method, &route.path, &secret(other)).await;
        let body = assert_error(refused, 403, "CPHUB.FORBIDDEN").await;
        let message = body["error_msg"].as_str().unwrap();
        assert!(
            message.contains(needed.as_str()),
            "{} {}: {body}",
            route.method,
            route.path
        );

        for token in [secret(needed), secret(Scope::Admin)] {
            let res = call(&app, &route.method, &route.path, &token).await;
            let status = res.status().as_u16();
            assert!(
                status != 401 && status != 403,
                "{} {} with {token}: {status} {}",
                route.method,
                route.path,
                res.text().await.unwrap()
            );
        }
    }
    assert_error(
        app.get("/api/v1/phones", Some("unknown")).await,
        401,
        "CPHUB.UNAUTHORIZED",
    )
    .await;
}

/// `api.tokens = ["…"]` (the test harness's own configuration) is an admin token named
/// `legacy-1`: it operates phones and reads the audit trail, which names it.
async fn the_plain_token_list_still_admits_as_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;

    let res = (app.client)
        .post(format!("{}/api/v1/phones/p-1/restart", app.address))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    // No control plane in this test: the restart is refused for that, not for the token.
    assert_error(res, 503, "CPHUB.CPH_NOT_CONFIGURED").await;
    let audit = app.get("/api/v1/audit", Some(TOKEN)).await;
    assert_eq!(audit.status(), 200);
    let audit: Value = audit.json().await.unwrap();
    assert_eq!(audit["entries"][0]["token_name"], "legacy-1", "{audit}");
}

/// The real binary's output: the token line, then a table that loads as configuration.
async fn a_token_from_cphub_token_new_authenticates_with_its_scopes(backend: Backend) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cphub"))
        .env_clear()
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .args([
            "token",
            "new",
            "--name",
            "dashboard",
            "--scope",
            "phones:read",
        ])
        .args(["--scope", "usage:read"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let token = printed.lines().nth(1).unwrap().to_owned();
    assert!(token.len() >= 43, "32 random bytes at least: {token}");
    let entry = &printed[printed.find("[[api.tokens]]").unwrap()..];
    assert!(!entry.contains(&token), "{entry}");

    let app = TestApp::spawn_with(backend, entry).await;
    assert_eq!(app.get("/api/v1/phones", Some(&token)).await.status(), 200);
    assert_eq!(
        app.get("/api/v1/usage?from=2026-12-01&to=2026-12-02", Some(&token))
            .await
            .status(),
        200
    );
    let body = assert_error(
        app.get("/api/v1/sessions", Some(&token)).await,
        403,
        "CPHUB.FORBIDDEN",
    )
    .await;
    assert!(
        body["error_msg"]
            .as_str()
            .unwrap()
            .contains("sessions:read"),
        "{body}"
    );
    assert_error(
        app.get("/api/v1/phones", Some(TOKEN)).await,
        401,
        "CPHUB.UNAUTHORIZED",
    )
    .await;

    let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_cphub"))
        .env_clear()
        .env("CPHUB_CONFIG_DIR", "/nonexistent")
        .args(["token", "new", "--name", "x", "--scope", "phones:destroy"])
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("phones:destroy"));
}

/// A token that spends its bucket (1 a second, 2 at once) is answered 429 with Retry-After;
/// another token's bucket is its own, and mints are not counted.
async fn a_token_beyond_its_rate_is_answered_429_and_other_tokens_are_not(backend: Backend) {
    let table = |name: &str| {
        format!(
            "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\n\
             scopes = [\"phones:read\", \"sessions:mint\"]\n",
            sha256_hex(&format!("token-{name}"))
        )
    };
    let reader = format!(
        "[[api.tokens]]\nname = \"c\"\nsha256 = \"{}\"\nscopes = [\"phones:read\"]\n",
        sha256_hex("token-c")
    );
    let config = format!(
        "[api]\nrate_limit_per_second = 1\nrate_limit_burst = 2\n{}{}{reader}",
        table("a"),
        table("b")
    );
    let app = TestApp::spawn_with(backend, &config).await;

    let mut limited = None;
    for _ in 0..50 {
        let res = app.get("/api/v1/phones", Some("token-a")).await;
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
        assert_eq!(res.status(), 200);
    }
    let limited = limited.expect("a burst beyond the limit is refused");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_error(limited, 429, "CPHUB.RATE_LIMITED").await;

    // A fresh bucket admits its burst whatever the time.
    assert_eq!(
        app.get("/api/v1/phones", Some("token-b")).await.status(),
        200
    );
    // Mints are players' traffic: never limited (this one is refused for its body).
    let mint = (app.client)
        .post(format!("{}/api/v1/sessions", app.address))
        .bearer_auth("token-a")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(mint.status(), 400);
    // Players' routes called by a token without their scope are not players' traffic: each
    // refusal (403, and an audit line) counts, and the bucket runs out.
    let statuses: Vec<u16> = futures_util::future::join_all((0..6).map(|_| {
        (app.client)
            .post(format!("{}/api/v1/queue", app.address))
            .bearer_auth("token-c")
            .json(&json!({}))
            .send()
    }))
    .await
    .into_iter()
    .map(|res| res.unwrap().status().as_u16())
    .collect();
    assert!(statuses.contains(&403), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}
