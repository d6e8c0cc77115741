//! The dispatcher: a fan-out task, and one worker per enabled endpoint, so a slow or dead
//! endpoint only ever holds its own worker. A worker claims up to `webhooks.concurrency`
//! due deliveries (at most one per subject, the earliest: a session's events go in order),
//! sends them side by side, then records the attempts and claims again in one transaction.
//!
//! Replicas share the work through the claim's lease (`store::outbox`): a delivery is sent
//! by the one worker that holds it; one whose sender died is taken again once the lease
//! lapses, so after a crash an event may be sent twice, under the same id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::CONTENT_TYPE;
use tokio::task::JoinHandle;

use super::render::{Rendered, render};
use super::sign::signature;
use crate::clock::Clock;
use crate::config::{WebhookEndpoint, WebhookSettings};
use crate::domain::UtcTime;
use crate::metrics::Metrics;
use crate::store::{AttemptRecord, Claim, ClaimedDelivery, EndpointFilter, NextStep, Store};
use crate::telemetry::ErrorChain;
use crate::usage::Rounding;

/// How much of an endpoint's answer is kept with the attempt.
const RESPONSE_EXCERPT_BYTES: usize = 1024;
/// Outbox rows fanned out per transaction.
const FAN_OUT_BATCH: i64 = 500;
/// A claim outlives the attempt's timeout by this much, so a live sender never loses it.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// How often the retention runs: it keeps days, and each pass is a write transaction on
/// the book (every fan-out pass, every 500 ms, was a write for nothing).
const PRUNE_EVERY_SECS: i64 = 60;

/// How often the tick pass runs for ticks every `interval_secs`: a tenth of it, between
/// half a second and five seconds. The pass reads every playing session in a write
/// transaction (on SQLite, the callbacks' one writer): run on every fan-out pass (500 ms),
/// it did so 120 times a minute for a tick a minute. A tick is late by a tenth of its
/// interval at most (its time, `n × interval` after the start, does not move).
fn tick_pass_every(interval_secs: u64) -> Duration {
    let tenth = Duration::from_secs(interval_secs) / 10;
    tenth.clamp(Duration::from_millis(500), Duration::from_secs(5))
}

/// How often a dispatcher writes again the endpoints it runs with: well within the ten
/// minutes (`store::ENDPOINT_SEEN_WITHIN`) the other replicas' fan-outs count them.
const REREGISTER_EVERY_SECS: u64 = 60;

#[derive(Clone)]
pub struct WebhookDispatcher {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    settings: Arc<WebhookSettings>,
    rounding: Rounding,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Names this process's claims.
    replica: String,
}

/// The running tasks; stopping aborts them (a delivery cut short is sent again once its
/// lease lapses).
pub struct WebhookTasks(Vec<JoinHandle<()>>);

impl WebhookTasks {
    pub fn stop(self) {
        self.0.iter().for_each(JoinHandle::abort);
    }
}

