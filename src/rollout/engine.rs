//! One tick of the rollout engine, on the leader after the watchdog's pass. Per phone:
//! drained → (its session ended, or the drain deadline passed: skipped unless `force`) →
//! `UpdateAppVersionOfPhone` (5.3.7) → its job followed (4.4.1) → a heartbeat after the job
//! and the version listed among the phone's apps (5.3.6) → done. Per rollout: when a batch
//! has no phone left drained, its failures decide between pausing and the next batch.
//!
//! Every step is written to the book before the next is taken, and a phone moves only from
//! the step it is at: after a crash or a change of leader, a phone found `updating` is
//! followed, never sent its update again.

use std::time::Duration;

use super::Rollouts;
use crate::cph::CphError;
use crate::cph::DeployedApp;
use crate::cph::model::{job_status, status};
use crate::domain::{PAUSED_BY_CPHUB, PhoneStep, RolloutState, UtcTime};
use crate::store::{Rollout, RolloutPhone, StepChange, StoreError};
use crate::telemetry::ErrorChain;

/// Why a drained phone failed that the control plane no longer lists (migration 0033):
/// recorded on its row, and not counted against `max_failures`.
const GONE: &str = "the control plane no longer lists the phone (4.3.1); not updated";


/// At the third drain deadline a phone meets still not serving, it is given up: failed,
/// not counted against `max_failures` (it says nothing of the version). Taken again by every
/// later batch, a phone the operator keeps stopped would otherwise be drained and skipped
/// for good, and the rollout never end (migration 0037).
const NOT_SERVING_SKIPS: i64 = 3;

/// Between the job ids of one phone's update in `rollout_phones.job_id`: 5.3.7 starts one
/// job per version (Table 5-36). Job ids are hex (4.4.1), so a comma cannot be in one.
const JOB_SEPARATOR: &str = ",";

/// The failures batch `batch` counts against `max_failures`. Not those that say nothing of
/// the version: a phone gone from the control plane, failed for that (GONE) or failed
/// otherwise (its update or verification cut short) and gone since; one given up for not
/// serving ([`NOT_SERVING_SKIPS`]).
fn failures_of(phones: &[RolloutPhone], batch: i64) -> i64 {
    (phones.iter())
        .filter(|p| p.state == PhoneStep::Failed && p.batch == Some(batch))
        .filter(|p| p.error.as_deref() != Some(GONE) && !p.unlisted)
        .filter(|p| p.not_serving_skips < NOT_SERVING_SKIPS)
        .count() as i64
}

/// Whether the canary has ended: a phone ran its update to the end, done, or failed in a
/// batch that stayed within `max_failures` (the operator's allowance). A canary skipped,
/// returned by a pause before it ran, or failed past the allowance (the rollout paused; a
/// resume tries a canary again) proved nothing: the next batch is a canary again.
fn canary_ended(rollout: &Rollout, phones: &[RolloutPhone]) -> bool {
    let within = |batch| (1..=rollout.max_failures).contains(&failures_of(phones, batch));
    (phones.iter()).any(|p| {
        p.state == PhoneStep::Done
            || (p.state == PhoneStep::Failed && p.batch.is_some_and(within))
    })
}

impl Rollouts {
    /// Drives every rollout under way one step. Errors of one rollout are logged and
    /// retried at the next tick; they do not stop the others.
    pub async fn tick(&self) -> Result<(), StoreError> {
        let mut budget = self.budget().await?;
        for rollout in self.store.driven_rollouts().await? {
            if let Err(error) = self.drive(&rollout, &mut budget).await {
                tracing::warn!(rollout = rollout.id, error = %ErrorChain(&error), "rollout step failed; will retry");
            }
        }
        Ok(())
    }

    /// Jobs that may still start: `watchdog.max_in_flight` less the recoveries pending and
    /// the rollout updates not yet ended.
    async fn budget(&self) -> Result<usize, StoreError> {
        let running = usize::try_from(self.store.jobs_in_flight().await?).unwrap_or(0);
        Ok(self.max_in_flight.saturating_sub(running))
    }

