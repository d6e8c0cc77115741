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
//!
//! Most heartbeats say only "still here, still the same": the same session and game as the
//! one before. Writing each of them was most of what the database did under a fleet (two
//! thirds of PostgreSQL's time, docs/benchmarks.md), so a heartbeat that says what the
//! phone's last written one said is held back ([`Unchanged`]) until it is news: once it is
//! far enough behind in time that the row could start to look stale, or once no newer one
//! has come (the phone may have gone silent, and its last heartbeat is what an abandoned
//! session ends at). The row then always holds a heartbeat recent enough that staleness is
//! judged exactly as before; only the time it shows can be one or two intervals old.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntGauge};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Store, StoreError};
use crate::clock::Clock;
use crate::domain::{Heartbeat, PhoneId, UtcTime};

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

/// When a heartbeat that changes nothing but the time is written after all. With phones
/// beating every `I` and stale after `miss_threshold × I`, the row is written every
/// `miss_threshold − 1` beats: the beat that is `refresh = (miss_threshold − 1.5) × I` or
/// more newer than the written one (half an interval either side for jitter), so a live
/// phone's row is at most `(miss_threshold − 1) × I` plus a flush behind, a whole interval
/// short of stale. A beat held back is written once `quiet = 1.2 × I` passes without a newer
/// one: a phone that falls silent has its last heartbeat in its row well before the row
/// could look stale, so staleness and the end of an abandoned session are what they were.
/// What this costs is margin: a flush may now run `0.8 × I − flush interval` late (3 s by
/// default) before a row looks stale, instead of `(miss_threshold − 1) × I − flush interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unchanged {
    refresh: Duration,
    quiet: Duration,
    /// A phone silent this long is stale and its row holds its last heartbeat: its mark is
    /// dropped, so phones that left the fleet do not stay in memory.
    forget: Duration,
}

impl Unchanged {
    /// `None` below a miss threshold of 3: the budget of one skipped beat is not there.
    pub fn for_fleet(interval: Duration, miss_threshold: u32) -> Option<Self> {
        if miss_threshold < 3 {
            return None;
        }
        let beats = f64::from(miss_threshold);
        Some(Unchanged {
            refresh: interval.mul_f64(beats - 1.5),
            quiet: interval.mul_f64(1.2),
            forget: interval.mul_f64(beats),
        })
    }
}

/// What the flush last wrote for each phone, and the heartbeat it holds back.
struct Marks {
    rule: Unchanged,
    clock: Arc<dyn Clock>,
    phones: HashMap<PhoneId, Mark>,
    /// Keyed per process: which session and game a heartbeat names, compared by hash.
    said: RandomState,
}

struct Mark {
    /// When the last written heartbeat arrived: the row's `last_seen_at`.
    seen: UtcTime,
    /// The session and game it named.
    said: u64,
    waiting: Option<Heartbeat>,
}

impl Marks {
    fn said(&self, hb: &Heartbeat) -> u64 {
        self.said.hash_one((&hb.session_id, &hb.app_id))
    }

    /// Adds `hb` to `due`, or holds it back (replacing an older one held back).
    fn sort(&mut self, hb: Heartbeat, due: &mut Vec<Heartbeat>) {
        let said = self.said(&hb);
        let Some(mark) = self.phones.get_mut(&hb.phone_id) else {
            return due.push(hb);
        };
        let (hb, said) = match mark.waiting.take() {
            Some(held) if !hb.newer_than(&held) => (held, mark.said),
            _ => (hb, said),
        };
        if said != mark.said || hb.received_at >= mark.seen.plus(self.rule.refresh) {
            due.push(hb);
        } else {
            mark.waiting = Some(hb);
        }
    }

    /// Adds to `due` the heartbeats held back that no newer one followed within `quiet`
    /// (or all of them), and forgets phones long silent. Returns how many stay held back.
    fn release(&mut self, everything: bool, due: &mut Vec<Heartbeat>) -> usize {
        let now = self.clock.now();
        let rule = self.rule;
        let mut held_back = 0;
        self.phones.retain(|_, mark| match mark.waiting.take() {
            Some(held) if everything || now >= held.received_at.plus(rule.quiet) => {
                due.push(held);
                true
            }
            Some(held) => {
                mark.waiting = Some(held);
                held_back += 1;
                true
            }
            None => now < mark.seen.plus(rule.forget),
        });
        held_back
    }

