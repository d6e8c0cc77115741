//! Heartbeats are the bulk of the traffic (one per phone every few seconds) and only the
//! latest one per phone matters, so they are kept in memory and written in batches: one
//! flush per interval instead of one transaction per request.
//!
//! A flush is written in chunks of `heartbeats.flush_chunk` phones, each its own short
//! transaction. SQLite has one writer connection, and enter/quit events and sign checks
//! commit on it too: one transaction for a whole fleet's flush (100k phones) held them for
//! its full length, which was the 134 ms event p99 measured right after a heartbeat flood.
//! Between chunks the connection goes back to the pool, whose waiters are served in order,
//! so a waiting event batch is written next and waits at most one chunk.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Store, StoreError};
use crate::domain::{Heartbeat, PhoneId};

/// A buffered heartbeat, hashed and compared by its phone alone: the set finds a phone's
/// waiting heartbeat by id, without a second copy of the id as a map key (a cloned id was
/// one allocation per heartbeat received).
struct Latest(Heartbeat);

impl Hash for Latest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.phone_id.hash(state);
    }
}

impl PartialEq for Latest {
    fn eq(&self, other: &Self) -> bool {
        self.0.phone_id == other.0.phone_id
    }
}

impl Eq for Latest {}

impl Borrow<PhoneId> for Latest {
    fn borrow(&self) -> &PhoneId {
        &self.0.phone_id
    }
}

pub struct HeartbeatBuffer {
    pending: Mutex<HashSet<Latest>>,
    /// The set the last flush emptied, kept with its capacity: the buffer refills to the
    /// fleet's size every interval, and regrowing a set from nothing reallocated and rehashed
    /// it a dozen times per flush.
    spare: Mutex<HashSet<Latest>>,
    /// Phones per transaction.
    chunk: usize,
}

impl HeartbeatBuffer {
    pub fn new(chunk: usize) -> Self {
        HeartbeatBuffer {
            pending: Mutex::default(),
            spare: Mutex::default(),
            chunk: chunk.max(1),
        }
    }

    /// Keeps `hb` unless a newer heartbeat of the same phone is already waiting.
    pub fn record(&self, hb: Heartbeat) {
        let mut pending = self.pending();
        Self::keep_newest(&mut pending, hb);
    }

    pub fn len(&self) -> usize {
        self.pending().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes everything pending, in chunks, each within `limit`; returns how many were
    /// written. Those the store deferred (rows another writer held) go back into the
    /// buffer for the next flush, and on failure so do those not yet written, unless newer
    /// ones arrived meanwhile: a database outage or a busy row delays them, loses none.
    pub async fn flush(&self, store: &dyn Store, limit: Duration) -> Result<usize, StoreError> {
        let mut batch = self.take();
        if batch.is_empty() {
            return Ok(0);
        }
        // Key order: each chunk then touches a run of neighbouring rows (index pages), and on
        // PostgreSQL every writer locks rows in key order.
        batch.sort_unstable_by(|a, b| a.phone_id.as_str().cmp(b.phone_id.as_str()));
        let (mut done, mut written) = (0, 0);
        for chunk in batch.chunks(self.chunk) {
            match super::within(limit, store.record_heartbeats(chunk)).await {
                Ok(deferred) => {
                    written += chunk.len() - deferred.len();
                    self.give_back(deferred.iter().filter_map(|&i| chunk.get(i).cloned()));
                }
                Err(error) => {
                    self.give_back(batch.drain(done..));
                    return Err(error);
                }
            }
            done += chunk.len();
        }
        Ok(written)
    }

    /// Everything pending, leaving the spare set (empty, with its capacity) in its place.
    fn take(&self) -> Vec<Heartbeat> {
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::swap(&mut *self.pending(), &mut *spare);
        spare.drain().map(|latest| latest.0).collect()
    }

    fn give_back(&self, unwritten: impl Iterator<Item = Heartbeat>) {
        let mut pending = self.pending();
        for hb in unwritten {
            Self::keep_newest(&mut pending, hb);
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<Latest>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keep_newest(pending: &mut HashSet<Latest>, hb: Heartbeat) {
        match pending.get(&hb.phone_id) {
            Some(waiting) if !hb.newer_than(&waiting.0) => {}
            _ => {
                pending.replace(Latest(hb));
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
                    _ = ticks.tick() => {
                        flush_logged(&buffer, &*store, limit).await;
                    }
                    _ = stopped.changed() => break,
                }
            }
            flush_before_stopping(&buffer, &*store, limit).await;
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

/// The last flush: again while rows were busy (another writer commits within
/// milliseconds), so that stopping leaves nothing deferred behind. A failed flush is not
/// tried again: with the database down, each attempt could take all of `limit`.
async fn flush_before_stopping(buffer: &HeartbeatBuffer, store: &dyn Store, limit: Duration) {
    for _ in 0..LAST_FLUSH_ATTEMPTS {
        if !flush_logged(buffer, store, limit).await || buffer.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !buffer.is_empty() {
        tracing::warn!(pending = buffer.len(), "stopped with heartbeats unwritten");
    }
}

const LAST_FLUSH_ATTEMPTS: usize = 50;

/// Whether the flush succeeded (whatever it deferred).
async fn flush_logged(buffer: &HeartbeatBuffer, store: &dyn Store, limit: Duration) -> bool {
    match buffer.flush(store, limit).await {
        Ok(0) => true,
        Ok(n) => {
            tracing::debug!(heartbeats = n, "heartbeats flushed");
            true
        }
        Err(error) => {
            tracing::warn!(
                error = %crate::telemetry::ErrorChain(&error),
                pending = buffer.len(),
                "heartbeat flush failed; will retry"
            );
            false
        }
    }
}