    async fn drive(&self, rollout: &Rollout, budget: &mut usize) -> Result<(), StoreError> {
        let running = rollout.state == RolloutState::Running;
        let mut stray = false;
        for phone in self.store.rollout_phones(rollout.id).await? {
            match phone.state {
                PhoneStep::Draining if running => self.drain(rollout, &phone, budget).await?,
                // A send that failed without anything done put it back after a pause or
                // an abort had returned the rollout's draining phones: returned now.
                PhoneStep::Draining => stray = true,
                PhoneStep::Updating => self.follow(rollout, &phone).await?,
                PhoneStep::Verifying => self.verify(rollout, &phone).await?,
                _ => {}
            }
        }
        if stray {
            let now = self.clock.now();
            self.store.return_drained_rollout_phones(rollout.id, now).await?;
        }
        if running {
            self.advance(rollout).await?;
        }
        Ok(())
    }

    /// A drained phone: skipped when its session outlives the deadline (unless `force`), or
    /// when it is still not serving then (stopped, frozen, silent, being recovered);
    /// updated once it is free, left while the budget is spent; failed at once when the
    /// control plane no longer lists it, which nothing will change.
    async fn drain(
        &self,
        rollout: &Rollout,
        phone: &RolloutPhone,
        budget: &mut usize,
    ) -> Result<(), StoreError> {
        if phone.unlisted {
            return self.fail(phone, GONE).await;
        }
        let now = self.clock.now();
        let deadline = Duration::from_secs(rollout.drain_deadline_secs.max(1) as u64);
        let overdue = phone.drained_at.is_none_or(|at| at.plus(deadline) <= now);
        if overdue && phone.in_session && !rollout.force {
            let why = "its session outlived the drain deadline; a later batch takes it again";
            tracing::info!(rollout = rollout.id, phone_id = %phone.phone_id, "rollout skips a phone: {why}");
            self.move_phone(phone, PhoneStep::Skipped, Some(why))
                .await?;
            return Ok(());
        }
        let free = !phone.in_session || (overdue && rollout.force);
        let not_serving = self.not_serving(phone);
        if let Some(why) = not_serving.as_ref().filter(|_| overdue) {
            // Waited on for good, it held its batch, and every later one, for ever.
            return self.skip_not_serving(rollout, phone, why).await;
        }
        if !free || not_serving.is_some() || *budget == 0 {
            return Ok(());
        }
        *budget -= 1;
        self.send_update(rollout, phone).await
    }

    /// A drained phone still not serving at the drain deadline: skipped, for a later batch
    /// to take again; given up (failed, uncounted) the [`NOT_SERVING_SKIPS`]th time.
    async fn skip_not_serving(
        &self,
        rollout: &Rollout,
        phone: &RolloutPhone,
        why: &str,
    ) -> Result<(), StoreError> {
        let skips = phone.not_serving_skips + 1;
        let (to, why) = match skips >= NOT_SERVING_SKIPS {
            true => (
                PhoneStep::Failed,
                format!(
                    "{why} at the drain deadline, {skips} times: given up, not updated \
                     (not counted against max_failures)"
                ),
            ),
            false => (
                PhoneStep::Skipped,
                format!("{why} at the drain deadline; a later batch takes it again"),
            ),
        };
        tracing::info!(rollout = rollout.id, phone_id = %phone.phone_id, "rollout {} a phone: {why}", to.as_str());
        let mut change = self.change(phone, to);
        change.not_serving = true;
        change.error = Some(&why);
        self.store.step_rollout_phone(&change).await?;
        Ok(())
    }

    /// Why a drained phone is not to be updated now, whoever's doing that is: being
    /// recovered, not running (4.3.1), or not heard from (never, or not lately).
    fn not_serving(&self, phone: &RolloutPhone) -> Option<String> {
        match phone.cph_status {
            _ if phone.recovering => Some("the watchdog was recovering it".into()),
            Some(s) if s != status::RUNNING => Some(format!("not running (4.3.1 status {s})")),
            _ if !self.heard_lately(phone) => {
                Some("not heard from within fleet.stale_after".into())
            }
            _ => None,
        }
    }

    /// Heard from within `fleet.stale_after`. With running (4.3.1 status 2, or not synced
    /// yet) and not being recovered, what serving means ([`Self::not_serving`]): a phone the
    /// operator stopped (8) or that is frozen (6), one being restarted (4) or reset (3,
    /// which would wipe the update) by someone else, or a silent one the watchdog has not
    /// taken yet, is waited on, not updated (docs/operations.md).
    fn heard_lately(&self, phone: &RolloutPhone) -> bool {
        let heard = phone.last_seen_at;
        heard.is_some_and(|at| at.plus(self.stale_after) > self.clock.now())
    }

