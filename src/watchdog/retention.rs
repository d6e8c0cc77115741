//! Retention of the session book: the replica holding the retention lease removes closed
//! sessions past `book.retention_days`, a batch per transaction, every
//! `book.retention_interval_secs`. What may go is decided in the store
//! (`store::Retention`); this is the loop, the lease and the count.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::BookSettings;
use crate::domain::UtcTime;
use crate::metrics::Metrics;
use crate::store::{Lease, Retention, Role, Store, StoreError};
use crate::telemetry::ErrorChain;

pub struct BookRetention {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    settings: BookSettings,
    webhooks_enabled: bool,
}

pub struct RetentionTask(JoinHandle<()>);

impl RetentionTask {
    /// Each batch is one transaction, so stopping mid-pass loses nothing.
    pub fn stop(self) {
        self.0.abort();
    }
}

impl BookRetention {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        settings: BookSettings,
        webhooks_enabled: bool,
    ) -> Self {
        BookRetention {
            store,
            clock,
            metrics,
            settings,
            webhooks_enabled,
        }
    }

    /// Runs even while `book.retention_days` is 0: PostgreSQL's event log needs its day
    /// partitions made ahead.
    pub fn spawn(self) -> RetentionTask {
        RetentionTask(tokio::spawn(self.run()))
    }

    async fn run(self) {
        let mut lease: Option<Box<dyn Lease>> = None;
        let mut ticks = tokio::time::interval(self.settings.retention_interval());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !self.leads(&mut lease).await {
                continue;
            }
            if let Err(error) = self.pass().await {
                tracing::warn!(error = %ErrorChain(&error), "book retention failed; will retry");
            }
        }
    }

    /// Whether this replica holds the retention lease, asking for it when it does not.
    async fn leads(&self, lease: &mut Option<Box<dyn Lease>>) -> bool {
        let leads = super::lease::leads(&*self.store, Role::Retention, lease, "book retention");
        let leads = leads.await;
        self.metrics.book_retention_leader.set(leads.into());
        leads
    }

    /// Batches until one comes back short (the book holds nothing more to remove now),
    /// then the event log's partitions: those past retention hold only the events of
    /// sessions removed by now, and of those kept, which are moved out first.
    async fn pass(&self) -> Result<(), StoreError> {
        let now = self.clock.now();
        let days = Duration::from_secs(self.settings.retention_days * 86_400);
        let before = (self.settings.retention_days > 0).then(|| now.minus(days));
        if let Some(before) = before {
            self.remove(before).await?;
            let pruned = self.store.prune_audit_log(before).await?;
            if pruned > 0 {
                tracing::info!(lines = pruned, "removed audit lines past retention");
            }
        }
        let dropped = self.store.maintain_event_log(now, before).await?;
        if dropped > 0 {
            tracing::info!(
                partitions = dropped,
                "dropped event-log partitions past retention"
            );
        }
        Ok(())
    }

    async fn remove(&self, before: UtcTime) -> Result<(), StoreError> {
        let retention = Retention {
            before,
            batch: self.settings.retention_batch as i64,
            webhooks_enabled: self.webhooks_enabled,
        };
        loop {
            let removed = self.store.remove_old_sessions(&retention).await?;
            self.metrics.book_sessions_removed.inc_by(removed);
            if removed > 0 {
                tracing::info!(sessions = removed, "removed closed sessions past retention");
            }
            if removed < retention.batch as u64 {
                return Ok(());
            }
        }
    }
}
