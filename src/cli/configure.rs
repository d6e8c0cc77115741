//! `cphub phones configure-callbacks --wait`: writes the callback properties (chapter 4.3.9),
//! follows the jobs, then reads every phone back (4.3.2) to confirm what it holds. 4.3.9:
//! "some attributes take effect only after the cloud phone is restarted", so a succeeded job
//! does not mean the phone calls back to cphub yet. With `--restart-idle`, phones still
//! waiting that cphub's book shows idle are restarted with the properties in the restart
//! call (4.3.6, Table 4-40), `watchdog.max_in_flight` at a time.

use std::collections::HashMap;

use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::Outcome;
use super::phones::CliError;
use crate::config::Settings;
use crate::cph::{CphClient, PhoneItem, model};
use crate::domain::{PhoneId, UtcTime};
use crate::store::{self, Store};
use crate::telemetry::ErrorChain;

/// Phones per property-update request (the reference sets no limit; this keeps bodies small).
const BATCH: usize = 100;
/// Jobs followed, or phones read back, at once.
const CONCURRENCY: usize = 16;

/// Why a phone did not take the properties: an error code (the control plane's, or one of
/// cphub's own in capitals) and its message.
#[derive(Debug, Clone)]
struct Failure {
    code: String,
    message: String,
}

impl Failure {
    fn new(code: &str, message: impl Into<String>) -> Failure {
        Failure {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// What one phone ends as; printed as one line.
#[derive(Debug)]
enum Report {
    /// The phone's property holds cphub's values (`restart_job`: after that restart).
    Applied {
        job: String,
        restart_job: Option<String>,
    },
    /// The update succeeded but the property does not show the values yet. `busy`: the
    /// book's state of a phone `--restart-idle` left alone.
    Waiting {
        job: String,
        busy: Option<String>,
    },
    Failed(Failure),
}

impl Report {
    fn line(&self, phone: &str) -> String {
        match self {
            Report::Applied {
                job,
                restart_job: None,
            } => format!("{phone}\tapplied\tjob={job}"),
            Report::Applied {
                job,
                restart_job: Some(restart),
            } => format!("{phone}\tapplied\tjob={job}\trestart_job={restart}"),
            Report::Waiting { job, busy: None } => {
                format!("{phone}\twaiting for a restart\tjob={job}")
            }
            Report::Waiting {
                job,
                busy: Some(state),
            } => format!(
                "{phone}\twaiting for a restart (busy, not restarted)\tjob={job}\tstate={state}"
            ),
            Report::Failed(failure) => {
                format!("{phone}\tfailed\t{}\t{}", failure.code, failure.message)
            }
        }
    }
}

/// Updates, follows, reads back and (with `restart_idle`) restarts; prints one line per phone.
pub(super) async fn run(
    settings: &Settings,
    client: &CphClient,
    phone_ids: Vec<String>,
    property: &str,
    restart_idle: bool,
) -> Result<Outcome, CliError> {
    let mut phone_ids = phone_ids;
    let mut seen = std::collections::HashSet::new();
    phone_ids.retain(|id| seen.insert(id.clone()));
    let wanted = wanted_values(property)?;

    let items = items(&phone_ids, property);
    let mut reports: HashMap<String, Report> = HashMap::new();
    let mut succeeded = Vec::new();
    for chunk in items.chunks(BATCH) {
        for (phone, ended) in submit_and_follow(client, chunk.to_vec(), false).await {
            match ended {
                Ok(job) => succeeded.push((phone, job)),
                Err(failure) => {
                    reports.insert(phone, Report::Failed(failure));
                }
            }
        }
    }

    let read_back = read_back(client, &wanted, succeeded).await;
    let mut waiting = Vec::new();
    for (phone, job, holds) in read_back {
        match holds {
            Ok(true) => {
                reports.insert(
                    phone,
                    Report::Applied {
                        job,
                        restart_job: None,
                    },
                );
            }
            Ok(false) => waiting.push((phone, job)),
            Err(failure) => {
                reports.insert(phone, Report::Failed(failure));
            }
        }
    }

    if restart_idle && !waiting.is_empty() {
        restart_the_idle(settings, client, property, &wanted, waiting, &mut reports).await?;
    } else {
        for (phone, job) in waiting {
            reports.insert(phone, Report::Waiting { job, busy: None });
        }
    }

    let mut outcome = Outcome::AllSucceeded;
    for phone in &phone_ids {
        let report = reports.remove(phone).unwrap_or_else(|| {
            Report::Failed(Failure::new("NO_ANSWER", "nothing is known of this phone"))
        });
        if matches!(report, Report::Failed(_)) {
            outcome = Outcome::SomeFailed;
        }
        println!("{}", report.line(phone));
    }
    Ok(outcome)
}

/// Restarts, with the properties, the waiting phones the book shows idle, in batches of
/// `watchdog.max_in_flight`, each batch's jobs followed before the next; the others are
/// reported busy. Each batch is read from the book just before it is sent: following a
/// batch's jobs takes up to `cph.job_deadline_secs`, and a phone idle when the command
/// began may have been given to a player since.
async fn restart_the_idle(
    settings: &Settings,
    client: &CphClient,
    property: &str,
    wanted: &Map<String, Value>,
    waiting: Vec<(String, String)>,
    reports: &mut HashMap<String, Report>,
) -> Result<(), CliError> {
    let book = match store::connect(&settings.database).await {
        Ok(book) => Some(book),
        Err(error) => {
            eprintln!(
                "warning: the database is unreachable ({}): no phone is restarted, since \
                 none can be shown idle",
                ErrorChain(&error)
            );
            None
        }
    };
    let update_jobs: HashMap<String, String> = waiting.iter().cloned().collect();
    for chunk in waiting.chunks(settings.watchdog.max_in_flight.max(1)) {
        let fresh_since = UtcTime::now().minus(settings.fleet.stale_after());
        let chunk = still_idle(book.as_deref(), chunk, fresh_since, reports).await;
        if chunk.is_empty() {
            continue;
        }
        let restarted = submit_and_follow(client, items(&chunk, property), true).await;
        let mut succeeded = Vec::new();
        for (phone, ended) in restarted {
            match ended {
                Ok(restart_job) => succeeded.push((phone, restart_job)),
                Err(failure) => {
                    reports.insert(phone, Report::Failed(failure));
                }
            }
        }
        for (phone, restart_job, holds) in read_back(client, wanted, succeeded).await {
            let job = update_jobs.get(&phone).cloned().unwrap_or_default();
            let report = match holds {
                Ok(true) => Report::Applied {
                    job,
                    restart_job: Some(restart_job),
                },
                Ok(false) => Report::Failed(Failure::new(
                    "NOT_APPLIED",
                    format!(
                        "restarted (job={restart_job}) but the phone's property does not hold \
                         cphub's values"
                    ),
                )),
                Err(failure) => Report::Failed(failure),
            };
            reports.insert(phone, report);
        }
    }
    Ok(())
}

/// The phones of `waiting` the book shows idle now; each other one is reported busy, with
/// its state.
async fn still_idle(
    book: Option<&dyn Store>,
    waiting: &[(String, String)],
    fresh_since: UtcTime,
    reports: &mut HashMap<String, Report>,
) -> Vec<String> {
    let mut idle = Vec::new();
    for (phone, job) in waiting {
        let state = match book {
            Some(book) => book_state(book, phone, fresh_since).await,
            None => "unreadable".to_owned(),
        };
        if state == "idle" {
            idle.push(phone.clone());
        } else {
            let busy = Some(state);
            reports.insert(phone.clone(), Report::Waiting { job: job.clone(), busy });
        }
    }
    idle
}

/// The phone's state in cphub's book: `idle` only when no session is playing, minted or
/// verified on it and it is fresh and running; `unknown` when the book has no such phone.
async fn book_state(book: &dyn Store, phone: &str, fresh_since: UtcTime) -> String {
    let Ok(id) = PhoneId::parse("phone_id", phone.to_owned()) else {
        return "unknown".to_owned();
    };
    match book.phone(&id, fresh_since).await {
        Ok(Some(row)) => row.state,
        Ok(None) => "unknown".to_owned(),
        Err(error) => {
            eprintln!(
                "warning: could not read {phone} from the database: {}",
                ErrorChain(&error)
            );
            "unreadable".to_owned()
        }
    }
}

fn items(phone_ids: &[String], property: &str) -> Vec<PhoneItem> {
    phone_ids
        .iter()
        .map(|id| PhoneItem {
            phone_id: id.clone(),
            property: Some(property.to_owned()),
        })
        .collect()
}

/// Sends one batch (a property update, or a restart with the properties) and follows its
/// jobs; per phone in the order asked, the job id or why it failed.
async fn submit_and_follow(
    client: &CphClient,
    items: Vec<PhoneItem>,
    restart: bool,
) -> Vec<(String, Result<String, Failure>)> {
    let requested: Vec<String> = items.iter().map(|i| i.phone_id.clone()).collect();
    // A restart with a property (4.3.6, Table 4-40) sends only cphub's callback keys. The
    // reference is silent on whether a restart's property replaces the phone's others or
    // merges with them; only a reset says it restores factory settings (4.3.5), and 4.3.9's
    // update of "some attributes" leaves the rest alone. Read so, sending cphub's keys
    // alone keeps the phone's own, as the simulator models it; were a service to replace
    // them, the read-back would still show cphub's values and not the loss.
    let sent = match restart {
        true => client.restart_with_property(items).await,
        false => client.update_property(items).await,
    };
    // A batch refused whole, or whose answer was lost, is each of its phones' line: the
    // command goes on with the next batch and prints what the earlier ones did, rather
    // than ending with the error alone after updating (or restarting) hundreds of phones.
    let answer = match sent {
        Ok(answer) => answer,
        Err(error) => {
            let (code, why) = super::phones::batch_refusal(&error);
            let each = |phone| (phone, Err(Failure::new(code, why.clone())));
            return requested.into_iter().map(each).collect();
        }
    };
    let mut refused: HashMap<String, Failure> = HashMap::new();
    for item in answer.failures() {
        let phone = item.phone_id.clone().unwrap_or_default();
        let failure = Failure::new(
            item.error_code.as_deref().unwrap_or("NO_JOB"),
            item.error_msg.clone().unwrap_or_default(),
        );
        refused.insert(phone, failure);
    }
    let jobs: HashMap<String, String> = answer
        .jobs()
        .map(|(phone, job)| (phone.to_owned(), job.to_owned()))
        .collect();
    let followed: HashMap<String, Result<String, Failure>> = futures_util::stream::iter(jobs)
        .map(|(phone, job)| async move {
            let ended = match client.follow_job(&job).await {
                Ok(end) if end.status == model::job_status::SUCCEEDED => Ok(job),
                Ok(end) => Err(Failure::new(
                    end.error_code.as_deref().unwrap_or("JOB_FAILED"),
                    format!("job={job} {}", end.error_msg.unwrap_or_default()).trim_end(),
                )),
                Err(error) => Err(Failure::new(
                    "OUTCOME_UNKNOWN",
                    format!("job={job} {}", ErrorChain(&error)),
                )),
            };
            (phone, ended)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut followed = followed;
    requested
        .into_iter()
        .map(|phone| {
            let ended = followed
                .remove(&phone)
                .or_else(|| refused.remove(&phone).map(Err))
                .unwrap_or_else(|| {
                    Err(Failure::new(
                        "NO_ANSWER",
                        "the control plane did not answer for this phone",
                    ))
                });
            (phone, ended)
        })
        .collect()
}

/// Reads each phone (4.3.2): whether its property holds every wanted value.
async fn read_back(
    client: &CphClient,
    wanted: &Map<String, Value>,
    phones: Vec<(String, String)>,
) -> Vec<(String, String, Result<bool, Failure>)> {
    futures_util::stream::iter(phones)
        .map(|(phone, job)| async move {
            let holds = match client.phone(&phone).await {
                Ok(detail) => Ok(holds(detail.property.as_deref(), wanted)),
                Err(error) => Err(Failure::new(
                    "READ_BACK",
                    format!("could not read the phone back: {}", ErrorChain(&error)),
                )),
            };
            (phone, job, holds)
        })
        .buffered(CONCURRENCY)
        .collect()
        .await
}

fn wanted_values(property: &str) -> Result<Map<String, Value>, CliError> {
    match serde_json::from_str(property) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(crate::cph::properties::PropertyError::NotAnObject(property.to_owned()).into()),
    }
}

/// Whether the phone's property (a JSON object in a string, 4.3.2) holds every wanted key
/// with the same value; numbers and strings compare by their text (A.1 lists some integer
/// properties that the control plane may show either way).
fn holds(property: Option<&str>, wanted: &Map<String, Value>) -> bool {
    let Some(Ok(Value::Object(actual))) = property.map(serde_json::from_str::<Value>) else {
        return wanted.is_empty();
    };
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    wanted
        .iter()
        .all(|(key, value)| actual.get(key).map(text) == Some(text(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wanted() -> Map<String, Value> {
        let Value::Object(map) = json!({"a": "1", "b": "x"}) else {
            unreachable!()
        };
        map
    }

    #[test]
    fn a_property_holds_the_values_when_every_key_matches_4_3_2() {
        assert!(holds(Some(r#"{"a": 1, "b": "x", "c": "y"}"#), &wanted()));
        assert!(!holds(Some(r#"{"a": "2", "b": "x"}"#), &wanted()));
        assert!(!holds(Some(r#"{"b": "x"}"#), &wanted()));
        assert!(!holds(Some("not json"), &wanted()));
        assert!(!holds(None, &wanted()));
    }
}
