//! Game version rollouts (docs/operations.md "Rolling out a game version"): the operator's
//! side ([`Rollouts::start`], pause, resume, abort) and the engine ([`Rollouts::tick`],
//! `engine.rs`) that the watchdog's leader runs after each of its passes, so one replica
//! drives every rollout and shares the watchdog's in-flight budget without a race.
//!
//! Everything a rollout knows is in the book (`store/rollout.rs`): a restart or a change of
//! leader picks it up where it stood.

mod engine;
mod start;

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::cph::{CphClient, CphError};
use crate::domain::{AppId, PhoneId, RolloutState, UtcTime};
use crate::store::{Rollout, StateChange, Store, StoreError};

pub use start::{StartRollout, resolve_target};

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rollout {0} not found")]
    NotFound(i64),
    #[error("app {0} already has a running or paused rollout; abort it or wait for it to end")]
    AppBusy(AppId),
    #[error("no phone of the target has app {0} (as phone sync last saw it, chapter 5.1.2)")]
    NoPhones(AppId),
    #[error("these phones do not have the app (chapter 5.1.2): {}", .0.join(", "))]
    PhonesWithoutApp(Vec<String>),
    /// 5.3.7: the version must have been pushed to the phone's server first.
    #[error(
        "the version is not pushed to these servers (chapter 5.3.1); push it (5.3.4) or \
         start with push_first: {}", .0.join(", ")
    )]
    NotPushed(Vec<String>),
    #[error("pushing the version to the servers failed (chapter 5.3.4): {0}")]
    PushFailed(String),
    /// 5.3.4 refused the push's parameters (7.2 `CPS.0200`): the servers were read, so the
    /// operator's `app_version_ids` are what the control plane does not know.
    #[error(
        "app_version_ids: the control plane refused them (chapter 5.3.4, {0}); is each an \
         uploaded version of the app (chapter 5.2)?"
    )]
    VersionRefused(String),
    #[error("the rollout is {0}: it cannot be {1}")]
    WrongState(RolloutState, &'static str),
    #[error("the CPH management API call failed: {0}")]
    Cph(#[from] CphError),
}

/// The rollouts of the fleet, for the operator API and the leader's engine.
pub struct Rollouts {
    store: Arc<dyn Store>,
    client: Arc<CphClient>,
    clock: Arc<dyn Clock>,
    /// `watchdog.max_in_flight`: rollout updates and recoveries together never exceed it.
    max_in_flight: usize,
    /// `fleet.stale_after`: a drained phone not heard from within it is not updated.
    stale_after: Duration,
    /// How long a phone refused its update without anything done (an outage) rests in the
    /// pool before a batch takes it again: [`REST_TICKS`] of the engine's ticks. Taken at
    /// once, every batch drained it straight back and held it out of allocation for as long
    /// as the outage lasted; resting, it is out for one tick in thirty-one at most.
    rest: Duration,
}

/// See [`Rollouts::rest`]: a minute at the default tick (`watchdog.interval_ms`, 2 s).
const REST_TICKS: u32 = 30;

impl Rollouts {
    pub fn new(
        store: Arc<dyn Store>,
        client: Arc<CphClient>,
        clock: Arc<dyn Clock>,
        max_in_flight: usize,
        stale_after: Duration,
        tick: Duration,
    ) -> Arc<Rollouts> {
        Arc::new(Rollouts {
            store,
            client,
            clock,
            max_in_flight,
            stale_after,
            rest: tick * REST_TICKS,
        })
    }

    /// Stops taking phones; the updates already sent are followed to their end.
    pub async fn pause(&self, id: i64, by: &str, why: &str) -> Result<Rollout, RolloutError> {
        let change = Change::Pause { by, why };
        change_state(self.store.as_ref(), self.clock.now(), id, change).await
    }
}

/// What a person (or the engine) does to a rollout.
#[derive(Debug, Clone, Copy)]
pub enum Change<'a> {
    /// Takes no new phones; updates already sent are followed to their end, phones only
    /// drained go back to the pool.
    Pause { by: &'a str, why: &'a str },
    /// Running again: from a new batch after cphub's own pause, else the batch under way.
    Resume,
    /// No new updates; drained phones go back to the pool (those being updated once their
    /// job ended: a job cannot be called back).
    Abort,
}

impl Change<'_> {
    fn from(self) -> &'static [RolloutState] {
        match self {
            Change::Pause { .. } => &[RolloutState::Running],
            Change::Resume => &[RolloutState::Paused],
            Change::Abort => &[RolloutState::Running, RolloutState::Paused],
        }
    }

    fn to(self) -> RolloutState {
        match self {
            Change::Pause { .. } => RolloutState::Paused,
            Change::Resume => RolloutState::Running,
            Change::Abort => RolloutState::Aborted,
        }
    }
}

/// Pauses, resumes or aborts: only the book is touched (the engine acts on it at its next
/// tick), so the operator API and the command line need no control plane for it.
pub async fn change_state(
    store: &dyn Store,
    now: UtcTime,
    id: i64,
    change: Change<'_>,
) -> Result<Rollout, RolloutError> {
    let (by, why) = match change {
        Change::Pause { by, why } => (Some(by), Some(why)),
        Change::Resume | Change::Abort => (None, None),
    };
    let to = change.to();
    let state = StateChange {
        id,
        from: change.from(),
        to,
        by,
        why,
        now,
    };
    if let Some(rollout) = store.set_rollout_state(&state).await? {
        tracing::info!(rollout = id, state = to.as_str(), "rollout state changed");
        return Ok(rollout);
    }
    let current = store.rollout(id).await?;
    let current = current.ok_or(RolloutError::NotFound(id))?;
    Err(RolloutError::WrongState(current.state, verb(to)))
}

fn verb(to: RolloutState) -> &'static str {
    match to {
        RolloutState::Running => "resumed",
        RolloutState::Paused => "paused",
        RolloutState::Aborted => "aborted",
        RolloutState::Done => "finished",
    }
}

/// Phone ids as text, for messages.
fn ids(phones: &[PhoneId]) -> Vec<String> {
    phones.iter().map(ToString::to_string).collect()
}