    fn wrote(&mut self, hb: Heartbeat) {
        let said = self.said(&hb);
        match self.phones.get_mut(&hb.phone_id) {
            Some(mark) => {
                mark.seen = mark.seen.max(hb.received_at);
                mark.said = said;
            }
            None => {
                let mark = Mark {
                    seen: hb.received_at,
                    said,
                    waiting: None,
                };
                self.phones.insert(hb.phone_id, mark);
            }
        }
    }

    fn held_back(&self) -> usize {
        self.phones.values().filter(|m| m.waiting.is_some()).count()
    }
}

/// What the flushes report (`cphub_heartbeat_flush_*`, docs/metrics.md), built by the
/// metrics as the writers' [`QueueMeter`](super::QueueMeter)s are. A flush that runs late
/// is what makes live phones look stale, sooner with heartbeats held back: its duration is
/// what an operator alerts on.
#[derive(Clone)]
pub struct FlushMeter {
    /// Seconds each flush with something due took, its chunks together, failed ones too.
    pub duration: Histogram,
    /// Heartbeats written to their phones' rows.
    pub written: IntCounter,
    /// Flushes that failed: what they had not written waits for the next.
    pub failed: IntCounter,
    /// Heartbeats held back after the last flush ([`Unchanged`]).
    pub held_back: IntGauge,
}

pub struct HeartbeatBuffer {
    pending: Mutex<HashSet<Latest>>,
    /// The set the last flush emptied, kept with its capacity: the buffer refills to the
    /// fleet's size every interval, and regrowing a set from nothing reallocated and rehashed
    /// it a dozen times per flush.
    spare: Mutex<HashSet<Latest>>,
    /// Phones per transaction.
    chunk: usize,
    /// Held by a flush for its whole length: one flush at a time decides what is due.
    marks: Option<tokio::sync::Mutex<Marks>>,
    meter: Option<FlushMeter>,
    /// A flush failed, and none has written everything it took since: heartbeats received
    /// wait here, and the book's `last_seen_at` is behind them.
    behind: AtomicBool,
    /// When a flush last wrote everything after one had failed.
    caught_up_at: Mutex<Option<Instant>>,
}

impl HeartbeatBuffer {
    /// A buffer that writes every heartbeat it keeps.
    pub fn new(chunk: usize) -> Self {
        HeartbeatBuffer {
            pending: Mutex::default(),
            spare: Mutex::default(),
            chunk: chunk.max(1),
            marks: None,
            meter: None,
            behind: AtomicBool::new(false),
            caught_up_at: Mutex::default(),
        }
    }

