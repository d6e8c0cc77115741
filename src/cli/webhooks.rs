//! `cphub webhooks list|show|retry|replay`: the webhook deliveries, straight from the
//! database (works while `serve` runs, and without it; a running dispatcher picks up a
//! retried or replayed delivery at its next poll). docs/webhooks.md.

use clap::Subcommand;

use super::{Format, Outcome};
use crate::config::Settings;
use crate::domain::{ParseError, UtcTime};
use crate::store::{self, EndpointFilter, StoreError};

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Deliveries, newest first.
    List {
        #[arg(long)]
        endpoint: Option<String>,
        /// pending, delivered or failed.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One delivery and every attempt: status, latency, the answer's excerpt, the error.
    Show { endpoint: String, event_id: String },
    /// Send one delivery again now, with a fresh retry schedule.
    Retry { endpoint: String, event_id: String },
    /// Send an endpoint every event (of its types) that happened since a time, again.
    Replay {
        endpoint: String,
        /// RFC 3339, e.g. 2026-12-01T00:00:00Z.
        #[arg(long)]
        since: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WebhooksError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error("no webhook endpoint named {0:?} in [webhooks] endpoints")]
    UnknownEndpoint(String),
    #[error("--state must be pending, delivered or failed, not {0:?}")]
    UnknownState(String),
    #[error("no delivery of {event_id} to {endpoint}")]
    NotFound { endpoint: String, event_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn run(settings: &Settings, command: WebhooksCommand) -> Result<Outcome, WebhooksError> {
    let store = store::connect(&settings.database).await?;
    let now = UtcTime::now();
    match command {
        WebhooksCommand::List {
            endpoint,
            state,
            limit,
            format,
        } => {
            if let Some(state) = state.as_deref()
                && !["pending", "delivered", "failed"].contains(&state)
            {
                return Err(WebhooksError::UnknownState(state.to_owned()));
            }
            let limit = limit.clamp(1, 10_000);
            let found =
                (store.webhook_deliveries(endpoint.as_deref(), state.as_deref(), limit)).await?;
            print_list(&found, format);
        }
        WebhooksCommand::Show { endpoint, event_id } => {
            let found = store.webhook_delivery(&endpoint, &event_id).await?;
            let (delivery, attempts) =
                found.ok_or(WebhooksError::NotFound { endpoint, event_id })?;
            let shown = serde_json::json!({"delivery": delivery, "attempts": attempts});
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).unwrap_or_default()
            );
        }
        WebhooksCommand::Retry { endpoint, event_id } => {
            if !store
                .retry_webhook_delivery(&endpoint, &event_id, now)
                .await?
            {
                return Err(WebhooksError::NotFound { endpoint, event_id });
            }
            println!("{event_id} to {endpoint}: pending, due now");
        }
        WebhooksCommand::Replay { endpoint, since } => {
            let since = UtcTime::parse("--since", &since)?;
            let configured = settings
                .webhooks
                .endpoints
                .iter()
                .find(|e| e.name == endpoint);
            let configured = configured.ok_or(WebhooksError::UnknownEndpoint(endpoint))?;
            let filter = EndpointFilter {
                name: configured.name.clone(),
                events: configured.events.clone(),
            };
            let replayed = store.replay_webhooks(&filter, since, now).await?;
            println!("{replayed} deliveries to {} pending again", filter.name);
        }
    }
    Ok(Outcome::AllSucceeded)
}

fn print_list(found: &[store::DeliveryView], format: Format) {
    if format == Format::Json {
        return println!(
            "{}",
            serde_json::to_string_pretty(found).unwrap_or_default()
        );
    }
    println!(
        "{:<16} {:<48} {:<16} {:<10} {:>8} ERROR",
        "ENDPOINT", "EVENT_ID", "TYPE", "STATE", "ATTEMPTS"
    );
    for d in found {
        println!(
            "{:<16} {:<48} {:<16} {:<10} {:>8} {}",
            d.endpoint,
            d.event_id,
            d.event_type,
            d.state,
            d.attempts,
            d.last_error.as_deref().unwrap_or("")
        );
    }
}
