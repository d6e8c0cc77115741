//! The wait queue: players wait for a phone with their game when the fleet is full
//! (docs/api.md "The wait queue"). The queue itself lives in the database
//! (`store/queue.rs`); this module joins, polls (long-polls) and leaves it for the operator
//! API, and runs the pass that expires unpolled entries and gives free phones to the heads
//! of the queue, on every replica.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::access::MintedAccess;
use crate::clock::Clock;
use crate::config::{AccessSettings, FleetSettings};
use crate::domain::{AppId, Priority, QueueId, UserId, UtcTime, WaitSecs};
use crate::metrics::Metrics;
use crate::store::{
    Issue, MintAnswer, MintTimes, NewQueueEntry, QueueEntry, QueueIssue, QueuePass, Store,
    StoreError,
};

/// How far back the wait estimate looks at how fast the app's phones turn over.
const ESTIMATE_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("no such queue entry (never joined, left, or expired)")]
    Unknown,
    #[error("the entry was served and its session has moved on; join again to play")]
    Closed,
    #[error("queue operation failed")]
    Store(#[from] StoreError),
}

/// An entry still waiting, with what the platform shows the player.
#[derive(Debug, Clone)]
pub struct Place {
    pub entry: QueueEntry,
    /// Seconds, from the app's recent turnover; None while nothing says.
    pub estimated_wait_secs: Option<u64>,
}

/// What a poll answers.
#[derive(Debug)]
pub enum Polled {
    Waiting(Place),
    /// A phone was assigned: the session with its freshly issued secrets.
    Seated(MintAnswer),
}

/// The queue as the API and the background pass use it.
pub struct Queue {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    access: AccessSettings,
    fleet: FleetSettings,
}

