//! `cphub webhooks list|show|retry|replay`: the webhook deliveries, straight from the
//! database (works while `serve` runs, and without it; a running dispatcher picks up a
//! retried or replayed delivery at its next poll). docs/webhooks.md.

use clap::Subcommand;

use super::{Format, Outcome};
use crate::config::Settings;
use crate::domain::{DeliveryState, ParseError, UtcTime, WebhookEventId};
use crate::store::{self, DeliveryFilter, StoreError};
use crate::webhooks::{Deliveries, OperateError};

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
    #[error(transparent)]
    Operate(#[from] OperateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn run(settings: &Settings, command: WebhooksCommand) -> Result<Outcome, WebhooksError> {
    let store = store::connect(&settings.database).await?;
    let deliveries = Deliveries::new(store.as_ref(), &settings.webhooks);
    let now = UtcTime::now();
    match command {
        WebhooksCommand::List {
            endpoint,
            state,
            limit,
            format,
        } => {
            let filter = DeliveryFilter {
                endpoint,
                state: state
                    .map(|s| DeliveryState::parse("--state", &s))
                    .transpose()?,
                before: None,
                limit: limit.clamp(1, 10_000),
            };
            print_list(&deliveries.list(&filter).await?, format);
        }
        WebhooksCommand::Show { endpoint, event_id } => {
            let event_id = WebhookEventId::parse("EVENT_ID", event_id)?;
            print_json(&deliveries.show(&endpoint, &event_id).await?);
        }
        WebhooksCommand::Retry { endpoint, event_id } => {
            let event_id = WebhookEventId::parse("EVENT_ID", event_id)?;
            deliveries.retry(&endpoint, &event_id, now).await?;
            println!("{event_id} to {endpoint}: pending, due now");
        }
        WebhooksCommand::Replay { endpoint, since } => {
            let since = UtcTime::parse("--since", &since)?;
            let replayed = deliveries.replay(&endpoint, since, now).await?;
            println!("{replayed} deliveries to {endpoint} pending again");
        }
    }
    Ok(Outcome::AllSucceeded)
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn print_list(found: &[store::DeliveryView], format: Format) {
    if format == Format::Json {
        return print_json(&found);
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
