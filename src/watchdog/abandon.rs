//! Closing sessions whose phone went silent, or whose game is gone without a quit (6.4),
//! as `abandoned`: book-keeping, not fleet care, so it runs without a control plane and
//! with `watchdog.enabled` off, on the one replica that holds its lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{FleetSettings, WatchdogSettings};
use crate::metrics::Metrics;
use crate::store::{HeartbeatBuffer, Lease, Role, Store, StoreError};
use crate::telemetry::ErrorChain;

/// Closes abandoned sessions every `watchdog.interval_ms`, once `watchdog.startup_grace_secs`
/// has passed. A session is judged by the heartbeats in the book, so not while this
/// replica's heartbeats are behind it (see [`HeartbeatBuffer::caught_up`]).
pub struct Abandonment {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    heartbeats: Arc<HeartbeatBuffer>,
    stale_after: Duration,
    interval: Duration,
    grace: Duration,
}

pub struct AbandonmentTask(JoinHandle<()>);

impl AbandonmentTask {
    /// Each pass is one transaction, so stopping mid-pass loses nothing.
    pub fn stop(self) {
        self.0.abort();
    }
}

impl Abandonment {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        heartbeats: Arc<HeartbeatBuffer>,
        watchdog: &WatchdogSettings,
        fleet: &FleetSettings,
    ) -> Self {
        Abandonment {
            store,
            clock,
            metrics,
            heartbeats,
            stale_after: fleet.stale_after(),
            interval: Duration::from_millis(watchdog.interval_ms.max(10)),
            grace: Duration::from_secs(watchdog.startup_grace_secs),
        }
    }

    pub fn spawn(self) -> AbandonmentTask {
        AbandonmentTask(tokio::spawn(self.run()))
    }

    async fn run(self) {
        // Monotonic: a wall-clock jump cannot end the grace early.
        let started = Instant::now();
        let mut lease: Option<Box<dyn Lease>> = None;
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if started.elapsed() < self.grace {
                continue;
            }
            let what = "abandoned sessions";
            if !super::lease::leads(&*self.store, Role::Abandonment, &mut lease, what).await {
                continue;
            }
            if let Err(error) = self.pass().await {
                tracing::warn!(error = %ErrorChain(&error), "closing abandoned sessions failed; will retry");
            }
        }
    }

    /// One pass. While a heartbeat flush has failed and none has written everything since
    /// (the database was away, or its write lock held), the book's `last_seen_at` is as old
    /// as the outage: every phone would look silent, and every session on one would be
    /// closed, its player's reconnects refused, for cphub's outage, not the phones'. Nor for
    /// the stale time after: other replicas' buffers catch up on their own flushes.
    pub async fn pass(&self) -> Result<(), StoreError> {
        if !self.heartbeats.caught_up(self.stale_after) {
            tracing::debug!("heartbeats not all in the book since a failed flush; no session judged silent");
            return Ok(());
        }
        let now = self.clock.now();
        let fresh_since = now.minus(self.stale_after);
        let closed = (self.store)
            .abandon_sessions(fresh_since, self.stale_after, now)
            .await?;
        for session in closed {
            tracing::info!(session_id = %session.session_id, phone_id = %session.phone_id, "session abandoned: its phone went silent");
            self.metrics.record_abandoned(&session);
        }
        Ok(())
    }
}
