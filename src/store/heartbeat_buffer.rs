//! Heartbeats are the bulk of the traffic (one per phone every few seconds) and only the
//! latest one per phone matters, so they are kept in memory and written in batches: one
//! transaction per flush interval instead of one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Store, StoreError};
use crate::domain::{Heartbeat, PhoneId};

#[derive(Default)]
pub struct HeartbeatBuffer {
    pending: Mutex<HashMap<PhoneId, Heartbeat>>,
}

impl HeartbeatBuffer {
    /// Keeps `hb` unless a newer heartbeat of the same phone is already waiting.
    pub fn record(&self, hb: Heartbeat) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        Self::keep_newest(&mut pending, hb);
    }

    pub fn len(&self) -> usize {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes everything pending, within `limit`. On failure the heartbeats go back into the
    /// buffer (unless newer ones arrived meanwhile), so a database outage delays them but
    /// loses none.
    pub async fn flush(&self, store: &dyn Store, limit: Duration) -> Result<usize, StoreError> {
        let batch: Vec<Heartbeat> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::take(&mut *pending).into_values().collect()
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match super::within(limit, store.record_heartbeats(&batch)).await {
            Ok(()) => Ok(batch.len()),
            Err(error) => {
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                for hb in batch {
                    Self::keep_newest(&mut pending, hb);
                }
                Err(error)
            }
        }
    }

    fn keep_newest(pending: &mut HashMap<PhoneId, Heartbeat>, hb: Heartbeat) {
        match pending.get(&hb.phone_id) {
            Some(waiting) if !hb.newer_than(waiting) => {}
            _ => {
                pending.insert(hb.phone_id.clone(), hb);
            }
        }
    }
}

/// The periodic flush task. [`HeartbeatFlusher::stop`] runs one last flush before returning.
pub struct HeartbeatFlusher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HeartbeatFlusher {
    /// Flushes every `every`; each flush within `limit`.
    pub fn spawn(
        buffer: Arc<HeartbeatBuffer>,
        store: Arc<dyn Store>,
        every: Duration,
        limit: Duration,
    ) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => flush_logged(&buffer, &*store, limit).await,
                    _ = stopped.changed() => break,
                }
            }
            flush_logged(&buffer, &*store, limit).await;
        });
        HeartbeatFlusher { stop, task }
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(error) = self.task.await {
            tracing::error!(%error, "heartbeat flusher task failed");
        }
    }
}

async fn flush_logged(buffer: &HeartbeatBuffer, store: &dyn Store, limit: Duration) {
    match buffer.flush(store, limit).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(heartbeats = n, "heartbeats flushed"),
        Err(error) => tracing::warn!(
            error = %crate::telemetry::ErrorChain(&error),
            pending = buffer.len(),
            "heartbeat flush failed; will retry"
        ),
    }
}