impl WebhookDispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        settings: &WebhookSettings,
        rounding: Rounding,
    ) -> Result<WebhookDispatcher, reqwest::Error> {
        // Redirects are answers, not deliveries: a 3xx fails the attempt with its Location.
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout())
            .build()?;
        Ok(WebhookDispatcher {
            store,
            clock,
            settings: Arc::new(settings.clone()),
            rounding,
            http,
            metrics,
            replica: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// Nothing runs without endpoints.
    pub fn spawn(self) -> WebhookTasks {
        if self.settings.endpoints.is_empty() {
            return WebhookTasks(Vec::new());
        }
        let names = self.settings.endpoints.iter().map(|e| e.name.as_str());
        self.metrics.export_webhook_endpoints(names);
        let mut tasks = vec![tokio::spawn(self.clone().fan_out_forever())];
        for endpoint in self.settings.enabled_endpoints() {
            let worker = self.clone();
            let endpoint = endpoint.clone();
            tasks.push(tokio::spawn(
                async move { worker.work_forever(endpoint).await },
            ));
        }
        WebhookTasks(tasks)
    }

    async fn fan_out_forever(self) {
        // Disabled endpoints get their deliveries too: they wait, kept, until enabled.
        let filters: Vec<EndpointFilter> = (self.settings.endpoints.iter())
            .map(|e| EndpointFilter {
                name: e.name.clone(),
                events: e.events.clone(),
            })
            .collect();
        let names: Vec<String> = filters.iter().map(|f| f.name.clone()).collect();
        // Before the first fan-out: an endpoint seen for the first time starts from now
        // (its history goes to it only on request, `cphub webhooks replay`).
        while let Err(e) = (self.store)
            .register_webhook_endpoints(&filters, self.clock.now())
            .await
        {
            tracing::warn!(error = %ErrorChain(&e), "webhook endpoints not registered; will retry");
            tokio::time::sleep(self.settings.poll_interval()).await;
        }
        let (mut pruned_at, mut registered_at, mut ticked_at) = (None, Instant::now(), None);
        loop {
            self.reregister(&filters, &mut registered_at).await;
            self.housekeeping(&mut pruned_at, &mut ticked_at).await;
            let now = self.clock.now();
            let first = now.plus(self.wait_before(0));
            match self
                .store
                .fan_out_webhooks(&filters, now, first, FAN_OUT_BATCH)
                .await
            {
                Ok(n) if n == FAN_OUT_BATCH as u64 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %ErrorChain(&e), "webhook fan-out failed"),
            }
            self.observe_backlog(&names).await;
            tokio::time::sleep(self.settings.poll_interval()).await;
        }
    }

    /// Says again, every [`REREGISTER_EVERY_SECS`] (a monotonic count: a clock stepped back
    /// must not stop it), that this replica runs with `filters`: every replica's fan-out
    /// gives deliveries to the endpoints seen within `store::ENDPOINT_SEEN_WITHIN` (ten
    /// minutes, by the replicas' clocks, which must agree), not only to its own. A failure
    /// is logged and tried again on the next pass.
    async fn reregister(&self, filters: &[EndpointFilter], registered_at: &mut Instant) {
        if registered_at.elapsed() < Duration::from_secs(REREGISTER_EVERY_SECS) {
            return;
        }
        match (self.store)
            .register_webhook_endpoints(filters, self.clock.now())
            .await
        {
            Ok(()) => *registered_at = Instant::now(),
            Err(e) => tracing::warn!(error = %ErrorChain(&e), "webhook endpoints not registered again; will retry"),
        }
    }

    /// Ticks first, at most every [`tick_pass_every`] since `ticked_at`, so the fan-out
    /// right after gives them their deliveries; then the retention, at most every
    /// [`PRUNE_EVERY_SECS`] of cphub's clock since `pruned_at`. Failures are logged; the
    /// ticks are tried again on the next pass, the retention when it is next due.
    async fn housekeeping(&self, pruned_at: &mut Option<UtcTime>, ticked_at: &mut Option<Instant>) {
        let now = self.clock.now();
        let interval = self.settings.tick_interval_secs;
        let due = ticked_at.is_none_or(|at| at.elapsed() >= tick_pass_every(interval));
        if interval > 0 && due {
            *ticked_at = Some(Instant::now());
            if let Err(e) = self.store.write_webhook_ticks(interval as i64, now).await {
                tracing::warn!(error = %ErrorChain(&e), "webhook ticks not written");
            }
        }
        let due = pruned_at.is_none_or(|at| now.seconds_since(at) >= PRUNE_EVERY_SECS);
        if self.settings.retention_days > 0 && due {
            *pruned_at = Some(now);
            let kept = Duration::from_secs(self.settings.retention_days * 86_400);
            if let Err(e) = self.store.prune_webhook_deliveries(now.minus(kept)).await {
                tracing::warn!(error = %ErrorChain(&e), "webhook deliveries not pruned");
            }
        }
    }

    /// Sets each endpoint's oldest-undelivered age: its oldest pending delivery, or an
    /// event not fanned out yet, whichever is older.
    /// The age of each enabled endpoint's oldest undelivered event. A disabled endpoint's
    /// deliveries wait by the operator's choice (the runbook's advice for a receiver away
    /// for long): its gauge stays 0, so `WebhookBacklog` does not fire for it until it is
    /// enabled again; the API's `backlog` still shows it.
    async fn observe_backlog(&self, endpoints: &[String]) {
        let oldest = match self.store.webhook_oldest_undelivered(endpoints).await {
            Ok(oldest) => oldest,
            Err(e) => return tracing::warn!(error = %ErrorChain(&e), "webhook backlog unread"),
        };
        let now = self.clock.now();
        for (endpoint, oldest) in endpoints.iter().zip(oldest) {
            let age = match self.settings.is_enabled(endpoint) {
                true => oldest.map_or(0, |t| now.seconds_since(t).max(0)),
                false => 0,
            };
            let gauge = &self.metrics.webhook_oldest_undelivered;
            gauge.with_label_values(&[endpoint]).set(age);
        }
    }

    async fn work_forever(self, endpoint: WebhookEndpoint) {
        let mut attempts = Vec::new();
        loop {
            // Taken: recorded by this claim (or lost with it), never recorded twice.
            let claimed = self.claim(&endpoint, &std::mem::take(&mut attempts)).await;
            if claimed.is_empty() {
                tokio::time::sleep(self.settings.poll_interval()).await;
                continue;
            }
            let sends = claimed.into_iter().map(|d| self.deliver(&endpoint, d));
            attempts = futures_util::future::join_all(sends).await;
        }
    }

    /// Records the previous claim's `attempts` and claims again, in one transaction. The
    /// attempts are recorded together once their sends have ended; each send ends within
    /// `webhooks.timeout_ms`, so all are recorded within their claim's lease. Either way
    /// the attempts are spent: if the transaction fails, their leases lapse and the
    /// deliveries are sent again (at least once).
    async fn claim(
        &self,
        endpoint: &WebhookEndpoint,
        attempts: &[AttemptRecord],
    ) -> Vec<ClaimedDelivery> {
        let now = self.clock.now();
        let by = format!("{}-{}", self.replica, uuid::Uuid::new_v4().simple());
        let claim = Claim {
            endpoint: &endpoint.name,
            now,
            lease_until: now.plus(self.settings.timeout() + LEASE_MARGIN),
            by: &by,
            limit: self.settings.concurrency as i64,
            recording: attempts,
        };
        match self.store.claim_webhook_deliveries(&claim).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(endpoint = %endpoint.name, attempts = attempts.len(),
                    error = %ErrorChain(&e), "webhook claim failed, attempts not recorded");
                Vec::new()
            }
        }
    }

    /// Sends one delivery; the attempt, to be recorded with the claim's others.
    async fn deliver(&self, endpoint: &WebhookEndpoint, delivery: ClaimedDelivery) -> AttemptRecord {
        let rendered = render(&delivery.event, self.rounding);
        let attempted_at = self.clock.now();
        let started = Instant::now();
        let answer = match rendered.body.len() as u64 > self.settings.max_payload_bytes {
            true => Answer::refused(format!(
                "payload of {} bytes is over webhooks.max_payload_bytes ({})",
                rendered.body.len(),
                self.settings.max_payload_bytes
            )),
            false => self.send(endpoint, &rendered).await,
        };
        let attempts = delivery.attempts + 1;
        let record = AttemptRecord {
            endpoint: endpoint.name.clone(),
            event_seq: delivery.event.seq,
            attempted_at,
            status: answer.status,
            latency_ms: started.elapsed().as_millis() as i64,
            next: self.next_step(&answer, attempts, attempted_at),
            response: answer.excerpt,
            error: answer.error,
            lease: delivery.lease,
        };
        self.observe_attempt(&endpoint.name, &record);
        if record.next == NextStep::Failed {
            // The schedule is spent (or the payload can never go): nothing sends it again
            // but a person (`cphub webhooks retry`), so it is said where they look.
            tracing::warn!(endpoint = %endpoint.name, webhook_id = %rendered.id, attempts,
                error = record.error.as_deref().unwrap_or_default(),
                "webhook delivery failed for good; retry it by hand once the receiver is fixed");
        }
        record
    }

    fn observe_attempt(&self, endpoint: &str, record: &AttemptRecord) {
        let m = &self.metrics;
        m.webhook_attempts.with_label_values(&[endpoint]).inc();
        let result = match record.next {
            NextStep::Delivered => "delivered",
            NextStep::RetryAt(_) => "retried",
            NextStep::Failed => "failed",
        };
        m.webhook_deliveries
            .with_label_values(&[endpoint, result])
            .inc();
        let in_a_row = m.webhook_failures_in_a_row.with_label_values(&[endpoint]);
        match record.error {
            None => in_a_row.set(0),
            Some(_) => in_a_row.inc(),
        }
    }

    fn next_step(&self, answer: &Answer, attempts: i64, now: UtcTime) -> NextStep {
        let schedule = &self.settings.retry_schedule_secs;
        match () {
            _ if answer.error.is_none() => NextStep::Delivered,
            _ if answer.final_ || attempts as usize >= schedule.len() => NextStep::Failed,
            _ => NextStep::RetryAt(now.plus(self.wait_before(attempts as usize))),
        }
    }

    /// The schedule's wait before attempt `index` (0-based), jittered by up to +10 % so
    /// that deliveries failed together do not retry together.
    fn wait_before(&self, index: usize) -> Duration {
        let secs = self.settings.retry_schedule_secs.get(index).copied();
        let wait = Duration::from_secs(secs.unwrap_or(0));
        wait + wait.mul_f64(rand::random::<f64>() / 10.0)
    }

    #[tracing::instrument(name = "webhook delivery", skip_all, fields(endpoint = %endpoint.name, webhook_id = %rendered.id))]
    async fn send(&self, endpoint: &WebhookEndpoint, rendered: &Rendered) -> Answer {
        // The real time, whatever the application's clock: receivers compare it with
        // theirs (Standard Webhooks verifiers refuse more than 5 minutes of difference).
        let timestamp = chrono::Utc::now().timestamp();
        let signed = signature(&endpoint.secrets, &rendered.id, timestamp, &rendered.body);
        let request = (self.http.post(&endpoint.url))
            .header(CONTENT_TYPE, "application/json")
            .header("webhook-id", &rendered.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed)
            .headers(crate::telemetry::trace_headers())
            .body(rendered.body.clone());
        match request.send().await {
            Ok(response) => Answer::from_response(response).await,
            // Without the URL reqwest names in its errors: the reason is kept in the book and
            // shown to operators, and an endpoint's URL may carry a credential.
            Err(e) => Answer::failed(format!("no answer: {}", ErrorChain(&e.without_url()))),
        }
    }
}

