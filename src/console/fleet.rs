//! The fleet: every phone as a cell coloured by its state, grouped by server, with the
//! counts on top. The live part (`/console/fleet/live`) is fetched again by htmx every
//! `console.refresh_ms`, so a phone's cell changes colour without a reload.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::Operator;
use super::book::Book;
use super::{ConsoleError, PREFIX, layout};
use crate::config::ConsoleSettings;
use crate::domain::{AppId, PhoneId};
use crate::store::{PHONE_STATES, Phone};

/// `/console`: the fleet is the first page.
pub(super) async fn home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, format!("{PREFIX}/fleet")))
        .finish()
}

/// The filters, as typed in the page's form (empty fields mean all).
#[derive(Deserialize, Default)]
pub(super) struct Filter {
    #[serde(default)]
    app: String,
    #[serde(default)]
    state: String,
}

impl Filter {
    fn app(&self) -> Result<Option<AppId>, ConsoleError> {
        let app = (!self.app.is_empty()).then(|| AppId::parse("app", self.app.clone()));
        Ok(app.transpose()?)
    }

    fn state(&self) -> Result<Option<&'static str>, ConsoleError> {
        if self.state.is_empty() {
            return Ok(None);
        }
        let known = PHONE_STATES.iter().find(|s| **s == self.state);
        let problem = crate::domain::Problem::Invalid("a phone state");
        let known = known.ok_or(crate::domain::ParseError::new("state", problem))?;
        Ok(Some(known))
    }

    fn query(&self) -> String {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!("app={}&state={}", enc(&self.app), enc(&self.state))
    }
}

/// Every phone (with the app, when filtered), read a page of 1,000 at a time as the API
/// pages them.
async fn all_phones(book: &Book, app: Option<&AppId>) -> Result<Vec<Phone>, ConsoleError> {
    const PAGE: i64 = 1000;
    let mut phones: Vec<Phone> = Vec::new();
    loop {
        let after = phones
            .last()
            .map(|p| PhoneId::parse("cursor", p.phone_id.clone()));
        let after = after.transpose()?;
        let page = (book.store())
            .phones(book.fresh_since, after.as_ref(), app, PAGE)
            .await?;
        let full = page.len() as i64 == PAGE;
        phones.extend(page);
        if !full {
            return Ok(phones);
        }
    }
}

/// The live part: counts and cells, for the filter.
async fn grid(filter: &Filter, book: &Book, refresh_ms: u64) -> Result<Markup, ConsoleError> {
    let state = filter.state()?;
    let phones = all_phones(book, filter.app()?.as_ref()).await?;
    let mut counts: BTreeMap<&str, usize> = PHONE_STATES.iter().map(|s| (*s, 0)).collect();
    for phone in &phones {
        *counts.entry(phone.state.as_str()).or_default() += 1;
    }
    let shown: Vec<&Phone> = (phones.iter())
        .filter(|p| state.is_none_or(|s| p.state == s))
        .collect();
    Ok(html! {
        section #fleet-live aria-live="polite"
            hx-get={ (PREFIX) "/fleet/live?" (filter.query()) }
            hx-trigger={ "every " (refresh_ms) "ms" } hx-swap="outerHTML" {
            (count_list(&counts, phones.len()))
            (servers(&shown))
        }
    })
}

fn count_list(counts: &BTreeMap<&str, usize>, total: usize) -> Markup {
    html! {
        ul.counts aria-label="phones per state" {
            li { "total " b data-count="total" { (total) } }
            @for state in PHONE_STATES {
                li class={ "state-" (state) } {
                    (label(state)) " " b data-count=(state) { (counts[state]) }
                }
            }
        }
    }
}

/// `out_of_service` as people write it.
pub(super) fn label(state: &str) -> String {
    state.replace('_', " ")
}

fn servers(phones: &[&Phone]) -> Markup {
    let mut by_server: BTreeMap<&str, Vec<&Phone>> = BTreeMap::new();
    for phone in phones {
        let server = phone
            .server_id
            .as_deref()
            .unwrap_or("(server not known yet)");
        by_server.entry(server).or_default().push(phone);
    }
    html! {
        @if phones.is_empty() { p.muted { "No phone matches." } }
        @for (server, phones) in &by_server {
            div.server {
                h2 { "Server " (server) " " span.muted { "(" (phones.len()) ")" } }
                ul.cells {
                    @for phone in phones { li { (cell(phone)) } }
                }
            }
        }
    }
}

fn cell(phone: &Phone) -> Markup {
    let name = phone.phone_name.as_deref().unwrap_or(&phone.phone_id);
    html! {
        a class={ "cell state-" (phone.state) } href={ (PREFIX) "/phones/" (phone.phone_id) }
            data-phone=(phone.phone_id) data-state=(phone.state)
            title={ (name) ": " (label(&phone.state)) } {
            (name) br; (label(&phone.state))
        }
    }
}

pub(super) async fn page(
    operator: Operator,
    query: web::Query<Filter>,
    book: Book,
    console: web::Data<ConsoleSettings>,
) -> Result<HttpResponse, ConsoleError> {
    let live = grid(&query, &book, console.refresh_ms).await?;
    let body = html! {
        h1 { "Fleet" }
        form.filters method="get" action={ (PREFIX) "/fleet" } {
            div {
                label for="app" { "App" }
                input #app name="app" value=(query.app) placeholder="all apps";
            }
            div {
                label for="state" { "State" }
                select #state name="state" {
                    option value="" { "all states" }
                    @for state in PHONE_STATES {
                        option value=(state) selected[query.state == state] { (label(state)) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        (live)
    };
    Ok(layout::html_ok(layout::page(&operator, "Fleet", body)))
}

/// The live part alone, for htmx's polling.
pub(super) async fn live(
    query: web::Query<Filter>,
    book: Book,
    console: web::Data<ConsoleSettings>,
) -> Result<HttpResponse, ConsoleError> {
    let live = grid(&query, &book, console.refresh_ms).await?;
    Ok(layout::html_ok(live))
}
