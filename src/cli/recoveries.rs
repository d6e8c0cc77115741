//! `cphub recoveries list`: the recovery log, straight from the database (works while
//! `serve` runs, and without it).

use super::{Format, Outcome, RecoveriesCommand};
use crate::config::Settings;
use crate::domain::{ParseError, PhoneId};
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RecoveriesError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn run(
    settings: &Settings,
    command: RecoveriesCommand,
) -> Result<Outcome, RecoveriesError> {
    let RecoveriesCommand::List {
        phone_id,
        limit,
        format,
    } = command;
    let phone_id = phone_id
        .map(|p| PhoneId::parse("--phone-id", p))
        .transpose()?;
    let store = store::connect(&settings.database).await?;
    let log = store
        .recoveries(phone_id.as_ref(), None, limit.clamp(1, 10_000))
        .await?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&log).unwrap_or_default()),
        Format::Table => {
            println!(
                "{:<6} {:<34} {:<15} {:<12} {:<10} {:<26} ERROR",
                "ID", "PHONE_ID", "REASON", "ACTION", "OUTCOME", "STARTED"
            );
            for r in &log {
                let started = serde_json::to_value(r.started_at).unwrap_or_default();
                println!(
                    "{:<6} {:<34} {:<15} {:<12} {:<10} {:<26} {}",
                    r.id,
                    r.phone_id,
                    r.reason,
                    r.action,
                    r.outcome,
                    started.as_str().unwrap_or_default(),
                    r.error.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(Outcome::AllSucceeded)
}
