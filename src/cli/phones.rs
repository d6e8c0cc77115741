//! `cphub phones …`: the fleet as the control plane sees it, and the batch operations on it.
//! Prints one line per phone and reports whether every phone succeeded.

use futures_util::StreamExt;

use super::{Format, Outcome, PhonesCommand, Target};
use crate::config::Settings;
use crate::cph::properties::{PropertyError, callback_property};
use crate::cph::{BatchOutcome, CphClient, CphError, Job, PhoneFilter, PhoneItem, model};
use crate::domain::{Action, Outcome as RecoveryOutcome, PhoneId, Reason, UtcTime};
use crate::store::{self, NewRecovery, Store};
use crate::telemetry::ErrorChain;
use crate::watchdog::{WatchdogError, account_refusal};

/// Phones per batch request (the reference sets no limit; this keeps bodies small).
const BATCH: usize = 100;
/// Jobs followed at once with --wait.
const FOLLOW_CONCURRENCY: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Cph(#[from] CphError),
    #[error(transparent)]
    Property(#[from] PropertyError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Watchdog(#[from] crate::watchdog::WatchdogError),
    #[error("{0}")]
    InvalidPhone(String),
    #[error(transparent)]
    Exec(#[from] super::encode::EncodeError),
}

pub async fn run(settings: &Settings, command: PhonesCommand) -> Result<Outcome, CliError> {
    match command {
        PhonesCommand::List {
            server_id,
            status,
            format,
        } => {
            let client = CphClient::new(&settings.cph)?;
            let phones = client
                .list_phones(&PhoneFilter { server_id, status })
                .await?;
            print_phones(&phones, format);
            Ok(Outcome::AllSucceeded)
        }
        PhonesCommand::ConfigureCallbacks {
            public_url,
            target,
            heartbeat_interval,
            dry_run,
            wait,
            restart_idle,
        } => {
            // Checked before any call: a bad URL must not reach a single phone.
            let property = callback_property(settings, public_url.as_deref(), heartbeat_interval)?;
            let client = CphClient::new(&settings.cph)?;
            let phone_ids = resolve(&client, target).await?;
            if dry_run {
                println!("property {property}");
                phone_ids
                    .iter()
                    .for_each(|id| println!("{id}\twould configure"));
                return Ok(Outcome::AllSucceeded);
            }
            if wait.wait {
                return super::configure::run(
                    settings,
                    &client,
                    phone_ids,
                    &property,
                    restart_idle,
                )
                .await;
            }
            let items = with_property(&phone_ids, &property);
            let outcome = run_batches(&client, BatchOp::UpdateProperty, items, false, None).await;
            // 4.3.9: some properties take effect only after a restart; only --wait reads the
            // phones back.
            eprintln!(
                "nothing was confirmed: the updates were only submitted; --wait follows them \
                 and reads every phone back"
            );
            outcome
        }
        PhonesCommand::Restart { phone_ids, wait } => {
            let client = CphClient::new(&settings.cph)?;
            // No property in a restart: the phone keeps its own. (4.3.6 accepts one, and is
            // silent on whether it replaces the phone's or merges with them; see
            // cli/configure.rs for the one restart that sends properties.)
            let (phone_ids, refused) = leave_rollouts_alone(settings, phone_ids).await;
            if phone_ids.is_empty() {
                return Ok(Outcome::SomeFailed);
            }
            let items = with_property(&phone_ids, "");
            let sent = run_batches(&client, BatchOp::Restart, items, wait.wait, None).await;
            note_account_refusal(settings, &phone_ids, Action::Restart, &sent).await;
            sent.map(|outcome| {
                if refused {
                    Outcome::SomeFailed
                } else {
                    outcome
                }
            })
        }
        PhonesCommand::Reset {
            phone_ids,
            public_url,
            wait,
        } => {
            let property = callback_property(settings, public_url.as_deref(), None)?;
            super::reset::run(settings, phone_ids, property, wait.wait).await
        }
        PhonesCommand::Exec { phone_id, command } => {
            Ok(super::encode::exec(settings, phone_id, command).await?)
        }
        PhonesCommand::Stop { phone_ids, wait } => {
            let client = CphClient::new(&settings.cph)?;
            let items = with_property(&phone_ids, "");
            // The book learns of the stop at once, not at the next phone sync: until then
            // the watchdog would take the stopped phone's silence for a fault and restart it
            // (chapter 4.3.6 also starts stopped phones), and allocation would hand it out.
            let book = match store::connect(&settings.database).await {
                Ok(book) => Some(book),
                Err(error) => {
                    eprintln!(
                        "warning: the database is unreachable ({}): stopped phones are recorded \
                         only at the next phone sync",
                        ErrorChain(&error)
                    );
                    None
                }
            };
            run_batches(&client, BatchOp::Stop, items, wait.wait, book.as_deref()).await
        }
    }
}

/// The phones to restart, without those a rollout is updating or verifying (a restart
/// would cut the update short; `POST /api/v1/phones/{id}/restart` refuses them alike), each
/// of which gets a "refused" line; and whether there was one. Best effort, as the stop's
/// record: without the database every phone is restarted, with a warning.
async fn leave_rollouts_alone(settings: &Settings, phone_ids: Vec<String>) -> (Vec<String>, bool) {
    let book = match store::connect(&settings.database).await {
        Ok(book) => book,
        Err(error) => {
            eprintln!(
                "warning: the database is unreachable ({}): phones a rollout is updating are \
                 not left out",
                ErrorChain(&error)
            );
            return (phone_ids, false);
        }
    };
    let (mut kept, mut refused) = (Vec::new(), false);
    for phone in phone_ids {
        match rollout_updating(book.as_ref(), &phone).await {
            Some(rollout) => {
                refused = true;
                let refusal = WatchdogError::InRollout {
                    phone: phone.clone(),
                    rollout,
                };
                println!("{phone}\trefused\t{refusal}");
            }
            None => kept.push(phone),
        }
    }
    (kept, refused)
}

/// The rollout updating the phone; None for an id the book cannot hold (the control plane
/// answers for it) or a failed look-up (the warning says why).
async fn rollout_updating(book: &dyn Store, phone: &str) -> Option<i64> {
    let phone_id = PhoneId::parse("phone_id", phone.to_owned()).ok()?;
    match book.rollout_updating(&phone_id).await {
        Ok(rollout) => rollout,
        Err(error) => {
            eprintln!("warning: {phone}: {}", ErrorChain(&error));
            None
        }
    }
}
/// A manual restart refused for the account (7.2 CPS.0006/0007/0008) goes to the
/// recovery log, where the running watchdog finds it and pauses its own recoveries: they
/// would all be refused too. One row for the request, on its first phone. Best effort:
/// without the database the watchdog finds out at its own next call.
async fn note_account_refusal(
    settings: &Settings,
    phone_ids: &[String],
    action: Action,
    sent: &Result<Outcome, CliError>,
) {
    let Err(CliError::Cph(error)) = sent else {
        return;
    };
    let code = error.code().filter(|_| error.is_account_level());
    let (Some(code), Some(first)) = (code, phone_ids.first()) else {
        return;
    };
    let Ok(phone_id) = PhoneId::parse("phone_id", first.clone()) else {
        return;
    };
    let now = UtcTime::now();
    let record = NewRecovery {
        phone_id,
        reason: Reason::Manual,
        action,
        dry_run: false,
        outcome: RecoveryOutcome::Error,
        error: Some(account_refusal(code, &error.to_string())),
        started_at: now,
        ended_at: Some(now),
        detail: Some(format!(
            "cphub phones {action} of {} phone(s), refused for the account",
            phone_ids.len()
        )),
        phone_state: None,
        diagnostics: Default::default(),
        unheard_since: None,
        in_flight_cap: None,
    };
    let recorded = match store::connect(&settings.database).await {
        Ok(book) => book.start_recovery(&record).await.map(drop),
        Err(error) => Err(error),
    };
    if let Err(error) = recorded {
        eprintln!(
            "warning: the refusal is not in the recovery log ({}): the watchdog pauses only \
             at its own next refused call",
            ErrorChain(&error)
        );
    }
}

async fn resolve(client: &CphClient, target: Target) -> Result<Vec<String>, CphError> {
    if !target.phone_ids.is_empty() {
        return Ok(target.phone_ids);
    }
    let filter = PhoneFilter {
        server_id: target.server_id,
        status: None,
    };
    Ok(client
        .list_phones(&filter)
        .await?
        .into_iter()
        .map(|p| p.phone_id)
        .collect())
}

fn with_property(phone_ids: &[String], property: &str) -> Vec<PhoneItem> {
    let property = (!property.is_empty()).then(|| property.to_owned());
    phone_ids
        .iter()
        .map(|id| PhoneItem {
            phone_id: id.clone(),
            property: property.clone(),
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
enum BatchOp {
    UpdateProperty,
    Restart,
    Stop,
}

async fn send(
    client: &CphClient,
    op: BatchOp,
    items: Vec<PhoneItem>,
) -> Result<BatchOutcome, CphError> {
    let ids = || items.iter().map(|i| i.phone_id.clone()).collect::<Vec<_>>();
    match op {
        BatchOp::UpdateProperty => client.update_property(items).await,
        BatchOp::Restart => client.restart(&ids()).await,
        BatchOp::Stop => client.stop(&ids()).await,
    }
}

/// Sends `items` in batches, prints one line per phone, optionally follows the jobs.
/// `book`: where a stop is recorded as soon as the control plane accepts it.
async fn run_batches(
    client: &CphClient,
    op: BatchOp,
    items: Vec<PhoneItem>,
    wait: bool,
    book: Option<&dyn Store>,
) -> Result<Outcome, CliError> {
    let mut outcome = Outcome::AllSucceeded;
    for chunk in items.chunks(BATCH) {
        let requested: Vec<String> = chunk.iter().map(|i| i.phone_id.clone()).collect();
        // A batch refused whole, or whose answer was lost, is each of its phones' line, and
        // the command goes on: ending with the error alone hid what the earlier batches
        // did, and that this one may have been done (a lost answer).
        let answer = match send(client, op, chunk.to_vec()).await {
            Ok(answer) => answer,
            Err(error) => {
                let (code, why) = batch_refusal(&error);
                for phone in &requested {
                    println!("{phone}\tfailed\t{code}\t{why}");
                }
                outcome = Outcome::SomeFailed;
                continue;
            }
        };
        if let (BatchOp::Stop, Some(book)) = (op, book) {
            record_stopped(book, &answer).await;
        }
        if report_batch(client, &requested, &answer, wait).await == Outcome::SomeFailed {
            outcome = Outcome::SomeFailed;
        }
    }
    Ok(outcome)
}

/// The code and why of a batch call that failed whole: `OUTCOME_UNKNOWN` when it may have
/// been done (7.1.2: its answer lost), else the control plane's code, or `NOT_SENT`.
pub(super) fn batch_refusal(error: &CphError) -> (&str, String) {
    let code = match error.is_outcome_unknown() {
        true => "OUTCOME_UNKNOWN",
        false => error.code().unwrap_or("NOT_SENT"),
    };
    (code, ErrorChain(error).to_string())
}

/// Writes "stopped" (chapter 4.3.1: 8) for every phone whose stop was accepted: stopped on
/// purpose, so never recovered nor allocated. The next phone sync writes the control
/// plane's own view (stopping, stopped, or stopping failed) over it.
async fn record_stopped(book: &dyn Store, answer: &BatchOutcome) {
    let now = UtcTime::now();
    for (phone, _) in answer.jobs() {
        let Ok(phone_id) = PhoneId::parse("phone_id", phone.to_owned()) else {
            continue;
        };
        if let Err(error) = book
            .record_cph_status(&phone_id, model::status::STOPPED, now)
            .await
        {
            eprintln!(
                "warning: {phone} stopped but not recorded in the database ({}); the next \
                 phone sync will",
                ErrorChain(&error)
            );
        }
    }
}

async fn report_batch(
    client: &CphClient,
    requested: &[String],
    answer: &BatchOutcome,
    wait: bool,
) -> Outcome {
    let mut outcome = Outcome::AllSucceeded;
    for item in answer.failures() {
        let phone = item.phone_id.as_deref().unwrap_or("?");
        let code = item.error_code.as_deref().unwrap_or("NO_JOB");
        println!(
            "{phone}\tfailed\t{code}\t{}",
            item.error_msg.as_deref().unwrap_or("")
        );
        outcome = Outcome::SomeFailed;
    }
    let answered: Vec<&str> = answer
        .items
        .iter()
        .filter_map(|i| i.phone_id.as_deref())
        .collect();
    for missing in requested
        .iter()
        .filter(|id| !answered.contains(&id.as_str()))
    {
        println!("{missing}\tfailed\tNO_ANSWER\tthe control plane did not answer for this phone");
        outcome = Outcome::SomeFailed;
    }
    let jobs: Vec<(String, String)> = answer
        .jobs()
        .map(|(p, j)| (p.to_owned(), j.to_owned()))
        .collect();
    if !wait {
        jobs.iter()
            .for_each(|(phone, job)| println!("{phone}\tsubmitted\tjob={job}"));
        return outcome;
    }
    let ended = futures_util::stream::iter(jobs)
        .map(|(phone, job)| async move { (phone, job.clone(), client.follow_job(&job).await) })
        .buffered(FOLLOW_CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (phone, job_id, result) in ended {
        if !print_job_end(&phone, &job_id, &result) {
            outcome = Outcome::SomeFailed;
        }
    }
    outcome
}

/// Prints how a followed job ended; true when it succeeded.
pub fn print_job_end(phone: &str, job_id: &str, result: &Result<Job, CphError>) -> bool {
    match result {
        Ok(job) if job.status == model::job_status::SUCCEEDED => {
            println!("{phone}\tsucceeded\tjob={job_id}");
            true
        }
        Ok(job) => {
            let code = job.error_code.as_deref().unwrap_or("JOB_FAILED");
            println!(
                "{phone}\tfailed\tjob={job_id}\t{code}\t{}",
                job.error_msg.as_deref().unwrap_or("")
            );
            false
        }
        Err(error) => {
            println!(
                "{phone}\tunknown\tjob={job_id}\t{}",
                crate::telemetry::ErrorChain(error)
            );
            false
        }
    }
}

fn print_phones(phones: &[crate::cph::Phone], format: Format) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(phones).unwrap_or_default()
        ),
        Format::Table => {
            println!(
                "{:<34} {:<24} {:<34} STATUS",
                "PHONE_ID", "NAME", "SERVER_ID"
            );
            for p in phones {
                let status = format!("{} ({})", p.status, model::status::name(p.status));
                println!(
                    "{:<34} {:<24} {:<34} {status}",
                    p.phone_id, p.phone_name, p.server_id
                );
            }
        }
    }
}
