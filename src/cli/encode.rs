//! `cphub encode-servers list` (chapter 4.6.1, live from the control plane) and `cphub phones
//! exec PHONE -- CMD` (an ad-hoc look through the synchronous ADB shell API, 4.7.5, its
//! limits checked before any call).

use std::time::Duration;

use super::{Format, Outcome};
use crate::config::Settings;
use crate::cph::{CphClient, CphError};
use crate::domain::{CommandOutcome, EncodeServerState, PhoneId, ShellCommand, ShellCommandError};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Cph(#[from] CphError),
    #[error("{0}")]
    InvalidPhone(String),
    #[error("not sent: {0}")]
    InvalidCommand(#[from] ShellCommandError),
}

pub async fn list(settings: &Settings, format: Format) -> Result<Outcome, EncodeError> {
    let client = CphClient::new(&settings.cph)?;
    let servers = client.list_encode_servers().await?;
    match format {
        Format::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&servers).unwrap_or_default()
            );
        }
        Format::Table => {
            println!(
                "{:<34} {:<34} {:<11} NAME",
                "ENCODE_SERVER_ID", "SERVER_ID", "STATE"
            );
            for s in &servers {
                let state = EncodeServerState::of(s.status);
                println!(
                    "{:<34} {:<34} {:<11} {}",
                    s.encode_server_id, s.server_id, state, s.encode_server_name
                );
            }
        }
    }
    Ok(Outcome::AllSucceeded)
}

/// Prints the output on stdout and, unless it succeeded, why on stderr. The words after
/// `--` make one command, joined by spaces.
pub async fn exec(
    settings: &Settings,
    phone_id: String,
    words: Vec<String>,
) -> Result<Outcome, EncodeError> {
    let phone_id = PhoneId::parse("PHONE", phone_id)
        .map_err(|error| EncodeError::InvalidPhone(error.to_string()))?;
    let command = ShellCommand::parse(&words.join(" "))?;
    let client = CphClient::new(&settings.cph)?;
    let wait = Duration::from_millis(settings.watchdog.diagnostics_timeout_ms);
    let run = client.run_command(phone_id.as_str(), &command, wait).await;
    if let Some(output) = &run.output {
        println!("{output}");
    }
    if run.outcome == CommandOutcome::Succeeded {
        return Ok(Outcome::AllSucceeded);
    }
    let outcome = serde_json::to_value(run.outcome).unwrap_or_default();
    eprintln!(
        "{phone_id}\t{}\t{}",
        outcome.as_str().unwrap_or_default(),
        run.error.as_deref().unwrap_or_default()
    );
    Ok(Outcome::SomeFailed)
}