/// What one attempt came to.
struct Answer {
    status: Option<i32>,
    excerpt: Option<String>,
    /// Why it does not count; `None` for a 2xx.
    error: Option<String>,
    /// Not worth retrying (the payload is too large: it will not shrink).
    final_: bool,
}

impl Answer {
    fn failed(error: String) -> Answer {
        Answer {
            status: None,
            excerpt: None,
            error: Some(error),
            final_: false,
        }
    }

    fn refused(error: String) -> Answer {
        Answer {
            final_: true,
            ..Answer::failed(error)
        }
    }

    async fn from_response(mut response: reqwest::Response) -> Answer {
        let status = response.status();
        let location = response.headers().get(reqwest::header::LOCATION).cloned();
        let mut body = Vec::new();
        // Only the excerpt is read: an endpoint answering gigabytes costs one chunk.
        let read = loop {
            match response.chunk().await {
                Ok(Some(chunk)) if body.len() < RESPONSE_EXCERPT_BYTES => body.extend(chunk),
                Ok(_) => break None,
                Err(e) => break Some(format!("answer cut short: {}", ErrorChain(&e))),
            }
        };
        body.truncate(RESPONSE_EXCERPT_BYTES);
        let error = match () {
            _ if status.is_success() => None,
            _ if status.is_redirection() => Some(format!(
                "HTTP {status}: redirect to {:?} not followed",
                location
                    .as_ref()
                    .and_then(|l| l.to_str().ok())
                    .unwrap_or("")
            )),
            _ => Some(format!("HTTP {status}")),
        };
        Answer {
            status: Some(i32::from(status.as_u16())),
            // NUL out: PostgreSQL's text cannot hold it, and an attempt it refuses to record
            // would fail its whole claim, to be sent again and refused again for good.
            excerpt: Some(String::from_utf8_lossy(&body).replace('\0', "\u{FFFD}")),
            error: error.or(read.filter(|_| !status.is_success())),
            final_: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_pass_runs_a_tenth_of_the_interval_apart_within_bounds() {
        assert_eq!(tick_pass_every(60), Duration::from_secs(5), "6 s, bounded");
        assert_eq!(tick_pass_every(30), Duration::from_secs(3));
        assert_eq!(tick_pass_every(1), Duration::from_millis(500));
        assert_eq!(tick_pass_every(3600), Duration::from_secs(5));
    }
}
