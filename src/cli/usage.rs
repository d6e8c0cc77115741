//! `cphub usage`: the billing report of `GET /api/v1/usage`, straight from the database.
//! Both plan with `usage::plan` and build a `usage::UsageReport`, so the numbers are the same.

use clap::{Args, ValueEnum};

use super::Outcome;
use crate::config::Settings;
use crate::domain::ParseError;
use crate::store;
use crate::store::StoreError;
use crate::usage::{self, UsageParams};

#[derive(Debug, Args)]
pub struct UsageCommand {
    #[command(flatten)]
    params: UsageParams,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    format: ReportFormat,
    /// Print the database's plan for the query instead of the report (PostgreSQL runs it:
    /// EXPLAIN ANALYZE).
    #[arg(long)]
    explain: bool,
    /// Compute from the sessions alone, without the rollups: slower over long windows, the
    /// same numbers (to check the rollups, and the benchmark's before).
    #[arg(long, conflicts_with = "explain")]
    from_sessions: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug, thiserror::Error)]
pub enum UsageCommandError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error("usage query failed")]
    Store(#[from] StoreError),
    #[error("could not write CSV")]
    Csv(#[from] csv::Error),
    #[error("could not write JSON")]
    Json(#[from] serde_json::Error),
}

pub async fn run(settings: &Settings, command: UsageCommand) -> Result<Outcome, UsageCommandError> {
    let store = store::connect(&settings.database).await?;
    let plan = usage::plan(&settings.usage, &command.params)?;
    if command.explain {
        let steps = store.explain_usage(&plan.query).await?;
        steps.iter().for_each(|step| println!("{step}"));
        return Ok(Outcome::AllSucceeded);
    }
    let rows = match command.from_sessions {
        true => store.usage_raw(&plan.query).await?,
        false => store.usage(&plan.query).await?,
    };
    let report = usage::UsageReport::new(plan, rows);
    match command.format {
        ReportFormat::Table => print!("{}", usage::to_table(&report)),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Csv => print!("{}", usage::to_csv(&report)?),
    }
    Ok(Outcome::AllSucceeded)
}