    /// 5.3.7. `updating` (with the attempt counted) is written first: if cphub dies during
    /// the call, the phone is found updating and followed, not sent the update again.
    async fn send_update(&self, rollout: &Rollout, phone: &RolloutPhone) -> Result<(), StoreError> {
        let mut change = self.change(phone, PhoneStep::Updating);
        change.attempt = true;
        // The budget was read at the tick's start; an operator's reset or another
        // replica's job may have taken the last place since.
        change.in_flight_cap = Some(self.max_in_flight);
        // Free as read: checked again under the phone's lock. Busy: a forced update.
        change.only_if_free = !phone.in_session;
        if !self.store.step_rollout_phone(&change).await? {
            return Ok(());
        }
        let phone_id = phone.phone_id.as_str();
        tracing::info!(
            rollout = rollout.id,
            phone_id,
            "rollout updates a phone (5.3.7)"
        );
        let sent = (self.client)
            .update_app_version(phone_id, &rollout.app_version_ids)
            .await;
        let updating = RolloutPhone {
            state: PhoneStep::Updating,
            ..phone.clone()
        };
        match sent {
            Ok(batch) => {
                // One job per version (Table 5-36), all followed.
                let jobs: Vec<&str> = batch.jobs().map(|(_, job)| job).collect();
                let refused = batch.failures().next().map(|item| {
                    let code = item.error_code.as_deref().unwrap_or_default();
                    let message = item.error_msg.as_deref().unwrap_or_default();
                    format!("refused (5.3.7): {code}: {message}")
                });
                match (refused, jobs.is_empty()) {
                    (Some(refused), true) => self.fail(&updating, &refused).await,
                    // A version refused, others' jobs started: failing now would return the
                    // phone to the pool while they install, and restart the game under the
                    // next player. Followed to their end; the verification then fails it
                    // with the refusal, unless 5.3.6 names every version on the phone.
                    (refused, _) => {
                        let jobs = (!jobs.is_empty()).then(|| jobs.join(JOB_SEPARATOR));
                        let mut change = self.change(&updating, PhoneStep::Updating);
                        change.request_id = batch.request_id.as_deref();
                        change.job_id = jobs.as_deref();
                        change.error = refused.as_deref();
                        self.store.step_rollout_phone(&change).await?;
                        Ok(())
                    }
                }
            }
            Err(error @ (CphError::OutcomeUnknown(_) | CphError::AnswerLost { .. })) => {
                let request_id = match &error {
                    CphError::AnswerLost { request_id, .. } => request_id.clone(),
                    _ => None,
                };
                tracing::warn!(phone_id, error = %ErrorChain(&error), "update sent, its answer lost (7.1.2): followed, never sent again");
                self.note_job(&updating, request_id.as_deref(), None).await
            }
            Err(error) if error.is_account_level() => {
                // 7.2: the account, not the phone, is refused: every phone would fail
                // alike. Nothing was done; the rollout waits for a person.
                let why = format!("not sent (5.3.7): {}", ErrorChain(&error));
                self.move_phone(&updating, PhoneStep::Draining, Some(&why)).await?;
                let why = format!("the control plane refuses the account: {why}");
                tracing::warn!(rollout = rollout.id, "rollout paused: {why}");
                self.pause(rollout.id, PAUSED_BY_CPHUB, &why).await.ok();
                Ok(())
            }
            Err(error) if error.did_nothing() => {
                // An outage (unreachable, CPS.0003 or 429 to the last retry, the breaker
                // open, an IAM token not renewed) says nothing of the phone: pending again,
                // back in the pool, where it rests thirty ticks (`Rollouts::rest`, a
                // minute by default) before a later batch takes it and tries again.
                let why = format!("not sent (5.3.7), tried again: {}", ErrorChain(&error));
                tracing::warn!(rollout = rollout.id, phone_id, "{why}");
                self.move_phone(&updating, PhoneStep::Pending, Some(&why)).await
            }
            Err(error) => {
                let error = format!("not sent (5.3.7): {}", ErrorChain(&error));
                self.fail(&updating, &error).await
            }
        }
    }

