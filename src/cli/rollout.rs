//! `cphub rollout start|status|pause|resume|abort`: the rollouts of `POST /api/v1/rollouts`
//! and its siblings, on the same service and the same book. Starting one needs the [cph]
//! settings (its versions are checked on the servers, 5.3.1); the rest only the database.
//! The engine of a running `cphub serve` (its watchdog's leader) does the updating.

use std::sync::Arc;

use clap::{Args, Subcommand};

use super::{Format, Outcome};
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::cph::{CphClient, CphError};
use crate::domain::rollout_versions;
use crate::domain::{AppId, ParseError, PhoneId, RolloutPlan, RolloutTarget};
use crate::rollout::{Change, RolloutError, Rollouts, StartRollout, change_state};
use crate::store::{self, Rollout, RolloutPhone, Store, StoreError};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start updating the phones with an app to application versions (5.3.7).
    Start(StartArgs),
    /// One rollout with each phone's step, or (without an id) the newest rollouts.
    Status {
        id: Option<i64>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Take no new phones; updates already sent are followed to their end.
    Pause {
        id: i64,
        /// Kept with the rollout, to tell others why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Go on from a new batch.
    Resume { id: i64 },
    /// Stop for good; drained phones go back to the pool.
    Abort { id: i64 },
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[arg(long)]
    app_id: String,
    /// An application version id (chapter 5.2); repeatable.
    #[arg(long = "version", required = true)]
    versions: Vec<String>,
    /// Only the phones of this server (default: every phone with the app).
    #[arg(long, conflicts_with_all = ["phone_ids", "percent"])]
    server_id: Option<String>,
    /// Only these phones (repeatable).
    #[arg(long = "phone-id", conflicts_with = "percent")]
    phone_ids: Vec<String>,
    /// Only this share of the phones with the app, 1 to 100.
    #[arg(long)]
    percent: Option<i64>,
    /// Phones updated first, alone.
    #[arg(long, default_value_t = 1)]
    canary: u32,
    #[arg(long, default_value_t = 10)]
    batch_size: u32,
    /// A batch with more failed phones than this pauses the rollout.
    #[arg(long, default_value_t = 0)]
    max_failures: u32,
    /// How long a drained phone's session may play on before the phone is skipped.
    #[arg(long, default_value_t = 600)]
    drain_deadline_secs: u32,
    /// Cut short a session that outlives the drain deadline.
    #[arg(long)]
    force: bool,
    /// Push the versions (5.3.4) to the servers that lack them instead of refusing.
    #[arg(long)]
    push_first: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutCliError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cph(#[from] CphError),
    #[error(transparent)]
    Rollout(#[from] RolloutError),
}

pub async fn run(settings: &Settings, command: RolloutCommand) -> Result<Outcome, RolloutCliError> {
    let book = store::connect(&settings.database).await?;
    let now = SystemClock.now();
    let rollout = match command {
        RolloutCommand::Start(args) => start(settings, book, args).await?,
        RolloutCommand::Status { id: None, format } => {
            print_list(&book.rollouts(50).await?, format);
            return Ok(Outcome::AllSucceeded);
        }
        RolloutCommand::Status {
            id: Some(id),
            format,
        } => return status(book.as_ref(), id, format).await,
        RolloutCommand::Pause { id, reason } => {
            let reason = crate::domain::pause_reason(reason)?;
            let pause = Change::Pause {
                by: "operator",
                why: &reason,
            };
            change_state(book.as_ref(), now, id, pause).await?
        }
        RolloutCommand::Resume { id } => {
            change_state(book.as_ref(), now, id, Change::Resume).await?
        }
        RolloutCommand::Abort { id } => change_state(book.as_ref(), now, id, Change::Abort).await?,
    };
    print_list(std::slice::from_ref(&rollout), Format::Table);
    Ok(Outcome::AllSucceeded)
}

async fn start(
    settings: &Settings,
    book: Arc<dyn Store>,
    args: StartArgs,
) -> Result<Rollout, RolloutCliError> {
    let client = Arc::new(CphClient::new(&settings.cph)?);
    let (max_in_flight, stale_after) = (settings.watchdog.max_in_flight, settings.fleet.stale_after());
    // The CLI starts a rollout; the serving replicas' engines drive it (their own tick).
    let tick = std::time::Duration::from_millis(settings.watchdog.interval_ms);
    let clock = Arc::new(SystemClock);
    let rollouts = Rollouts::new(book, client, clock, max_in_flight, stale_after, tick);
    Ok(rollouts.start(&ask(args)?).await?)
}

fn ask(args: StartArgs) -> Result<StartRollout, ParseError> {
    let target = match (args.server_id, args.phone_ids.is_empty(), args.percent) {
        (Some(server), _, _) => {
            RolloutTarget::ServerId(PhoneId::parse("--server-id", server)?.to_string())
        }
        (None, false, _) => RolloutTarget::phones("--phone-id", args.phone_ids)?,
        (None, true, Some(percent)) => RolloutTarget::percent(percent)?,
        (None, true, None) => RolloutTarget::All,
    };
    let versions = rollout_versions("--version", args.versions)?;
    Ok(StartRollout {
        app_id: AppId::parse("--app-id", args.app_id)?,
        app_version_ids: versions,
        target,
        plan: RolloutPlan::new(
            args.canary,
            args.batch_size,
            args.max_failures,
            args.drain_deadline_secs,
            args.force,
        )?,
        push_first: args.push_first,
    })
}

async fn status(book: &dyn Store, id: i64, format: Format) -> Result<Outcome, RolloutCliError> {
    let rollout = book.rollout(id).await?;
    let rollout = rollout.ok_or(RolloutError::NotFound(id))?;
    let phones = book.rollout_phones(id).await?;
    match format {
        Format::Json => {
            let mut view = serde_json::to_value(&rollout).unwrap_or_default();
            view["phones"] = serde_json::to_value(&phones).unwrap_or_default();
            println!(
                "{}",
                serde_json::to_string_pretty(&view).unwrap_or_default()
            );
        }
        Format::Table => {
            print_list(std::slice::from_ref(&rollout), Format::Table);
            println!();
            print_phones(&phones);
        }
    }
    Ok(Outcome::AllSucceeded)
}

fn print_list(rollouts: &[Rollout], format: Format) {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(rollouts).unwrap_or_default()
        );
        return;
    }
    println!(
        "{:<6} {:<24} {:<8} {:<6} PAUSED",
        "ID", "APP_ID", "STATE", "BATCH"
    );
    for r in rollouts {
        let paused = match (&r.paused_by, &r.pause_reason) {
            (Some(by), why) => format!("by {by}: {}", why.as_deref().unwrap_or("")),
            (None, _) => String::new(),
        };
        println!(
            "{:<6} {:<24} {:<8} {:<6} {paused}",
            r.id, r.app_id, r.state, r.batch
        );
    }
}

fn print_phones(phones: &[RolloutPhone]) {
    println!(
        "{:<34} {:<10} {:<6} {:<9} ERROR",
        "PHONE_ID", "STEP", "BATCH", "ATTEMPTS"
    );
    for p in phones {
        let batch = p.batch.map(|b| b.to_string()).unwrap_or_default();
        println!(
            "{:<34} {:<10} {:<6} {:<9} {}",
            p.phone_id,
            p.state,
            batch,
            p.attempts,
            p.error.as_deref().unwrap_or("")
        );
    }
}
