//! `cphub audit list`: the audit trail, straight from the database; and the lines the CLI's
//! own acting commands write there. Those act on the book directly, without a token, so
//! their lines name the operating-system user: `cli:<user>` (`$USER`, or `cli:unknown`).

use clap::Subcommand;
use uuid::Uuid;

use super::{Command, Format, Outcome, PhonesCommand};
use crate::config::{DatabaseSettings, Settings};
use crate::domain::{ParseError, UtcTime};
use crate::store::{self, AuditFilter, NewAuditEntry, StoreError};
use crate::telemetry::ErrorChain;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Newest first.
    List {
        /// Only calls made with this token name (or cli:<user>).
        #[arg(long)]
        token: Option<String>,
        /// Only this action, e.g. "POST /phones/{phone_id}/restart" or "cphub rollout pause".
        #[arg(long)]
        action: Option<String>,
        /// Only this target (a phone id, a rollout id, endpoint/event_id).
        #[arg(long)]
        target: Option<String>,
        /// Only lines at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub async fn run(settings: &Settings, command: AuditCommand) -> Result<Outcome, AuditError> {
    let AuditCommand::List {
        token,
        action,
        target,
        since,
        limit,
        format,
    } = command;
    let filter = AuditFilter {
        token_name: token,
        action,
        target,
        since: since.map(|s| UtcTime::parse("--since", &s)).transpose()?,
        before: None,
        limit: limit.clamp(1, 10_000),
    };
    let store = store::connect(&settings.database).await?;
    let lines = store.audit_log(&filter).await?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&lines).unwrap_or_default()
        ),
        Format::Table => {
            println!(
                "{:<6} {:<26} {:<20} {:<40} {:<24} {:<6} ERROR",
                "ID", "AT", "TOKEN", "ACTION", "TARGET", "STATUS"
            );
            for l in &lines {
                let at = serde_json::to_value(l.at).unwrap_or_default();
                println!(
                    "{:<6} {:<26} {:<20} {:<40} {:<24} {:<6} {}",
                    l.id,
                    at.as_str().unwrap_or_default(),
                    l.token_name,
                    l.action,
                    l.target,
                    l.status,
                    l.error_code.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(Outcome::AllSucceeded)
}

/// What an acting command that writes the book is, for its audit line; None for the rest
/// (reads, and commands that only call the control plane: the CPH API keeps its own
/// record of those).
pub struct Audited {
    action: String,
    target: String,
}

impl Audited {
    pub fn of(command: &Command) -> Option<Audited> {
        use super::rollout::RolloutCommand as R;
        use super::webhooks::WebhooksCommand as W;
        let (action, target) = match command {
            Command::Rollout(R::Start(_)) => ("cphub rollout start", String::new()),
            Command::Rollout(R::Pause { id, .. }) => ("cphub rollout pause", id.to_string()),
            Command::Rollout(R::Resume { id }) => ("cphub rollout resume", id.to_string()),
            Command::Rollout(R::Abort { id }) => ("cphub rollout abort", id.to_string()),
            Command::Webhooks(W::Retry { endpoint, event_id }) => {
                ("cphub webhooks retry", format!("{endpoint}/{event_id}"))
            }
            Command::Webhooks(W::Replay { endpoint, .. }) => {
                ("cphub webhooks replay", endpoint.clone())
            }
            Command::Phones(PhonesCommand::Reset { phone_ids, .. }) => {
                ("cphub phones reset", phone_ids.join(","))
            }
            _ => return None,
        };
        Some(Audited {
            action: action.to_owned(),
            target,
        })
    }

    /// Writes the line: status 0 when the command succeeded, 1 when it (or some phone)
    /// failed, as its exit status. A line that cannot be written is reported, not fatal.
    pub async fn record(self, database: &DatabaseSettings, succeeded: bool) {
        let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let entry = NewAuditEntry {
            at: UtcTime::now(),
            token_name: format!("cli:{user}"),
            request_id: Uuid::new_v4().simple().to_string(),
            action: self.action,
            target: self.target,
            status: if succeeded { 0 } else { 1 },
            error_code: None,
            detail: "{}".into(),
        };
        let written = match store::connect(database).await {
            Ok(store) => store.record_audit(&entry).await,
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            eprintln!(
                "cphub: the audit line was not written: {}",
                ErrorChain(&error)
            );
        }
    }
}
