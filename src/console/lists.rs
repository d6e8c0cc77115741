//! The wait queue per app, the rollouts with their per-phone progress, and the webhook
//! endpoints with their backlog: each from the store query its API route or metric reads.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use maud::html;

use super::auth::Operator;
use super::book::Book;
use super::layout::{self, maybe_when, when};
use super::{ConsoleError, PREFIX};
use crate::config::{Scope, WebhookSettings};
use crate::domain::RolloutState;
use crate::store::{QueueEntry, Store};

const LIMIT: i64 = 500;

pub(super) async fn queue(
    operator: Operator,
    book: Book,
) -> Result<HttpResponse, ConsoleError> {
    let entries = book.store().queue_entries(book.now, LIMIT).await?;
    let mut by_app: BTreeMap<&str, Vec<&QueueEntry>> = BTreeMap::new();
    for entry in &entries {
        by_app.entry(entry.app_id.as_str()).or_default().push(entry);
    }
    let body = html! {
        h1 { "Wait queue" }
        @if by_app.is_empty() { p.muted { "Nobody is waiting." } }
        @for (app, entries) in &by_app {
            h2 { (app) " " span.muted { "(" (entries.len()) " waiting)" } }
            div.table-wrap { table {
                thead { tr { th.num { "Position" } th { "User" } th { "Priority" } th { "Joined" } th { "Assigned phone" } } }
                tbody { @for e in entries { tr data-queue=(e.queue_id) data-app=(e.app_id) data-position=(e.position) {
                    td.num { (e.position) } td { (e.user_id) } td { (format!("{:?}", e.priority)) }
                    td { (when(e.joined_at)) } td { (e.phone_id.as_ref().map_or("—", |p| p.as_str())) }
                } } }
            } }
        }
    };
    Ok(layout::html_ok(layout::page(&operator, "Queue", body)))
}

pub(super) async fn rollouts(
    operator: Operator,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ConsoleError> {
    let rollouts = store.rollouts(100).await?;
    let body = html! {
        h1 { "Rollouts" }
        @if rollouts.is_empty() { p.muted { "No rollout yet." } }
        @else { div.table-wrap { table {
            thead { tr { th.num { "Id" } th { "App" } th { "Versions" } th { "State" } th.num { "Batch" } th { "Paused by" } } }
            tbody { @for r in &rollouts { tr {
                td.num { a href={ (PREFIX) "/rollouts/" (r.id) } { (r.id) } }
                td { (r.app_id) } td { (r.app_version_ids.join(", ")) } td { (r.state.as_str()) }
                td.num { (r.batch) } td { (r.paused_by.as_deref().unwrap_or("—")) }
            } } }
        } } }
    };
    Ok(layout::html_ok(layout::page(&operator, "Rollouts", body)))
}

pub(super) async fn rollout(
    operator: Operator,
    path: web::Path<i64>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ConsoleError> {
    let id = path.into_inner();
    let rollout = store.rollout(id).await?;
    let rollout = rollout.ok_or(ConsoleError::NotFound("rollout"))?;
    let phones = store.rollout_phones(id).await?;
    let may_change = operator.allows(Scope::RolloutsWrite);
    let actions: &[&str] = match rollout.state {
        RolloutState::Running => &["pause", "abort"],
        RolloutState::Paused => &["resume", "abort"],
        _ => &[],
    };
    let body = html! {
        h1 { "Rollout " (rollout.id) " of " (rollout.app_id) }
        p #rollout-state data-state=(rollout.state.as_str()) data-batch=(rollout.batch) {
            "State " b { (rollout.state.as_str()) } ", batch " (rollout.batch)
            @if let Some(why) = &rollout.pause_reason { ", paused: " (why) } }
        @if may_change { p { @for action in actions {
            a.button href={ (PREFIX) "/rollouts/" (rollout.id) "/" (action) } { (action) "…" }
        } } }
        div.table-wrap { table {
            thead { tr { th { "Phone" } th { "Step" } th.num { "Batch" } th.num { "Attempts" } th { "Job" } th { "Finished" } th { "Error" } } }
            tbody { @for p in &phones {
                tr data-phone=(p.phone_id) data-step=(p.state) data-attempts=(p.attempts)
                    data-batch=(p.batch.map_or(String::new(), |b| b.to_string())) {
                td { a href={ (PREFIX) "/phones/" (p.phone_id) } { (p.phone_id) } }
                td { (p.state) } td.num { (p.batch.map_or(String::new(), |b| b.to_string())) }
                td.num { (p.attempts) } td { (p.job_id.as_deref().unwrap_or("—")) }
                td { (maybe_when(p.finished_at)) } td { (p.error.as_deref().unwrap_or("")) }
            } } }
        } }
    };
    Ok(layout::html_ok(layout::page(&operator, "Rollout", body)))
}

pub(super) async fn webhooks(
    operator: Operator,
    store: web::Data<dyn Store>,
    settings: web::Data<WebhookSettings>,
) -> Result<HttpResponse, ConsoleError> {
    let backlog = store.webhook_backlog().await?;
    let body = html! {
        h1 { "Webhooks" }
        @if settings.endpoints.is_empty() { p.muted { "No endpoint is configured (webhooks.endpoints)." } }
        @else { div.table-wrap { table {
            thead { tr { th { "Endpoint" } th { "Enabled" } th.num { "Pending deliveries" } th { "Oldest undelivered" } } }
            tbody { @for e in &settings.endpoints {
                @let pending = backlog.of(&e.name);
                tr data-endpoint=(e.name) data-pending=(pending.map_or(0, |b| b.pending)) {
                    td { (e.name) } td { (if e.enabled { "yes" } else { "no" }) }
                    td.num { (pending.map_or(0, |b| b.pending)) }
                    td { (maybe_when(pending.map(|b| b.oldest))) }
                }
            } }
        } } }
        p { "Oldest event not yet fanned out: " (maybe_when(backlog.not_fanned_out)) }
    };
    Ok(layout::html_ok(layout::page(&operator, "Webhooks", body)))
}
