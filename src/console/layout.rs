//! The page shell every console page shares: head (the embedded stylesheet and htmx, the
//! htmx settings the CSP needs), navigation by the operator's scopes, and the error page.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective};
use maud::{DOCTYPE, Markup, html};

use super::auth::{Operator, csrf_field};
use super::{ConsoleError, PREFIX, assets};
use crate::config::Scope;
use crate::domain::UtcTime;
use crate::http::ErrorCode;

/// htmx must not inject its indicator `<style>` (the CSP refuses inline style) nor evaluate
/// script from attributes or answers (nothing here needs it).
const HTMX_CONFIG: &str = r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"historyCacheSize":0}"#;

/// The pages of the navigation, with the scope each needs.
const NAV: [(&str, &str, Scope); 6] = [
    ("/fleet", "Fleet", Scope::PhonesRead),
    ("/sessions", "Sessions", Scope::SessionsRead),
    ("/usage", "Usage", Scope::UsageRead),
    ("/queue", "Queue", Scope::SessionsRead),
    ("/rollouts", "Rollouts", Scope::PhonesRead),
    ("/webhooks", "Webhooks", Scope::WebhooksRead),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · cphub" }
            link rel="stylesheet" href=(assets::url("console.css"));
            script src=(assets::url("htmx.min.js")) defer {}
        }
    }
}

/// A page of the signed-in console.
pub(super) fn page(operator: &Operator, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    nav aria-label="console" {
                        a.brand href={ (PREFIX) "/fleet" } { "cphub" }
                        @for (path, label, scope) in NAV {
                            @if operator.allows(scope) {
                                a href={ (PREFIX) (path) } { (label) }
                            }
                        }
                    }
                    form.signout method="post" action={ (PREFIX) "/logout" } {
                        (csrf_field(operator))
                        span { (operator.name()) }
                        button type="submit" { "Sign out" }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page without navigation (sign-in, errors before sign-in).
pub(super) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main.narrow { (body) } }
        }
    }
}

/// Pages show live figures: never cached.
pub(super) fn html(status: StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

pub(super) fn html_ok(markup: Markup) -> HttpResponse {
    html(StatusCode::OK, markup)
}

fn error_body(code: ErrorCode, message: &str) -> Markup {
    html! {
        h1 { (code.status().canonical_reason().unwrap_or("Error")) }
        p.error role="alert" { (message) }
        p { "Error code " code { (code.as_str()) } " (docs/errors.md)." }
        p { a href={ (PREFIX) "/fleet" } { "Back to the fleet" } }
    }
}

/// An error page, with the code in the response for the audit trail, as the API's errors.
pub(super) fn error_page(code: ErrorCode, message: &str) -> HttpResponse {
    coded(code, html(code.status(), bare("Error", error_body(code, message))))
}

/// An error page with the signed-in operator's navigation.
pub(super) fn error_page_for(operator: &Operator, error: ConsoleError) -> HttpResponse {
    let code = error.code();
    let body = error_body(code, &error.to_string());
    coded(code, html(code.status(), page(operator, "Error", body)))
}

/// The code in the response's extensions (the audit trail records it), and a 503's
/// `Retry-After`, as every 503 of cphub carries (docs/errors.md).
fn coded(code: ErrorCode, mut res: HttpResponse) -> HttpResponse {
    if code.status() == StatusCode::SERVICE_UNAVAILABLE {
        let retry = crate::http::error::RETRY_AFTER_SECS;
        let value = actix_web::http::header::HeaderValue::from_static(retry);
        res.headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, value);
    }
    res.extensions_mut().insert(code);
    res
}

/// A path value the route cannot take (a rollout id that is not a number): the error page
/// with its code, not actix's plain-text 404.
pub(super) fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default().error_handler(|err, _req| {
        let page = error_page(ErrorCode::NotFound, &format!("no such page: {err}"));
        actix_web::error::InternalError::from_response(err, page).into()
    })
}

/// A time as people read it in a table.
pub(super) fn when(time: UtcTime) -> String {
    time.datetime().format("%Y-%m-%d %H:%M:%S").to_string()
}

pub(super) fn maybe_when(time: Option<UtcTime>) -> String {
    time.map(when).unwrap_or_else(|| "—".into())
}

/// `n` seconds as `1 h 02 min 03 s`.
pub(super) fn duration(n: i64) -> String {
    let (h, m, s) = (n / 3600, n % 3600 / 60, n % 60);
    match h {
        0 => format!("{m} min {s:02} s"),
        _ => format!("{h} h {m:02} min {s:02} s"),
    }
}