    /// The jobs (4.4.1) of an updating phone, one per version: all succeeded → verifying;
    /// one failed → failed, once the others have ended too (failed at once, the phone went
    /// back to the pool while they installed, and restarted the game under the next
    /// player). A phone without a job id (its answer lost, or cphub died during the call) is
    /// looked up by request id (4.4.2), or by the versions on the phone (5.3.6).
    async fn follow(&self, rollout: &Rollout, phone: &RolloutPhone) -> Result<(), StoreError> {
        let Some(job_ids) = phone.job_id.as_deref() else {
            return self.reconcile(rollout, phone).await;
        };
        let (mut failed, mut unsettled) = (None, None);
        for job_id in job_ids.split(JOB_SEPARATOR) {
            match self.client.job(job_id).await {
                Ok(job) if job.status == job_status::FAILED => {
                    let code = job.error_code.unwrap_or_default();
                    let message = job.error_msg.unwrap_or_default();
                    failed.get_or_insert(format!("job {job_id} failed (4.4.1): {code}: {message}"));
                }
                Ok(job) if job.status == job_status::SUCCEEDED => {}
                Ok(job) => {
                    let status = job.status;
                    unsettled.get_or_insert(format!("job {job_id} still at status {status}"));
                }
                Err(error) => {
                    tracing::debug!(job_id, error = %ErrorChain(&error), "rollout job not read; will ask again");
                    let error = ErrorChain(&error);
                    unsettled.get_or_insert(format!("job {job_id} not read (4.4.1): {error}"));
                }
            }
        }
        match (failed, unsettled) {
            (None, None) => self.verifying(phone).await,
            (Some(error), None) => self.fail(phone, &error).await,
            (None, Some(why)) => self.overdue(rollout, phone, &why).await,
            // No listing can make up for the failed job: at the deadline it fails as is.
            (Some(error), Some(why)) if self.job_deadline_passed(phone) => {
                let why = format!("{error}; {why} after cph.job_deadline_secs");
                self.fail(phone, &why).await
            }
            (Some(_), Some(_)) => Ok(()),
        }
    }

    /// Whether `cph.job_deadline_secs` has passed since the phone's update was sent.
    fn job_deadline_passed(&self, phone: &RolloutPhone) -> bool {
        let since = phone.submitted_at.unwrap_or(phone.updated_at);
        since.plus(self.client.job_deadline()) <= self.clock.now()
    }

    /// An update whose jobs have not all ended. Past `cph.job_deadline_secs` from its
    /// sending (a job that never ends, or one the control plane no longer knows), the
    /// phone's versions (5.3.6) decide: listed, it is verified; not, it fails, and goes back
    /// to the pool instead of holding a `max_in_flight` slot and the phone for good. While
    /// they cannot be read (an outage says nothing of the update) it is asked again, for
    /// one more deadline; then it fails, saying neither could be read.
    async fn overdue(
        &self,
        rollout: &Rollout,
        phone: &RolloutPhone,
        why: &str,
    ) -> Result<(), StoreError> {
        if !self.job_deadline_passed(phone) {
            return Ok(());
        }
        let since = phone.submitted_at.unwrap_or(phone.updated_at);
        let (deadline, now) = (self.client.job_deadline(), self.clock.now());
        let versions = match self.versions_listed(rollout, phone).await {
            Some(true) => return self.verifying(phone).await,
            Some(false) => "the version is not on the phone (5.3.6)",
            None if since.plus(deadline * 2) > now => return Ok(()),
            None => "the phone's versions could not be read either (5.3.6)",
        };
        let why = format!("{why} after cph.job_deadline_secs, and {versions}");
        self.fail(phone, &why).await
    }

    /// Verifying, the refusal of a version by 5.3.7's answer (`error`) kept: the
    /// verification reads it, and a listing without ids (5.3.6) cannot outweigh it.
    async fn verifying(&self, phone: &RolloutPhone) -> Result<(), StoreError> {
        let mut verifying = self.change(phone, PhoneStep::Verifying);
        verifying.error = phone.error.as_deref();
        self.store.step_rollout_phone(&verifying).await?;
        Ok(())
    }

