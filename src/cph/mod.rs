//! Client of the CPH management API (chapters 2, 4, 7): phones, properties, restart, reset,
//! stop, and the asynchronous jobs they start.
//!
//! Retries only where repeating is safe: reads, requests that never left (connection
//! failures), and 429/CPS.0003 answers (the control plane did not act, 7.2). A POST that
//! timed out or was answered 500/502/503/504 (7.1.2) after it was sent has an unknown outcome:
//! it is never resent. When the answer names the request, its jobs are asked for (4.4.2)
//! and returned as the batch's answer; otherwise the outcome is reported as unknown.
//! docs/cph.md ("How cphub reads CPH answers") has the whole story.

mod auth;
mod error;
pub mod model;
pub mod properties;
mod retry;
pub mod signer;
pub mod sync;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use auth::Auth;
pub use error::{
    ACCOUNT_CODES, BAD_PAGE, CphError, INVALID_PARAMETERS, PHONE_NOT_FOUND, SYSTEM_ERROR,
};
pub use model::{
    App, AppPhone, BatchItem, DeployedApp, EncodeServer, Job, Phone, PhoneDetail, PhoneItem,
};
pub use retry::{Backoff, CircuitBreaker};

use crate::config::CphSettings;
use crate::domain::{CommandOutcome, CommandRun, MAX_OUTPUT_BYTES, ShellCommand, truncate_bytes};
use crate::metrics::Metrics;
use crate::telemetry;
use model::job_status;
use model::{
    AppList, AppPhoneList, BatchAnswer, DeployedAppList, EncodeServerIdsBody, EncodeServerList,
    ErrorBody, JobList, Listed, PhoneIdsBody, PhoneList, PhonesBody, PushBody, PushVersions,
    SyncCommandAnswer, SyncCommandBody, SyncCommandJob, UpdateBody, UpdateVersions,
};

const USER_AGENT: &str = concat!("cphub/", env!("CARGO_PKG_VERSION"));

/// The `operation` label of every call the client makes, as `cphub_cph_requests_total`
/// counts it (docs/metrics.md).
const OPERATIONS: [&str; 17] = [
    "list_phones",
    "show_phone",
    "list_apps",
    "app_phones",
    "server_apps",
    "phone_apps",
    "push_app_version",
    "update_app_version",
    "list_encode_servers",
    "restart_encode_servers",
    "run_sync_command",
    "update_property",
    "restart",
    "reset",
    "stop",
    "show_job",
    "list_jobs",
];

pub struct CphClient {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    project_id: String,
    auth: Auth,
    backoff: Backoff,
    max_attempts: u32,
    /// `cph.request_timeout_ms`, for [`CphClient::longest_call`].
    request_timeout: Duration,
    breaker: CircuitBreaker,
    page_limit: u32,
    job_poll: Duration,
    job_deadline: Duration,
    metrics: Option<Arc<Metrics>>,
}

/// Filters of `list_phones` (chapter 4.3.1).
#[derive(Debug, Clone, Default)]
pub struct PhoneFilter {
    pub server_id: Option<String>,
    pub status: Option<i32>,
}

/// A batch operation's answer, per phone: a job id, or the error the control plane gave.
#[derive(Debug, Clone)]
pub struct BatchOutcome {
    pub request_id: Option<String>,
    pub items: Vec<BatchItem>,
}

impl BatchOutcome {
    /// Items the control plane refused inside its 200 answer: not successes.
    pub fn failures(&self) -> impl Iterator<Item = &BatchItem> {
        self.items
            .iter()
            .filter(|item| item.error_code.is_some() || item.job_id.is_none())
    }

    pub fn jobs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.items
            .iter()
            .filter(|item| item.error_code.is_none())
            .filter_map(|item| {
                Some((
                    item.phone_id.as_deref().unwrap_or_default(),
                    item.job_id.as_deref()?,
                ))
            })
    }
}

/// Whether a request may be sent again after a failure that left its outcome open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeatable {
    Yes,
    OnlyIfNotProcessed,
}

