//! One phone: its state, its history (`history.rs`), connect information and properties,
//! its apps, its recoveries (what went wrong and what was done, with reasons, jobs,
//! diagnostics and outcomes) and its sessions, current and recent. Restart and reset buttons for a token that may operate.

use actix_web::{HttpResponse, web};
use maud::{Markup, html};

use super::auth::Operator;
use super::book::Book;
use super::fleet::label;
use super::history;
use super::layout::{self, maybe_when, when};
use super::{ConsoleError, PREFIX};
use crate::config::Scope;
use crate::domain::{Connect, PhoneId};
use crate::store::{Phone, PhoneApp, Recovery, SessionFilter};

/// Rows the recovery and session tables show.
const RECENT: usize = 20;
/// Facts read of each kind for the history: as many as it shows lines, since each fact
/// gives at least one line, so a fact past them could only add lines older than those.
const FACTS: i64 = history::LINES as i64;

pub(super) async fn page(
    operator: Operator,
    path: web::Path<String>,
    book: Book,
) -> Result<HttpResponse, ConsoleError> {
    let id = PhoneId::parse("phone_id", path.into_inner())?;
    let store = book.store();
    let phone = store.phone(&id, book.fresh_since).await?;
    let phone = phone.ok_or(ConsoleError::NotFound("phone"))?;
    let recoveries = store.recoveries(Some(&id), None, FACTS).await?;
    let apps = store.phone_apps(&id).await?;
    let filter = SessionFilter {
        phone_id: Some(id.clone()),
        ..SessionFilter::default()
    };
    let sessions = store.sessions(&filter, FACTS).await?;
    let connect = store.phone_connect(&id).await?.unwrap_or_default();
    let property = store.synced_property(&id).await?;
    let marks = store.phone_marks(&id, phone.created_at, FACTS).await?;
    let body = html! {
        h1 { "Phone " (phone.phone_id) }
        @if operator.allows(Scope::PhonesOperate) {
            p {
                a.button href={ (PREFIX) "/phones/" (phone.phone_id) "/restart" } { "Restart…" }
                a.button href={ (PREFIX) "/phones/" (phone.phone_id) "/reset" } { "Reset…" }
            }
        }
        (facts(&phone))
        h2 { "History" }
        (history::render(&history::lines(&sessions, &recoveries, &marks)))
        h2 { "Connect information (4.3.2)" }
        (connect_table(&connect))
        h2 { "Properties (4.3.2)" }
        @match &property {
            Some(p) => { p.muted { "As phone sync read them at " (when(p.read_at)) "." } pre { (p.property) } },
            None => p.muted { "Phone sync has not read them." },
        }
        h2 { "Apps" }
        (app_list(&apps))
        h2 #recoveries { "Recoveries" }
        (recovery_table(recent(&recoveries)))
        h2 { "Sessions" }
        (super::sessions::table(recent(&sessions), book.now))
    };
    Ok(layout::html_ok(layout::page(
        &operator,
        &phone.phone_id,
        body,
    )))
}

fn facts(phone: &Phone) -> Markup {
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    html! {
        dl.facts {
            dt { "State" } dd { span class={ "cell state-" (phone.state) } data-state=(phone.state) { (label(&phone.state)) } }
            dt { "Name" } dd { (text(&phone.phone_name)) }
            dt { "Server" } dd { (text(&phone.server_id)) }
            dt { "Control-plane status (4.3.1)" } dd { (phone.cph_status.map_or("—".into(), |s| s.to_string())) " at " (maybe_when(phone.cph_synced_at)) }
            dt { "Last heartbeat" } dd { (maybe_when(phone.last_seen_at)) " (phone clock " (maybe_when(phone.last_heartbeat_at)) ")" }
            dt { "Heartbeat session / app" } dd { (text(&phone.heartbeat_session_id)) " / " (text(&phone.heartbeat_app_id)) }
            dt { "Current session" } dd {
                @match &phone.current_session_id {
                    Some(s) => a href={ (PREFIX) "/sessions/" (s) } { (s) },
                    None => "—",
                }
                " " (text(&phone.current_app_id))
            }
            dt { "Held for session" } dd { (text(&phone.allocated_session_id)) " until " (maybe_when(phone.allocated_until)) }
            dt { "Recovery" } dd { (text(&phone.recovery_state)) }
            dt { "Known since" } dd { (when(phone.created_at)) }
        }
    }
}

fn recent<T>(rows: &[T]) -> &[T] {
    &rows[..rows.len().min(RECENT)]
}

fn connect_table(connect: &Connect) -> Markup {
    html! {
        @if connect.access.is_empty() { p.muted { "Phone sync has not read it (or there is no control plane)." } }
        @else { div.table-wrap { table {
            thead { tr { th { "Type" } th { "Public IP" } th.num { "Access port" } th.num { "Listen port" } } }
            tbody { @for a in &connect.access { tr {
                td { (a.port_type) } td { (a.public_ip) } td.num { (a.access_port) } td.num { (a.listen_port) }
            } } }
        } } }
    }
}

fn app_list(apps: &[PhoneApp]) -> Markup {
    html! {
        @if apps.is_empty() { p.muted { "None seen by phone sync (5.1.2)." } }
        ul { @for app in apps { li { code { (app.app_id) } } } }
    }
}

fn recovery_table(recoveries: &[Recovery]) -> Markup {
    html! {
        @if recoveries.is_empty() { p.muted { "None." } }
        @else {
            div.table-wrap { table {
                thead { tr { th { "Started" } th { "Action" } th { "Reason" } th { "Outcome" } th { "Job" } th { "Ended" } th { "Detail" } } }
                tbody {
                    @for r in recoveries {
                        tr data-recovery=(r.id) data-action=(r.action) data-outcome=(r.outcome) {
                            td { (when(r.started_at)) }
                            td { (r.action) @if r.dry_run { " (dry run)" } }
                            td { (r.reason) }
                            td { (r.outcome) @if let Some(e) = &r.error { br; span.error { (e) } } }
                            td { (r.job_id.as_deref().unwrap_or("—")) }
                            td { (maybe_when(r.ended_at)) }
                            td { (r.detail.as_deref().unwrap_or("")) (diagnostics(r)) }
                        }
                    }
                }
            } }
        }
    }
}

fn diagnostics(recovery: &Recovery) -> Markup {
    html! {
        @if !recovery.diagnostics.0.is_empty() {
            details {
                summary { "Diagnostics (" (recovery.diagnostics.0.len()) ")" }
                ul { @for run in &recovery.diagnostics.0 {
                    li { code { (run.command) } " — " (format!("{:?}", run.outcome))
                        @if let Some(out) = &run.output { pre { (out) } }
                        @if let Some(e) = &run.error { span.error { (e) } } }
                } }
            }
        }
    }
}
