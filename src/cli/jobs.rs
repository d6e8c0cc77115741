//! `cphub jobs …`: the asynchronous jobs that batch operations start (chapter 4.4).

use futures_util::StreamExt;

use super::phones::{CliError, print_job_end};
use super::{JobsCommand, Outcome};
use crate::config::Settings;
use crate::cph::{CphClient, Job, model};

pub async fn run(settings: &Settings, command: JobsCommand) -> Result<Outcome, CliError> {
    let client = CphClient::new(&settings.cph)?;
    let command_waited = match &command {
        JobsCommand::Show { wait, .. } | JobsCommand::List { wait, .. } => wait.wait,
    };
    let jobs = match command {
        JobsCommand::Show { job_id, wait } if wait.wait => vec![client.follow_job(&job_id).await?],
        JobsCommand::Show { job_id, .. } => vec![client.job(&job_id).await?],
        JobsCommand::List { request_id, wait } => {
            let jobs = client.jobs_by_request(&request_id).await?;
            if wait.wait {
                follow_all(&client, jobs).await
            } else {
                jobs
            }
        }
    };
    let waited = command_waited;
    let mut outcome = Outcome::AllSucceeded;
    for job in &jobs {
        let phone = job.phone_id.as_deref().unwrap_or("-");
        if !job.is_finished() {
            println!("{phone}\trunning\tjob={}", job.job_id);
            // Asked to wait for the end and it did not come (`cph.job_deadline_secs`, or
            // the job could not be read): a script must not take that for a success.
            if waited {
                outcome = Outcome::SomeFailed;
            }
        } else if !print_job_end(phone, &job.job_id, &Ok(job.clone())) {
            outcome = Outcome::SomeFailed;
        }
    }
    Ok(outcome)
}

/// Follows every unfinished job; a job that cannot be followed keeps its last known state.
async fn follow_all(client: &CphClient, jobs: Vec<Job>) -> Vec<Job> {
    futures_util::stream::iter(jobs)
        .map(|job| async move {
            if job.is_finished() {
                return job;
            }
            client.follow_job(&job.job_id).await.unwrap_or_else(|error| {
                tracing::warn!(job_id = %job.job_id, error = %crate::telemetry::ErrorChain(&error), "job not followed to its end");
                Job { status: model::job_status::RUNNING, ..job }
            })
        })
        .buffered(16)
        .collect()
        .await
}