impl CphClient {
    /// About the longest one call can take, its retries included: every attempt running
    /// into `cph.request_timeout_ms`, one more for a fresh IAM token, and the longest wait
    /// between attempts (a control plane's `Retry-After` beyond `cph.retry_max_ms` ends the
    /// retries instead of stretching the wait).
    pub fn longest_call(&self) -> Duration {
        let attempts = self.max_attempts + 1;
        self.request_timeout * attempts + self.backoff.max * self.max_attempts
    }

    /// `cph.job_deadline_secs`: how long a started job is followed before cphub gives up on it.
    pub fn job_deadline(&self) -> Duration {
        self.job_deadline
    }

    pub fn new(settings: &CphSettings) -> Result<CphClient, CphError> {
        let endpoint = settings
            .endpoint
            .as_deref()
            .ok_or_else(|| CphError::Config("cph.endpoint is not set".into()))?;
        let endpoint = reqwest::Url::parse(endpoint)
            .map_err(|e| CphError::Config(format!("cph.endpoint: {e}")))?;
        let project_id = settings
            .project_id
            .clone()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| CphError::Config("cph.project_id is not set".into()))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .build()
            .map_err(|e| CphError::Config(format!("HTTP client: {e}")))?;
        let auth = Auth::from_settings(&settings.auth, &project_id, http.clone())?;
        Ok(CphClient {
            http,
            endpoint,
            project_id,
            auth,
            backoff: Backoff {
                base: Duration::from_millis(settings.retry_base_ms),
                max: Duration::from_millis(settings.retry_max_ms),
            },
            max_attempts: settings.max_attempts.max(1),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            breaker: CircuitBreaker::new(
                settings.breaker_failures,
                Duration::from_secs(settings.breaker_open_secs),
            ),
            page_limit: settings.page_limit.clamp(1, 100),
            job_poll: Duration::from_millis(settings.job_poll_interval_ms),
            job_deadline: Duration::from_secs(settings.job_deadline_secs),
            metrics: None,
        })
    }

    /// Counts requests in `cphub_cph_requests_total` and their latency.
    /// Also exports every operation's series at 0, so a rate over them exists before
    /// the first call.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.export_cph_operations(&OPERATIONS);
        self.metrics = Some(metrics);
        self
    }

    pub fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// Every phone, all pages (chapter 4.3.1).
    pub async fn list_phones(&self, filter: &PhoneFilter) -> Result<Vec<Phone>, CphError> {
        let mut query = Vec::new();
        if let Some(server_id) = &filter.server_id {
            query.push(("server_id".into(), server_id.clone()));
        }
        if let Some(status) = filter.status {
            query.push(("status".into(), status.to_string()));
        }
        self.all_pages(
            "list_phones",
            "cloud-phone/phones",
            &query,
            |page: PhoneList| page.phones,
        )
        .await
    }

    /// Every application, all pages (chapter 5.1.3).
    pub async fn list_apps(&self) -> Result<Vec<App>, CphError> {
        self.all_pages("list_apps", "cloud-phone/apps", &[], |page: AppList| {
            page.apps
        })
        .await
    }

    /// The phones `app_id` is deployed on, all pages (chapter 5.1.2).
    pub async fn app_phones(&self, app_id: &str) -> Result<Vec<AppPhone>, CphError> {
        let path = format!("cloud-phone/apps/{app_id}/phones");
        self.all_pages("app_phones", &path, &[], |page: AppPhoneList| page.phones)
            .await
    }

    /// The application versions deployed on a server, all pages (chapter 5.3.1).
    pub async fn server_apps(&self, server_id: &str) -> Result<Vec<DeployedApp>, CphError> {
        let path = format!("cloud-phone/servers/{server_id}/apps");
        self.all_pages("server_apps", &path, &[], |page: DeployedAppList| page.apps)
            .await
    }

    /// The applications on a phone with their installed versions, all pages (5.3.6).
    pub async fn phone_apps(&self, phone_id: &str) -> Result<Vec<DeployedApp>, CphError> {
        let path = format!("cloud-phone/phones/{phone_id}/apps");
        self.all_pages("phone_apps", &path, &[], |page: DeployedAppList| page.apps)
            .await
    }

    /// Chapter 5.3.4: one job (type 31) per server and version.
    pub async fn push_app_version(
        &self,
        app_version_ids: &[String],
        server_ids: &[String],
    ) -> Result<BatchOutcome, CphError> {
        let batch_push_app_version = PushVersions {
            app_version_ids: app_version_ids.to_vec(),
            server_ids: server_ids.to_vec(),
        };
        let body = PushBody {
            batch_push_app_version,
        };
        self.batch("push_app_version", "cloud-phone/servers/action", &body)
            .await
    }

    /// Chapter 5.3.7: one job (type 32) per version; the versions must have been pushed to
    /// the phone's server (5.3.4).
    pub async fn update_app_version(
        &self,
        phone_id: &str,
        app_version_ids: &[String],
    ) -> Result<BatchOutcome, CphError> {
        let update_app_version = UpdateVersions {
            app_version_ids: app_version_ids.to_vec(),
        };
        let path = format!("cloud-phone/phones/{phone_id}/action");
        let body = UpdateBody { update_app_version };
        self.batch("update_app_version", &path, &body).await
    }

    /// Every encoding server with its status, all pages (chapter 4.6.1).
    pub async fn list_encode_servers(&self) -> Result<Vec<EncodeServer>, CphError> {
        self.all_pages(
            "list_encode_servers",
            "cloud-phone/encode-servers",
            &[],
            |page: EncodeServerList| page.encode_servers,
        )
        .await
    }

    /// Chapter 4.6.2: one job per encoding server, followed like a phone's (4.4).
    pub async fn restart_encode_servers(&self, ids: &[String]) -> Result<BatchOutcome, CphError> {
        let body = EncodeServerIdsBody {
            encode_server_ids: ids.to_vec(),
        };
        self.batch(
            "restart_encode_servers",
            "cloud-phone/encode-servers/batch-restart",
            &body,
        )
        .await
    }

    /// Chapter 4.7.5: runs `command` in the ADB shell of each phone and answers with each
    /// phone's run. Never resent once it may have run (a command is not known to be safe to
    /// repeat), and never reconciled: its jobs are its answer, there is nothing to follow.
    pub async fn run_sync_command(
        &self,
        phone_ids: &[String],
        command: &ShellCommand,
    ) -> Result<Vec<SyncCommandJob>, CphError> {
        let body = SyncCommandBody {
            command: "shell",
            content: command.as_str(),
            phone_ids: phone_ids.to_vec(),
        };
        let body = Some(serde_json::to_vec(&body).map_err(CphError::BadResponse)?);
        let call = Call {
            operation: "run_sync_command",
            method: Method::POST,
            path: "cloud-phone/phones/sync-commands",
            query: &[],
            body,
            repeatable: Repeatable::OnlyIfNotProcessed,
        };
        let answer: SyncCommandAnswer = self.call(call).await?;
        Ok(answer.jobs)
    }

    /// One command on one phone, as a [`CommandRun`] whatever happens. One phone a call:
    /// 4.7.5 gives each phone 2 s and the whole call at most 30 s, so a call for more than
    /// 15 phones could run out of time. At most `wait` for the answer: a control plane that
    /// hangs must not hold the caller, who may be about to reset the phone.
    pub async fn run_command(
        &self,
        phone_id: &str,
        command: &ShellCommand,
        wait: Duration,
    ) -> CommandRun {
        let ids = [phone_id.to_owned()];
        let answer = tokio::time::timeout(wait, self.run_sync_command(&ids, command)).await;
        let jobs = match answer {
            Err(_) => {
                let why = format!("no answer within {} ms", wait.as_millis());
                return CommandRun::unanswered(command, CommandOutcome::TimedOut, why);
            }
            Ok(Err(error)) => {
                let why = telemetry::ErrorChain(&error).to_string();
                return CommandRun::unanswered(command, CommandOutcome::Error, why);
            }
            Ok(Ok(jobs)) => jobs,
        };
        let job = jobs
            .into_iter()
            .find(|job| job.phone_id.as_deref().is_none_or(|id| id == phone_id));
        match job {
            Some(job) => command_run(command, job),
            None => CommandRun::unanswered(
                command,
                CommandOutcome::Error,
                "the answer has no job for the phone (chapter 4.7.5)".into(),
            ),
        }
    }

    /// Reads `offset`/`limit` pages (4.3.1, 5.1.2, 5.1.3; 4.4.2 by Huawei's SDK: at most 100
    /// each) until one comes back short. After a full page the next offset may be the list's
    /// end, which the reference does not define ("greater than 0 but less than the number of
    /// resources"): a 400 CPS.0002 (7.2, "offset or limit is invalid") answered to it ends the
    /// list like an empty page would. `limit` is always in range, so the offset is what it refused.
    ///
    /// An item listed again (same [`Listed::key`]) is dropped, and a full page that adds
    /// nothing new ends the list: 4.4.2 documents no paging at all, and a service that
    /// ignores `offset` would answer the same full page for ever. Lists without a key (5.1.2,
    /// 5.3.1, 5.3.6 may repeat an entry: 5.1.2's example lists one phone twice) end once
    /// full pages equal to the one before them have repeated [`REPEATED_ENTRIES`] entries
    /// in a row: one such page when `cph.page_limit` is 100, a hundred when it is 1, so a
    /// list that truly repeats an entry a few times is read whole.
    async fn all_pages<P: DeserializeOwned, T: Listed + PartialEq>(
        &self,
        operation: &'static str,
        path: &str,
        filters: &[(String, String)],
        items: impl Fn(P) -> Vec<T>,
    ) -> Result<Vec<T>, CphError> {
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        let (mut read, mut repeated) = (0, 0);
        loop {
            let mut query = vec![
                ("offset".to_owned(), read.to_string()),
                ("limit".to_owned(), self.page_limit.to_string()),
            ];
            query.extend_from_slice(filters);
            let page = match self.get(operation, path, &query).await {
                Ok(page) => items(page),
                Err(error) if read > 0 && error.code() == Some(BAD_PAGE) => {
                    return Ok(all);
                }
                Err(error) => return Err(error),
            };
            read += page.len();
            let full_page = page.len() >= self.page_limit as usize;
            // Keyless items were all kept: the tail of `all` is the page before this one.
            repeated = match full_page && all.ends_with(&page) {
                true => repeated + page.len(),
                false => 0,
            };
            if repeated >= REPEATED_ENTRIES {
                return Ok(all);
            }
            let before = all.len();
            let new = page.into_iter();
            all.extend(new.filter(|item| item.key().is_none_or(|key| seen.insert(key.to_owned()))));
            if !full_page || all.len() == before {
                return Ok(all);
            }
        }
    }

    /// Chapter 4.3.2.
    pub async fn phone(&self, phone_id: &str) -> Result<PhoneDetail, CphError> {
        self.get("show_phone", &format!("cloud-phone/phones/{phone_id}"), &[])
            .await
    }

    /// Chapter 4.3.9: `property` is a JSON object serialised into a string, per phone.
    pub async fn update_property(&self, phones: Vec<PhoneItem>) -> Result<BatchOutcome, CphError> {
        self.batch(
            "update_property",
            "cloud-phone/phones/batch-update-property",
            &PhonesBody { phones },
        )
        .await
    }

    /// Chapter 4.3.6.
    pub async fn restart(&self, phone_ids: &[String]) -> Result<BatchOutcome, CphError> {
        let phones = phone_ids
            .iter()
            .map(|id| PhoneItem {
                phone_id: id.clone(),
                property: None,
            })
            .collect();
        self.restart_with_property(phones).await
    }

    /// Chapter 4.3.6 with a `property` per phone (Table 4-40), set as the phone restarts.
    pub async fn restart_with_property(
        &self,
        phones: Vec<PhoneItem>,
    ) -> Result<BatchOutcome, CphError> {
        self.batch(
            "restart",
            "cloud-phone/phones/batch-restart",
            &PhonesBody { phones },
        )
        .await
    }

    /// Chapter 4.3.5: reset restores factory settings, so the properties to keep (the
    /// callback URLs) go in the same call.
    pub async fn reset(&self, phones: Vec<PhoneItem>) -> Result<BatchOutcome, CphError> {
        self.batch(
            "reset",
            "cloud-phone/phones/batch-reset",
            &PhonesBody { phones },
        )
        .await
    }

    /// Chapter 4.3.7.
    pub async fn stop(&self, phone_ids: &[String]) -> Result<BatchOutcome, CphError> {
        self.batch(
            "stop",
            "cloud-phone/phones/batch-stop",
            &PhoneIdsBody {
                phone_ids: phone_ids.to_vec(),
            },
        )
        .await
    }

    /// Chapter 4.4.1.
    pub async fn job(&self, job_id: &str) -> Result<Job, CphError> {
        self.get("show_job", &format!("cloud-phone/jobs/{job_id}"), &[])
            .await
    }

    /// Chapter 4.4.2: the jobs one batch request started, all pages. Also how an unknown
    /// outcome is reconciled: the request id of a batch that timed out shows what it did.
    /// The reference shows only `request_id`; Huawei's SDK pages the list by `offset` and
    /// `limit` (at most 100, 100 by default), so a request with more jobs than a page (an
    /// app version pushed to many servers, 5.3.4) is read page by page.
    pub async fn jobs_by_request(&self, request_id: &str) -> Result<Vec<Job>, CphError> {
        let filter = [("request_id".to_owned(), request_id.to_owned())];
        self.all_pages("list_jobs", "cloud-phone/jobs", &filter, |page: JobList| {
            page.jobs
        })
        .await
    }

    /// Polls a job until it succeeds (2) or fails (-1), up to `cph.job_deadline_secs`. A
    /// transient failure of one poll (CPS.0003, 5xx, …, after the call's own retries) says
    /// nothing about the job: polling goes on until the deadline.
    pub async fn follow_job(&self, job_id: &str) -> Result<Job, CphError> {
        let started = tokio::time::Instant::now();
        loop {
            match self.job(job_id).await {
                Ok(job) if job.is_finished() => return Ok(job),
                Ok(_) => {}
                Err(error) if transient_poll_failure(&error) => {
                    tracing::debug!(job_id, error = %error, "job poll failed; polling on");
                }
                Err(error) => return Err(error),
            }
            if started.elapsed() + self.job_poll > self.job_deadline {
                return Err(CphError::JobDeadline {
                    job_id: job_id.to_owned(),
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep(self.job_poll).await;
        }
    }

    async fn get<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        path: &str,
        query: &[(String, String)],
    ) -> Result<T, CphError> {
        let repeatable = Repeatable::Yes;
        self.call(Call {
            operation,
            method: Method::GET,
            path,
            query,
            body: None,
            repeatable,
        })
        .await
    }

    async fn batch(
        &self,
        operation: &'static str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<BatchOutcome, CphError> {
        let body = Some(serde_json::to_vec(body).map_err(CphError::BadResponse)?);
        let repeatable = Repeatable::OnlyIfNotProcessed;
        let call = Call {
            operation,
            method: Method::POST,
            path,
            query: &[],
            body,
            repeatable,
        };
        let answer: BatchAnswer = match self.call(call).await {
            Ok(answer) => answer,
            Err(CphError::AnswerLost {
                status,
                code,
                request_id: Some(request_id),
            }) => return self.reconcile(status, code, request_id).await,
            Err(error) => return Err(error),
        };
        Ok(BatchOutcome {
            request_id: answer.request_id,
            items: answer.jobs,
        })
    }

    /// A batch POST whose answer was lost (5xx) but whose request id is known: the jobs
    /// it started (4.4.2) are its answer. None found (or the query failing) leaves the
    /// outcome unknown; the POST is never sent again, so one decision never acts twice.
    async fn reconcile(
        &self,
        status: u16,
        code: String,
        request_id: String,
    ) -> Result<BatchOutcome, CphError> {
        let lost = |request_id| CphError::AnswerLost {
            status,
            code: code.clone(),
            request_id: Some(request_id),
        };
        let jobs = match self.jobs_by_request(&request_id).await {
            Ok(jobs) if !jobs.is_empty() => jobs,
            Ok(_) => return Err(lost(request_id)),
            Err(error) => {
                tracing::warn!(%request_id, error = %error, "could not reconcile a lost CPH answer");
                return Err(lost(request_id));
            }
        };
        tracing::info!(%request_id, status, jobs = jobs.len(), "lost CPH answer reconciled from its jobs");
        let items = jobs
            .into_iter()
            .map(|job| BatchItem {
                phone_id: job.phone_id,
                server_id: job.server_id,
                encode_server_id: job.encode_server_id,
                app_version_id: None,
                job_id: Some(job.job_id),
                error_code: job.error_code,
                error_msg: job.error_msg,
            })
            .collect();
        Ok(BatchOutcome {
            request_id: Some(request_id),
            items,
        })
    }

    /// One logical call: attempts with backoff while the failure is retryable and the
    /// request repeatable; one extra attempt after a 401 with a fresh IAM token.
    #[tracing::instrument(name = "cph call", skip_all, fields(operation = call.operation))]
    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, CphError> {
        let Call {
            operation,
            method,
            path,
            query,
            body,
            repeatable,
        } = call;
        let path = format!("/v1/{}/{path}", self.project_id);
        let mut refreshed_token = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if !self.breaker.allow() {
                self.count(operation, "circuit_open", None);
                return Err(CphError::CircuitOpen);
            }
            let started = Instant::now();
            let result = self.attempt(&method, &path, query, body.as_deref()).await;
            self.count(operation, &status_label(&result), Some(started.elapsed()));
            // Parsed before the breaker hears of it: a 200 with garbage is a failure too.
            let result = result.and_then(|answer| match parse::<T>(&answer.body) {
                Err(error) if repeatable == Repeatable::OnlyIfNotProcessed => {
                    Err(unread_answer(answer, error))
                }
                parsed => parsed,
            });
            match &result {
                Err(e) if e.is_control_plane_failure() => self.breaker.record_failure(),
                _ => self.breaker.record_success(),
            }
            let error = match result {
                Ok(answer) => return Ok(answer),
                Err(error) if repeatable == Repeatable::OnlyIfNotProcessed => answer_lost(error),
                Err(error) => error,
            };
            if let (CphError::Api { status: 401, .. }, Auth::Iam(tokens), false) =
                (&error, &self.auth, refreshed_token)
            {
                tokens.invalidate().await;
                refreshed_token = true;
                attempt -= 1;
                continue;
            }
            let retry = error.is_transient()
                && (repeatable == Repeatable::Yes || error.was_not_processed());
            if !retry {
                return Err(error);
            }
            if attempt >= self.max_attempts {
                return Err(CphError::RetriesExhausted {
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            let server_wait = match &error {
                CphError::Api { retry_after, .. } => retry_after.unwrap_or_default(),
                _ => Duration::ZERO,
            };
            // A pause longer than `cph.retry_max_ms` would stretch the call past
            // `longest_call`, which the watchdog waits out before it re-reads a phone whose
            // reset may still be on its way: give up now, and the caller's next pass asks
            // again after the server's pause.
            if server_wait > self.backoff.max {
                return Err(CphError::RetriesExhausted {
                    attempts: attempt,
                    last: Box::new(error),
                });
            }
            let wait = self.backoff.delay(attempt).max(server_wait);
            tracing::debug!(%path, attempt, ?wait, error = %error, "retrying CPH API call");
            tokio::time::sleep(wait).await;
        }
    }

    fn count(&self, operation: &str, status: &str, took: Option<Duration>) {
        let Some(metrics) = &self.metrics else { return };
        metrics
            .cph_requests
            .with_label_values(&[operation, status])
            .inc();
        if let Some(took) = took {
            metrics
                .cph_duration
                .with_label_values(&[operation])
                .observe(took.as_secs_f64());
        }
    }

    /// One HTTP exchange. Ok is a 2xx body; everything else is a typed error.
    async fn attempt(
        &self,
        method: &Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Result<Answer, CphError> {
        let wire_query = signer::canonical_query(query);
        let mut url = self.endpoint.clone();
        url.set_path(path);
        url.set_query((!wire_query.is_empty()).then_some(wire_query.as_str()));
        let mut headers = vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("User-Agent".to_owned(), USER_AGENT.to_owned()),
        ];
        match &self.auth {
            Auth::AkSk { ak, sk } => {
                let signing = signer::Signing {
                    ak,
                    sk: sk.expose_secret(),
                    project_id: Some(&self.project_id),
                    host: &host_header(&self.endpoint),
                    now: chrono::Utc::now(),
                };
                signing.sign(
                    method.as_str(),
                    path,
                    query,
                    &mut headers,
                    body.unwrap_or_default(),
                );
            }
            Auth::Iam(tokens) => {
                headers.push((
                    "X-Auth-Token".into(),
                    tokens.token().await?.expose_secret().to_owned(),
                ));
            }
        }
        let mut request = self.http.request(method.clone(), url);
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        // After signing: the trace context is not part of what the signature covers.
        request = request.headers(crate::telemetry::trace_headers());
        if let Some(body) = body {
            request = request.body(body.to_vec());
        }
        let response = request
            .send()
            .await
            .map_err(|e| classify_send_error(e, method))?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("Retry-After");
        let header_request_id = header("X-Request-Id");
        let bytes = response
            .bytes()
            .await
            .map_err(|e| classify_send_error(e, method))?;
        if status.is_success() {
            return Ok(Answer {
                status: status.as_u16(),
                body: bytes.to_vec(),
                request_id: header_request_id,
            });
        }
        Err(api_error(status, &bytes, retry_after, header_request_id))
    }
}

/// How many entries of a keyless list, in pages each equal to the one before, end it
/// (`CphClient::all_pages`): a service ignoring `offset` answers the same page for ever.
const REPEATED_ENTRIES: usize = 100;

/// A phone's job of 4.7.5 as a run: its output cut to the reference's 1,024 bytes.
fn command_run(command: &ShellCommand, job: SyncCommandJob) -> CommandRun {
    let outcome = match job.status {
        job_status::SUCCEEDED => CommandOutcome::Succeeded,
        job_status::FAILED => CommandOutcome::Failed,
        _ => CommandOutcome::Error,
    };
    let error = (outcome != CommandOutcome::Succeeded).then(|| {
        format!(
            "status {}: {}: {}",
            job.status,
            job.error_code.unwrap_or_default(),
            job.error_msg.unwrap_or_default()
        )
    });
    let output = job
        .execute_msg
        .map(|text| truncate_bytes(&text, MAX_OUTPUT_BYTES).to_owned());
    CommandRun {
        command: command.as_str().to_owned(),
        outcome,
        output,
        error,
    }
}

/// One logical API call.
struct Call<'a> {
    operation: &'static str,
    method: Method,
    path: &'a str,
    query: &'a [(String, String)],
    body: Option<Vec<u8>>,
    repeatable: Repeatable,
}

/// A 2xx answer: its status, its body, and the request it names in `X-Request-Id`.
struct Answer {
    status: u16,
    body: Vec<u8>,
    request_id: Option<String>,
}

/// A POST accepted (2xx) whose body cannot be read — cut short on the way, or not what the
/// reference describes: whatever it asked for was started (7.1.2: 201 is "the normal
/// response code for the POST operation"), so its outcome is unknown, never "not done":
/// followed by the request id (the header's, or the body's if that much can be read) as
/// a lost answer is. Taken for "not sent", a rollout returned a phone to the pool while its
/// update installed.
fn unread_answer(answer: Answer, error: CphError) -> CphError {
    #[derive(serde::Deserialize)]
    struct Named {
        request_id: Option<String>,
    }
    let named = serde_json::from_slice::<Named>(&answer.body).ok();
    let request_id = (answer.request_id).or_else(|| named.and_then(|n| n.request_id));
    tracing::warn!(status = answer.status, error = %crate::telemetry::ErrorChain(&error), "a CPH POST was accepted but its answer could not be read; outcome unknown");
    CphError::AnswerLost {
        status: answer.status,
        code: String::new(),
        request_id,
    }
}

/// The status label of one attempt: the HTTP status, or what kept it from having one.
fn status_label(result: &Result<Answer, CphError>) -> String {
    match result {
        Ok(_) => "200".into(),
        Err(CphError::Api { status, .. }) => status.to_string(),
        Err(CphError::OutcomeUnknown(_)) => "timeout".into(),
        Err(CphError::AnswerLost { status, .. }) => status.to_string(),
        Err(CphError::Unreachable(_)) => "unreachable".into(),
        Err(_) => "error".into(),
    }
}

/// `host[:port]` as the signature must see it (the port only when the URL names one).
fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, CphError> {
    serde_json::from_slice(body).map_err(CphError::BadResponse)
}

/// Not sent at all → Unreachable (safe to retry). Sent, no answer → outcome unknown for a
/// POST; a GET may simply be repeated, so it counts as unreachable.
fn classify_send_error(error: reqwest::Error, method: &Method) -> CphError {
    if error.is_connect() || *method == Method::GET {
        CphError::Unreachable(error)
    } else {
        CphError::OutcomeUnknown(error)
    }
}

/// A POST answered 500, 502, 503 or 504: it may have been done. 7.1.2 says each "failed to
/// complete the request" (an internal service error, an invalid response from behind the
/// gateway, the gateway timing out) and none says the request was not started, so a reset
/// answered any of them is looked for (4.4.2), never sent again.
fn answer_lost(error: CphError) -> CphError {
    match error {
        CphError::Api {
            status: status @ (500 | 502 | 503 | 504),
            code,
            request_id,
            ..
        } => CphError::AnswerLost {
            status,
            code,
            request_id,
        },
        other => other,
    }
}

/// A poll of a job that failed for reasons that say nothing about the job.
/// A poll that failed on the way (after its own retries) or was never sent: the circuit
/// breaker refusing calls for a while, the IAM token not renewed. Neither says anything of
/// the job (4.4.1: it ends at status 2 or -1), so following it goes on to the deadline.
fn transient_poll_failure(error: &CphError) -> bool {
    match error {
        CphError::RetriesExhausted { last, .. } => transient_poll_failure(last),
        other => other.is_transient() || other.did_nothing(),
    }
}

fn api_error(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<String>,
    header_request_id: Option<String>,
) -> CphError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    CphError::Api {
        status: status.as_u16(),
        code: parsed
            .error_code
            .unwrap_or_else(|| format!("HTTP.{}", status.as_u16())),
        message: parsed
            .error_msg
            .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect()),
        request_id: parsed.request_id.or(header_request_id),
        retry_after: retry_after
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(60))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    /// What a pending recovery waits out before it is reconciled (`watchdog`): every
    /// attempt and a fresh token's fetch timing out, with the longest wait between attempts.
    #[test]
    fn the_longest_call_is_every_attempt_timing_out_after_the_longest_waits() {
        let settings = Settings::with_overrides(
            "[cph]\nendpoint = \"http://127.0.0.1:1\"\nproject_id = \"p\"\n\
             request_timeout_ms = 1000\nmax_attempts = 3\nretry_max_ms = 200\n\
             [cph.auth]\nak = \"a\"\nsk = \"s\"\n",
        )
        .unwrap();
        let client = CphClient::new(&settings.cph).unwrap();
        assert_eq!(client.longest_call(), Duration::from_millis(4 * 1000 + 3 * 200));
    }
}
