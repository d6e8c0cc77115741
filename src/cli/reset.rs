//! `cphub phones reset`: a manual reset through the watchdog's own code path, as `POST
//! /api/v1/phones/{id}/reset` takes it. A reset restores factory settings (chapter 4.3.5),
//! so the one implementation that reads the phone's own properties (4.3.2), merges cphub's
//! callback ones over them, drops and names a key the reset refuses, records the reset in
//! the recovery log and keeps to the watchdog's budgets is the one used here too; a second
//! one in the CLI would drift from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Outcome;
use super::phones::CliError;
use crate::clock::SystemClock;
use crate::config::Settings;
use crate::cph::{ACCOUNT_CODES, CphClient};
use crate::domain::{Outcome as RecoveryOutcome, PhoneId};
use crate::metrics::Metrics;
use crate::store::{self, Recovery, Store};
use crate::watchdog::{Action, Watchdog};

/// Resets each phone in turn and prints one line per phone: its recovery's outcome and
/// what the reset re-applied or dropped. `property`: cphub's callback properties.
pub(super) async fn run(
    settings: &Settings,
    phone_ids: Vec<String>,
    property: String,
    wait: bool,
) -> Result<Outcome, CliError> {
    // Without the book there is no recovery log, no budget and no in-progress guard: the
    // reset is not sent rather than sent unrecorded.
    let book = store::connect(&settings.database).await?;
    let client = Arc::new(CphClient::new(&settings.cph)?);
    // The metrics of this process are never scraped; the watchdog only needs somewhere to
    // count.
    let metrics = Arc::new(Metrics::new(settings.metrics.per_app_labels));
    let watchdog = Watchdog::new(
        Arc::clone(&book),
        client,
        Arc::new(SystemClock),
        metrics,
        settings.watchdog.clone(),
        &settings.fleet,
        Some(property),
    );
    let mut outcome = Outcome::AllSucceeded;
    for phone in phone_ids {
        let line = match reset_one(settings, &watchdog, book.as_ref(), &phone, wait).await {
            Ok(recovery) => {
                outcome = worse(outcome, recovery.outcome, wait);
                note_account_refusal(&recovery);
                recovery_line(&phone, &recovery)
            }
            Err(error) => {
                outcome = Outcome::SomeFailed;
                format!("{phone}\trefused\t{error}")
            }
        };
        println!("{line}");
    }
    if !wait {
        eprintln!(
            "the resets were only submitted: the running watchdog follows their jobs and \
             records how they end (cphub recoveries list); --wait follows them here"
        );
    }
    Ok(outcome)
}

/// The watchdog's manual reset of one phone, then its recovery as the log holds it now
/// (with `wait`: once it ended, or at `cph.job_deadline_secs`).
async fn reset_one(
    settings: &Settings,
    watchdog: &Arc<Watchdog>,
    book: &dyn Store,
    phone: &str,
    wait: bool,
) -> Result<Recovery, CliError> {
    let phone_id = PhoneId::parse("phone_id", phone.to_owned())
        .map_err(|error| CliError::InvalidPhone(error.to_string()))?;
    let started = watchdog.manual(&phone_id, Action::Reset).await?;
    let deadline = Instant::now() + Duration::from_secs(settings.cph.job_deadline_secs);
    let poll = Duration::from_millis(settings.cph.job_poll_interval_ms);
    loop {
        let now = recovery(book, &phone_id, &started).await?;
        if !wait || now.outcome != RecoveryOutcome::Pending || Instant::now() >= deadline {
            return Ok(now);
        }
        tokio::time::sleep(poll).await;
    }
}

/// `started` as the log holds it now: the watchdog notes the job, the detail and the
/// outcome after the row is written.
async fn recovery(
    book: &dyn Store,
    phone_id: &PhoneId,
    started: &Recovery,
) -> Result<Recovery, CliError> {
    let log = book
        .recoveries(Some(phone_id), Some(started.started_at), 50)
        .await?;
    Ok(log
        .into_iter()
        .find(|r| r.id == started.id)
        .unwrap_or_else(|| started.clone()))
}

/// With `--wait`, a recovery still pending at `cph.job_deadline_secs` is not a success: a
/// script reading the exit code asked for the end, and did not get it.
fn worse(outcome: Outcome, recovery: RecoveryOutcome, waited: bool) -> Outcome {
    match recovery {
        RecoveryOutcome::Failed | RecoveryOutcome::Error => Outcome::SomeFailed,
        RecoveryOutcome::Pending if waited => Outcome::SomeFailed,
        _ => outcome,
    }
}

/// `PHONE  OUTCOME  recovery=ID  job=JOB  DETAIL  ERROR`: the detail says which of the
/// phone's own properties were re-applied and which the reset refused.
fn recovery_line(phone: &str, recovery: &Recovery) -> String {
    let job = recovery.job_id.as_deref().unwrap_or("-");
    let mut line = format!(
        "{phone}\t{}\trecovery={}\tjob={job}\t{}",
        recovery.outcome.as_str(),
        recovery.id,
        recovery.detail.as_deref().unwrap_or("")
    );
    if let Some(error) = &recovery.error {
        line = format!("{line}\t{error}");
    }
    line
}

/// The account refused (7.2): the watchdog of this process paused, and the recorded
/// refusal pauses the serving one too; said once more on stderr, where an operator looks.
fn note_account_refusal(recovery: &Recovery) {
    let error = recovery.error.as_deref().unwrap_or_default();
    if let Some(code) = ACCOUNT_CODES.iter().find(|code| error.starts_with(**code)) {
        eprintln!(
            "warning: the control plane refuses the account ({code}, chapter 7.2): the \
             watchdog pauses its recoveries until a person fixes the account"
        );
    }
}