    /// An update whose job is not known. Never sent again: its request's jobs (4.4.2) or
    /// the phone's versions (5.3.6) tell; when neither has by `cph.job_deadline_secs` from
    /// the sending, it fails with why, for the operator to look at. Not the drain deadline
    /// (as short as a second): a job that appears late may still be installing, and a phone
    /// failed back into the pool then would have its game restarted under a player.
    async fn reconcile(&self, rollout: &Rollout, phone: &RolloutPhone) -> Result<(), StoreError> {
        if let Some(request_id) = phone.request_id.as_deref()
            && let Ok(jobs) = self.client.jobs_by_request(request_id).await
        {
            let ours: Vec<String> = (jobs.into_iter())
                .filter(|j| (j.phone_id.as_deref()).is_none_or(|p| p == phone.phone_id.as_str()))
                .map(|j| j.job_id)
                .collect();
            if !ours.is_empty() {
                let ids = ours.join(JOB_SEPARATOR);
                return self.note_job(phone, None, Some(&ids)).await;
            }
        }
        if self.runs_versions(rollout, phone).await {
            return self.verifying(phone).await;
        }
        if self.job_deadline_passed(phone) {
            let why = "outcome unknown (7.1.2): no job found by cph.job_deadline_secs and the \
                       version is not on the phone; not sent again";
            return self.fail(phone, why).await;
        }
        Ok(())
    }

    /// Done once the phone heartbeat after its job and lists the versions (5.3.6); failed
    /// when that has not happened by the drain deadline, or `fleet.stale_after` if longer:
    /// a heartbeat that changes nothing reaches the phone's row only every few beats (the
    /// heartbeat flush holds the others back), so a phone is known silent only once it is
    /// stale. A 5.3.6 that cannot be read (an outage) says nothing of the phone: asked
    /// again for one more deadline, then failed saying so.
    async fn verify(&self, rollout: &Rollout, phone: &RolloutPhone) -> Result<(), StoreError> {
        let ended = phone.job_ended_at.unwrap_or(phone.updated_at);
        let heard = phone.last_seen_at.is_some_and(|seen| seen > ended);
        let listing = match heard {
            true => self.listing(rollout, phone).await,
            false => Some(Listing::Missing),
        };
        // A version refused outright by 5.3.7's answer (`error`): only 5.3.6 naming every
        // version (one the phone had already) makes up for it. Its jobs have all ended, so
        // a listing without ids, which will not change, fails it at once.
        let refused = phone.error.as_deref();
        if let (Some(refused), Some(Listing::Unnamed)) = (refused, listing) {
            return self.fail(phone, refused).await;
        }
        // 5.3.6's example answers `""` for every version id: a phone listing the app with
        // none says nothing against the jobs that succeeded (4.4.1), which then stand.
        if listing == Some(Listing::Unnamed) {
            tracing::info!(rollout = rollout.id, phone_id = %phone.phone_id, "the phone's versions (5.3.6) carry no id; its update jobs succeeded");
        }
        let listed = listing.map(|l| l == Listing::All || l == Listing::Unnamed);
        if listed == Some(true) {
            tracing::info!(rollout = rollout.id, phone_id = %phone.phone_id, "phone updated and back in the pool");
            self.move_phone(phone, PhoneStep::Done, None).await?;
            return Ok(());
        }
        let deadline = Duration::from_secs(rollout.drain_deadline_secs.max(1) as u64);
        let deadline = deadline.max(self.stale_after);
        let now = self.clock.now();
        let why = match (heard, listed) {
            _ if ended.plus(deadline) > now => return Ok(()),
            (true, None) if ended.plus(deadline * 2) > now => return Ok(()),
            (true, None) => "the phone's versions (5.3.6) could not be read after its job",
            (true, _) => "the phone does not list the new version (5.3.6) after its job",
            (false, _) => "no heartbeat after the update job",
        };
        match refused {
            Some(refused) => self.fail(phone, &format!("{refused}; {why}")).await,
            None => self.fail(phone, why).await,
        }
    }

    /// Whether 5.3.6 lists every version of the rollout on the phone; false when it cannot
    /// be read.
    async fn runs_versions(&self, rollout: &Rollout, phone: &RolloutPhone) -> bool {
        self.versions_listed(rollout, phone).await.unwrap_or(false)
    }

    /// Whether 5.3.6 lists every version of the rollout on the phone; None when it cannot
    /// be read. Without an update job that succeeded, a listing without ids proves nothing.
    async fn versions_listed(&self, rollout: &Rollout, phone: &RolloutPhone) -> Option<bool> {
        let listing = self.listing(rollout, phone).await?;
        Some(listing == Listing::All)
    }

