//! Usage: played hours and billable minutes per day and app over a window, as a chart drawn
//! here in SVG (no chart library, no script) and as a table, from the very report
//! `GET /api/v1/usage?group_by=day,app` answers (`api::usage::report`), and its CSV.

use std::collections::BTreeMap;

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use chrono::{Days, NaiveDate};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::Operator;
use super::book::Book;
use super::{ConsoleError, PREFIX, layout};
use crate::api::ApiError;
use crate::config::UsageSettings;
use crate::usage::{self, UsageParams, UsageReport};

/// The grouping of the page, the chart's axes.
const GROUP_BY: &str = "day,app";

/// The window as typed (dates or RFC 3339, as the API takes them); by default the last
/// seven days and today.
#[derive(Deserialize)]
pub(super) struct Window {
    from: Option<String>,
    to: Option<String>,
}

impl Window {
    fn params(&self, today: NaiveDate) -> UsageParams {
        let day = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
        let default_from = today.checked_sub_days(Days::new(7)).unwrap_or(today);
        let default_to = today.checked_add_days(Days::new(1)).unwrap_or(today);
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        UsageParams {
            from: given(&self.from).unwrap_or_else(|| day(default_from)),
            to: given(&self.to).unwrap_or_else(|| day(default_to)),
            group_by: GROUP_BY.into(),
            time_zone: None,
        }
    }
}

async fn report(
    window: &Window,
    book: &Book,
    settings: &UsageSettings,
) -> Result<(UsageParams, UsageReport), ConsoleError> {
    // The default window's days are UTC days; the report cuts its own in the time zone.
    let params = window.params(book.now.datetime().date_naive());
    let report = crate::api::usage::report(book.store(), settings, &params).await?;
    Ok((params, report))
}

