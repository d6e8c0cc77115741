//! `cphub queue list`: the wait queue, straight from the database (works while `serve`
//! runs, and without it), like `sessions list`: per app, players with a phone assigned
//! first, then the waiting ones in serving order.

use clap::Subcommand;

use super::{Format, Outcome};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::store::{self, QueueEntry, StoreError};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Live entries per app in serving order.
    List {
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum QueueCliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not write JSON")]
    Json(#[from] serde_json::Error),
}

pub async fn run(settings: &Settings, command: QueueCommand) -> Result<Outcome, QueueCliError> {
    let QueueCommand::List { limit, format } = command;
    let store = store::connect(&settings.database).await?;
    let entries = store
        .queue_entries(SystemClock.now(), limit.clamp(1, 10_000))
        .await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Table => print_table(&entries),
    }
    Ok(Outcome::AllSucceeded)
}

fn print_table(entries: &[QueueEntry]) {
    println!(
        "{:<34} {:<24} {:<20} {:>8} {:>8} {:<26} PHONE_ID",
        "QUEUE_ID", "APP_ID", "USER_ID", "PRIORITY", "POSITION", "JOINED"
    );
    for e in entries {
        let joined = serde_json::to_value(e.joined_at).unwrap_or_default();
        println!(
            "{:<34} {:<24} {:<20} {:>8} {:>8} {:<26} {}",
            e.queue_id,
            e.app_id,
            e.user_id,
            e.priority.value(),
            e.position,
            joined.as_str().unwrap_or_default(),
            e.phone_id.as_ref().map_or("", |p| p.as_str()),
        );
    }
}