    /// Reports each flush to `meter`.
    pub fn metered(mut self, meter: FlushMeter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Holds back heartbeats that change nothing but the time, by `rule`, judged on `clock`
    /// (the one the heartbeats' arrival is stamped with).
    pub fn holding_back_unchanged(mut self, rule: Unchanged, clock: Arc<dyn Clock>) -> Self {
        self.marks = Some(tokio::sync::Mutex::new(Marks {
            rule,
            clock,
            phones: HashMap::new(),
            said: RandomState::new(),
        }));
        self
    }

    /// Keeps `hb` unless a newer heartbeat of the same phone is already waiting.
    pub fn record(&self, hb: Heartbeat) {
        let mut pending = self.pending();
        Self::keep_newest(&mut pending, hb);
    }

    /// Heartbeats received and not yet looked at by a flush (not those held back).
    pub fn len(&self) -> usize {
        self.pending().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether silence read from the book is the phones': every heartbeat this buffer was
    /// given has reached it (but those of the last flush interval), and `settle` has passed
    /// since it caught up after a failed flush. False from a failed flush until then: the
    /// outage was most likely the database's, seen by every replica, and the others'
    /// buffers may catch up a little later than this one.
    pub fn caught_up(&self, settle: Duration) -> bool {
        if self.behind.load(Ordering::Acquire) {
            return false;
        }
        let at = *self.caught_up_at.lock().unwrap_or_else(PoisonError::into_inner);
        at.is_none_or(|at| at.elapsed() >= settle)
    }

    /// Notes how a flush ended.
    fn settle(&self, failed: bool) {
        let was_behind = self.behind.swap(failed, Ordering::AcqRel);
        if was_behind && !failed {
            let mut at = self.caught_up_at.lock().unwrap_or_else(PoisonError::into_inner);
            *at = Some(Instant::now());
        }
    }

    /// Heartbeats a flush held back because they changed nothing yet.
    pub async fn held_back(&self) -> usize {
        match &self.marks {
            Some(marks) => marks.lock().await.held_back(),
            None => 0,
        }
    }

    /// Writes what is due, in chunks, each within `limit`; returns how many were written.
    /// Those the store deferred (rows another writer held) go back into the buffer for the
    /// next flush, and on failure so do those not yet written, unless newer ones arrived
    /// meanwhile: a database outage or a busy row delays them, loses none.
    pub async fn flush(&self, store: &dyn Store, limit: Duration) -> Result<usize, StoreError> {
        self.flush_some(store, limit, false).await
    }

    /// [`flush`](Self::flush), the heartbeats held back included: before stopping.
    async fn flush_all(&self, store: &dyn Store, limit: Duration) -> Result<usize, StoreError> {
        self.flush_some(store, limit, true).await
    }

    async fn flush_some(
        &self,
        store: &dyn Store,
        limit: Duration,
        everything: bool,
    ) -> Result<usize, StoreError> {
        let started = Instant::now();
        let mut marks = match &self.marks {
            Some(marks) => Some(marks.lock().await),
            None => None,
        };
        let arrived = self.take();
        let mut due = Vec::with_capacity(arrived.len());
        let held_back = match marks.as_deref_mut() {
            Some(marks) => {
                arrived.into_iter().for_each(|hb| marks.sort(hb, &mut due));
                marks.release(everything, &mut due)
            }
            None => {
                due = arrived;
                0
            }
        };
        if let Some(meter) = &self.meter {
            meter.held_back.set(held_back as i64);
        }
        if due.is_empty() {
            // Nothing waits: what a failed flush gave back has been written since.
            self.settle(false);
            return Ok(0);
        }
        // Key order: each chunk then touches a run of neighbouring rows (index pages), and on
        // PostgreSQL every writer locks rows in key order.
        due.sort_unstable_by(|a, b| a.phone_id.as_str().cmp(b.phone_id.as_str()));
        let flushed = self.write(store, limit, due, marks.as_deref_mut()).await;
        self.settle(flushed.is_err());
        if let Some(meter) = &self.meter {
            meter.duration.observe(started.elapsed().as_secs_f64());
            if flushed.is_err() {
                meter.failed.inc();
            }
        }
        flushed
    }

    /// Writes `due` in chunks, noting each written heartbeat in `marks`.
    async fn write(
        &self,
        store: &dyn Store,
        limit: Duration,
        due: Vec<Heartbeat>,
        mut marks: Option<&mut Marks>,
    ) -> Result<usize, StoreError> {
        let mut due = due.into_iter();
        let mut written = 0;
        loop {
            let chunk: Vec<Heartbeat> = due.by_ref().take(self.chunk).collect();
            if chunk.is_empty() {
                return Ok(written);
            }
            let deferred = match super::within(limit, store.record_heartbeats(&chunk)).await {
                Ok(deferred) => deferred,
                Err(error) => {
                    self.give_back(chunk.into_iter().chain(due));
                    return Err(error);
                }
            };
            let wrote = chunk.len() - deferred.len();
            written += wrote;
            if let Some(meter) = &self.meter {
                meter.written.inc_by(wrote as u64);
            }
            let mut busy = Vec::with_capacity(deferred.len());
            for (i, hb) in chunk.into_iter().enumerate() {
                if deferred.contains(&i) {
                    busy.push(hb);
                } else if let Some(marks) = marks.as_deref_mut() {
                    marks.wrote(hb);
                }
            }
            self.give_back(busy.into_iter());
        }
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
                        log_flush(buffer.flush(&*store, limit).await, &buffer);
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
        if !log_flush(buffer.flush_all(store, limit).await, buffer) || buffer.is_empty() {
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
fn log_flush(flushed: Result<usize, StoreError>, buffer: &HeartbeatBuffer) -> bool {
    match flushed {
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