    /// What 5.3.6 says of the rollout's versions on the phone; None when it cannot be read.
    async fn listing(&self, rollout: &Rollout, phone: &RolloutPhone) -> Option<Listing> {
        match self.client.phone_apps(phone.phone_id.as_str()).await {
            Ok(apps) => Some(Listing::of(&apps, rollout)),
            Err(error) => {
                tracing::debug!(phone_id = %phone.phone_id, error = %ErrorChain(&error), "phone apps not read (5.3.6); will ask again");
                None
            }
        }
    }

    /// With no phone of the rollout drained: pauses when the last batch failed more than
    /// the plan allows, takes the next batch, or ends the rollout.
    async fn advance(&self, rollout: &Rollout) -> Result<(), StoreError> {
        let phones = self.store.rollout_phones(rollout.id).await?;
        if phones.iter().any(|p| p.state.is_drained()) {
            return Ok(());
        }
        let failed = failures_of(&phones, rollout.batch);
        if rollout.batch > 0 && failed > rollout.max_failures {
            let why = format!(
                "batch {} had {failed} failed phones, more than max_failures {}",
                rollout.batch, rollout.max_failures
            );
            tracing::warn!(rollout = rollout.id, "rollout paused: {why}");
            self.pause(rollout.id, PAUSED_BY_CPHUB, &why).await.ok();
            return Ok(());
        }
        let now = self.clock.now();
        let next = rollout.batch + 1;
        let size = i64::from(rollout.plan().next_batch_size(canary_ended(rollout, &phones)));
        let taken = (self.store)
            .take_rollout_batch(rollout.id, next, size, now, now.minus(self.rest))
            .await?;
        if taken > 0 {
            tracing::info!(
                rollout = rollout.id,
                batch = next,
                phones = taken,
                "rollout drains a batch"
            );
        } else if self.store.finish_rollout(rollout.id, now).await? {
            tracing::info!(rollout = rollout.id, "rollout done");
        }
        Ok(())
    }

    async fn note_job(
        &self,
        phone: &RolloutPhone,
        request_id: Option<&str>,
        job_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut change = self.change(phone, PhoneStep::Updating);
        change.request_id = request_id;
        change.job_id = job_id;
        self.store.step_rollout_phone(&change).await?;
        Ok(())
    }

    async fn fail(&self, phone: &RolloutPhone, error: &str) -> Result<(), StoreError> {
        tracing::warn!(rollout = phone.rollout_id, phone_id = %phone.phone_id, error, "rollout update failed");
        self.move_phone(phone, PhoneStep::Failed, Some(error)).await
    }

    async fn move_phone(
        &self,
        phone: &RolloutPhone,
        to: PhoneStep,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut change = self.change(phone, to);
        change.error = error;
        self.store.step_rollout_phone(&change).await?;
        Ok(())
    }

    /// From the phone's present step to `to`, now.
    fn change<'a>(&self, phone: &'a RolloutPhone, to: PhoneStep) -> StepChange<'a> {
        StepChange {
            rollout_id: phone.rollout_id,
            phone_id: &phone.phone_id,
            from: phone.state,
            to,
            attempt: false,
            not_serving: false,
            in_flight_cap: None,
            only_if_free: false,
            request_id: None,
            job_id: None,
            error: None,
            now: self.now(),
        }
    }

    fn now(&self) -> UtcTime {
        self.clock.now()
    }
}

/// What a phone's applications (5.3.6) say of a rollout's versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// Every version of the rollout is listed.
    All,
    /// The app is listed, but no version of it has an id (`""`, as 5.3.6's example answers):
    /// nothing can be compared.
    Unnamed,
    /// A version is missing.
    Missing,
}

impl Listing {
    fn of(apps: &[DeployedApp], rollout: &Rollout) -> Listing {
        let listed = |version: &String| {
            (apps.iter()).any(|app| app.app_version_id.as_deref() == Some(version.as_str()))
        };
        if rollout.app_version_ids.iter().all(listed) {
            return Listing::All;
        }
        let ours: Vec<&DeployedApp> = (apps.iter())
            .filter(|app| app.app_id == rollout.app_id.as_str())
            .collect();
        match !ours.is_empty() && ours.iter().all(|app| app.app_version_id.is_none()) {
            true => Listing::Unnamed,
            false => Listing::Missing,
        }
    }
}