impl Queue {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        access: AccessSettings,
        fleet: FleetSettings,
    ) -> Queue {
        Queue {
            store,
            clock,
            metrics,
            access,
            fleet,
        }
    }

    fn times(&self, now: UtcTime) -> MintTimes {
        MintTimes::new(now, &self.access, &self.fleet)
    }

    /// Adds the player at the back of the app's queue (within its priority). A phone free
    /// right now is assigned at once: the answer then says `assigned` and the first poll
    /// gets the session. A player already in the app's queue (a retried join) gets that
    /// entry back, its place kept: the flag says whether the entry is new. The entry is
    /// `token_name`'s: another token's join, poll or leave never finds it.
    pub async fn join(
        &self,
        app_id: AppId,
        user_id: UserId,
        token_name: String,
        priority: Priority,
    ) -> Result<(Place, bool), QueueError> {
        let now = self.clock.now();
        let times = self.times(now);
        let entry = NewQueueEntry {
            queue_id: mint_queue_id(),
            app_id,
            user_id,
            token_name,
            priority,
            now,
            expires_at: now.plus(self.access.queue_ttl()),
        };
        let joined = self.store.join_queue(&entry, &times).await?;
        let found = self.store.queue_entry(&joined.queue_id, now).await?;
        let place = self.place(found.ok_or(QueueError::Unknown)?, now).await?;
        Ok((place, joined.new))
    }

    /// The entry's place, or its session once a phone is assigned; waits up to `wait` for
    /// the assignment. The poll moves the entry's expiry past the wait.
    pub async fn poll(
        &self,
        queue_id: &QueueId,
        token_name: &str,
        wait: WaitSecs,
    ) -> Result<Polled, QueueError> {
        let now = self.clock.now();
        let expires_at = now.plus(wait.duration() + self.access.queue_ttl());
        if !self
            .store
            .extend_queue_entry(queue_id, token_name, now, expires_at)
            .await?
        {
            return Err(QueueError::Unknown);
        }
        let deadline = tokio::time::Instant::now() + wait.duration();
        loop {
            let now = self.clock.now();
            let mut entry = self.live_entry(queue_id, now).await?;
            if entry.session_id.is_some() {
                match self.issue(queue_id, now).await? {
                    Some(seated) => return Ok(seated),
                    // Its phone no longer served: waiting again, at its place.
                    None => entry = self.live_entry(queue_id, now).await?,
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Polled::Waiting(self.place(entry, now).await?));
            }
            tokio::time::sleep(left.min(self.access.queue_assign_interval())).await;
        }
    }

    async fn live_entry(&self, queue_id: &QueueId, now: UtcTime) -> Result<QueueEntry, QueueError> {
        let entry = self.store.queue_entry(queue_id, now).await?;
        entry.ok_or(QueueError::Unknown)
    }

    /// The session of an assigned entry; None when its phone no longer served and the entry
    /// waits again (`store::queue::issue`).
    async fn issue(&self, queue_id: &QueueId, now: UtcTime) -> Result<Option<Polled>, QueueError> {
        let issue = QueueIssue {
            queue_id: queue_id.clone(),
            access: MintedAccess::mint(self.access.cipher),
            times: self.times(now),
        };
        let seat = match self.store.issue_queued_session(&issue).await? {
            Issue::Issued(seat) => seat,
            Issue::Closed => return Err(QueueError::Closed),
            Issue::Waiting => return Ok(None),
            // The entry was assigned a moment ago: only a concurrent leave or expiry took it.
            Issue::Unknown => return Err(QueueError::Unknown),
        };
        if let Some(ms) = seat.first_wait_ms {
            self.metrics.queue_wait.observe(ms.max(0) as f64 / 1000.0);
        }
        let mut access = issue.access;
        access.session_id = seat.session_id.as_str().to_owned();
        // A repeated issue keeps the first one's expiry.
        Ok(Some(Polled::Seated(MintAnswer {
            access,
            auth_ts: seat.auth_ts,
            phone_id: seat.phone_id,
            connect: seat.connect,
        })))
    }

    /// Leaves the queue; a phone assigned but not yet handed out goes to the next in line.
    pub async fn leave(&self, queue_id: &QueueId, token_name: &str) -> Result<(), QueueError> {
        match (self.store)
            .leave_queue(queue_id, token_name, self.clock.now())
            .await?
        {
            true => Ok(()),
            false => Err(QueueError::Unknown),
        }
    }

    /// One pass: drops unpolled entries, then gives free phones to the heads of the queue.
    pub async fn serve(&self) -> Result<QueuePass, StoreError> {
        let now = self.clock.now();
        let pass = self.store.serve_queue(&self.times(now)).await?;
        self.metrics.queue_expired.inc_by(pass.expired);
        if pass.expired > 0 {
            tracing::info!(entries = pass.expired, "queue entries expired unpolled");
        }
        Ok(pass)
    }

    async fn place(&self, entry: QueueEntry, now: UtcTime) -> Result<Place, QueueError> {
        let started = match entry.position {
            0 => 0,
            _ => {
                let since = now.minus(ESTIMATE_WINDOW);
                self.store
                    .sessions_started_since(&entry.app_id, since)
                    .await?
            }
        };
        Ok(Place {
            estimated_wait_secs: estimate_wait(entry.position, started, ESTIMATE_WINDOW),
            entry,
        })
    }

    /// Runs [`Queue::serve`] every `access.queue_assign_interval_ms` until stopped.
    pub fn spawn(self: Arc<Self>) -> QueueTask {
        let every = self.access.queue_assign_interval();
        QueueTask(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = self.serve().await {
                    tracing::warn!(
                        error = %crate::telemetry::ErrorChain(&error),
                        "serving the wait queue failed; will retry"
                    );
                }
            }
        }))
    }
}

/// The background pass on this replica.
pub struct QueueTask(JoinHandle<()>);

impl QueueTask {
    /// Each pass is one transaction, so stopping mid-pass loses nothing.
    pub fn stop(self) {
        self.0.abort();
    }
}

fn mint_queue_id() -> QueueId {
    let bytes: [u8; 16] = rand::random();
    QueueId::parse("queue_id", hex::encode(bytes)).expect("32 hex characters are a valid id")
}

/// How long the entry at `position` may still wait, from the sessions of its app started
/// in the last `window`: with the fleet full, a session starts when a place frees up, so
/// that is the rate the queue moves. None without recent starts (nothing to go by).
pub fn estimate_wait(position: i64, started: i64, window: Duration) -> Option<u64> {
    if position <= 0 {
        return Some(0);
    }
    let started = u64::try_from(started).ok().filter(|&n| n > 0)?;
    Some((position as u64 * window.as_secs()).div_ceil(started))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_follows_the_apps_turnover() {
        let window = Duration::from_secs(600);
        // 60 starts in 10 minutes: a place every 10 s.
        assert_eq!(estimate_wait(3, 60, window), Some(30));
        assert_eq!(estimate_wait(1, 7, window), Some(86));
        assert_eq!(estimate_wait(0, 0, window), Some(0));
        assert_eq!(estimate_wait(5, 0, window), None);
    }
}
