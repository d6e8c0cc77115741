//! `cphub usage`: the billing report of `GET /api/v1/usage`, straight from the database.
//! Both call `usage::report`, so the numbers are the same.

use clap::{Args, ValueEnum};

use super::Outcome;
use crate::config::Settings;
use crate::store;
use crate::usage::{self, UsageError, UsageParams};

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
    Usage(#[from] UsageError),
    #[error("could not write CSV")]
    Csv(#[from] csv::Error),
    #[error("could not write JSON")]
    Json(#[from] serde_json::Error),
}

pub async fn run(settings: &Settings, command: UsageCommand) -> Result<Outcome, UsageCommandError> {
    let store = store::connect(&settings.database)
        .await
        .map_err(UsageError::from)?;
    if command.explain {
        let plan = usage::plan(&settings.usage, &command.params).map_err(UsageError::from)?;
        let steps = store
            .explain_usage(&plan.query)
            .await
            .map_err(UsageError::from)?;
        steps.iter().for_each(|step| println!("{step}"));
        return Ok(Outcome::AllSucceeded);
    }
    let report = usage::report(store.as_ref(), &settings.usage, &command.params).await?;
    match command.format {
        ReportFormat::Table => print!("{}", usage::to_table(&report)),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ReportFormat::Csv => print!("{}", usage::to_csv(&report)?),
    }
    Ok(Outcome::AllSucceeded)
}