pub(super) async fn page(
    operator: Operator,
    window: web::Query<Window>,
    book: Book,
    settings: web::Data<UsageSettings>,
) -> Result<HttpResponse, ConsoleError> {
    let (params, report) = report(&window, &book, &settings).await?;
    let query = format!("from={}&to={}", enc(&params.from), enc(&params.to));
    let body = html! {
        h1 { "Usage" }
        form.filters method="get" action={ (PREFIX) "/usage" } {
            div { label for="from" { "From" } input #from name="from" value=(params.from); }
            div { label for="to" { "To (excluded)" } input #to name="to" value=(params.to); }
            button type="submit" { "Show" }
        }
        p.muted { "Days cut at midnight in " (report.time_zone.name()) "; billing rounds by "
            code { (format!("{:?}", report.rounding)) } ". The same figures as "
            code { "GET /api/v1/usage?from=" (params.from) "&to=" (params.to) "&group_by=" (GROUP_BY) } "." }
        (chart(&report))
        p { a #csv href={ (PREFIX) "/usage.csv?" (query) } download { "Download CSV" } }
        (table(&report))
    };
    Ok(layout::html_ok(layout::page(&operator, "Usage", body)))
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The CSV of the API (`format=csv`) for the page's window.
pub(super) async fn csv(
    window: web::Query<Window>,
    book: Book,
    settings: web::Data<UsageSettings>,
) -> Result<HttpResponse, ConsoleError> {
    let (params, report) = report(&window, &book, &settings).await?;
    let text = usage::to_csv(&report).map_err(|e| ApiError::Render(e.to_string()))?;
    let name = format!("usage-{}-{}.csv", params.from, params.to).replace([':', '"', '/'], "-");
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .body(text))
}

/// Seconds per day and app, and the apps in order (each gets a series colour).
struct Series<'a> {
    days: BTreeMap<String, Vec<(usize, i64)>>,
    apps: Vec<&'a str>,
}

/// Each day of the window in its time zone (at most a year's: a longer window shows only
/// the days with usage), so a day nobody played is a gap, not a missing bar.
fn window_days(report: &UsageReport) -> Vec<String> {
    let day =
        |t: crate::domain::UtcTime| t.datetime().with_timezone(&report.time_zone).date_naive();
    let last = day(report.to.minus(std::time::Duration::from_secs(1)));
    let days = day(report.from)
        .iter_days()
        .take_while(|d| *d <= last)
        .take(367);
    let days: Vec<String> = days.map(|d| d.format("%Y-%m-%d").to_string()).collect();
    match days.len() {
        367 => Vec::new(),
        _ => days,
    }
}

fn series(report: &UsageReport) -> Series<'_> {
    let mut apps: Vec<&str> = report
        .rows
        .iter()
        .filter_map(|r| r.app_id.as_deref())
        .collect();
    apps.sort_unstable();
    apps.dedup();
    let mut days: BTreeMap<String, Vec<(usize, i64)>> = (window_days(report).into_iter())
        .map(|d| (d, Vec::new()))
        .collect();
    for row in &report.rows {
        let (Some(day), Some(app)) = (row.day.as_deref(), row.app_id.as_deref()) else {
            continue;
        };
        let app = apps.binary_search(&app).unwrap_or(0);
        (days.entry(day.to_owned()).or_default()).push((app, row.counts.seconds));
    }
    Series { days, apps }
}

const WIDTH: i64 = 800;
const HEIGHT: i64 = 260;
const LEFT: i64 = 56;
const BOTTOM: i64 = 28;

/// Stacked bars of played hours per day, one colour per app.
fn chart(report: &UsageReport) -> Markup {
    let Series { days, apps } = series(report);
    let max = (days.values())
        .map(|apps| apps.iter().map(|(_, s)| s).sum::<i64>())
        .max()
        .unwrap_or(0)
        // At least a minute high, so a quiet day's bars are not flattened to nothing.
        .max(60);
    let plot = HEIGHT - BOTTOM - 10;
    let step = (WIDTH - LEFT - 10) / (days.len() as i64).max(1);
    let scale = |seconds: i64| seconds * plot / max;
    // About fifteen day labels at most, so they do not run into each other.
    let label_every = days.len().div_ceil(15).max(1);
    let hours = |s: i64| format!("{:.2}", s as f64 / 3600.0);
    html! {
        figure {
            svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
                aria-label={ "Played hours per day and app, " (hours(report.totals.seconds)) " h in all" } {
                line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH - 10) y2=(HEIGHT - BOTTOM) {}
                text x="4" y="14" { (hours(max)) " h" }
                text x="4" y=(HEIGHT - BOTTOM) { "0" }
                @for (i, (day, stack)) in days.iter().enumerate() {
                    @let x = LEFT + i as i64 * step + step / 8;
                    @let mut top = HEIGHT - BOTTOM;
                    @for (app, seconds) in stack {
                        @let h = scale(*seconds);
                        @let y = { top -= h; top };
                        rect class={ "series-" (app % 6) } x=(x) y=(y) width=((step * 3 / 4).max(1)) height=(h)
                            data-day=(day) data-app=(apps[*app]) data-seconds=(seconds) {
                            title { (day) " " (apps[*app]) ": " (hours(*seconds)) " h" }
                        }
                    }
                    @if i % label_every == 0 {
                        text x=(x) y=(HEIGHT - 8) { (day.get(5..).unwrap_or(day)) }
                    }
                }
            }
            figcaption {
                ul.legend { @for (i, app) in apps.iter().enumerate() {
                    li { span class={ "swatch series-" (i % 6) } {} (app) }
                } }
                "In all: " span #total-hours data-seconds=(report.totals.seconds) { (hours(report.totals.seconds)) " h played" }
                ", " span #total-billable data-minutes=(report.totals.billable_minutes) { (report.totals.billable_minutes) " billable minutes" }
                ", " (report.totals.sessions) " sessions."
            }
        }
    }
}

fn table(report: &UsageReport) -> Markup {
    let hours = |s: i64| format!("{:.2}", s as f64 / 3600.0);
    html! {
        div.table-wrap { table #usage-table {
            thead { tr { th { "Day" } th { "App" } th.num { "Sessions" } th.num { "Played hours" } th.num { "Billable minutes" } th.num { "Abandoned" } th.num { "Still playing" } } }
            tbody { @for row in &report.rows {
                tr data-seconds=(row.counts.seconds) data-billable=(row.counts.billable_minutes) {
                    td { (row.day.as_deref().unwrap_or("—")) } td { (row.app_id.as_deref().unwrap_or("—")) }
                    td.num { (row.counts.sessions) } td.num { (hours(row.counts.seconds)) }
                    td.num { (row.counts.billable_minutes) } td.num { (row.counts.abandoned) }
                    td.num { (row.counts.open_sessions) }
                }
            } }
            tfoot { tr {
                th colspan="2" { "Total" } td.num { (report.totals.sessions) } td.num { (hours(report.totals.seconds)) }
                td.num { (report.totals.billable_minutes) } td.num { (report.totals.abandoned) } td.num { (report.totals.open_sessions) }
            } }
        } }
    }
}
