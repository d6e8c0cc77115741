//! When a SQLite commit is durable: its write-ahead log synced to disk, by a sync of the
//! log's file that runs beside the writer instead of inside its commit.
//!
//! With `synchronous = FULL` SQLite fsyncs the log at the end of every commit, on the one
//! writer connection: the next round of events, sign checks and mints waited for the disk
//! (about 1 ms a round here, half of a round's time; docs/benchmarks.md). The writer now
//! commits with `synchronous = NORMAL`, which writes the same log frames in the same order
//! and leaves only their fsync out, and a durable write is answered once a sync of the log
//! *started after its commit* has finished. That sync covers its frames and every earlier
//! commit's, while the writer is already committing the next round. Durability is FULL's:
//! nothing is answered before its frames are on disk, and SQLite's recovery keeps a prefix
//! of the commits (checksummed frames, up to the last whole commit), so no later commit can
//! survive a power cut that an earlier answered one did not. What changes is that another
//! reader may see a commit for the millisecond before it is durable; every write that acts
//! outside the book (a webhook, an answer to a phone) waits for its own durability first.
//!
//! One sync at a time, for everything committed before it started: under load one fsync
//! covers several rounds. A failed sync poisons the store: the kernel may have dropped the
//! pages it could not write, so a later sync that succeeds proves nothing about them. Every
//! durable write then fails, and readiness with it, until cphub is restarted and SQLite
//! recovers the log from what is on disk.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::StoreError;

/// The sync of the log itself: blocking, run on tokio's blocking threads.
type SyncFn = dyn Fn() -> io::Result<()> + Send + Sync;

/// The log of one SQLite database and how far it is synced.
#[derive(Clone)]
pub(super) struct LogSync {
    inner: Arc<Inner>,
}

struct Inner {
    sync: Box<SyncFn>,
    state: Mutex<State>,
    /// Woken when a sync ends.
    synced: Notify,
}

#[derive(Default)]
struct State {
    /// Commits counted so far: a commit's number is the count after it.
    committed: u64,
    /// Every commit up to this number is on disk.
    synced: u64,
    /// A sync is running.
    syncing: bool,
    /// Why a sync failed, once one has.
    failed: Option<String>,
}

impl LogSync {
    /// The log of the database file `database` (SQLite's `<database>-wal`).
    pub fn of_database(database: PathBuf) -> Self {
        let mut log = database.into_os_string();
        log.push("-wal");
        let log = PathBuf::from(log);
        Self::with(move || sync_file(&log))
    }

    pub fn with(sync: impl Fn() -> io::Result<()> + Send + Sync + 'static) -> Self {
        LogSync {
            inner: Arc::new(Inner {
                sync: Box::new(sync),
                state: Mutex::default(),
                synced: Notify::new(),
            }),
        }
    }

    /// Counts a commit that has just returned: its frames are in the log file, maybe not on
    /// disk. The ticket waits for them.
    pub fn committed(&self) -> Durable {
        let mut state = self.inner.lock();
        state.committed += 1;
        Durable(Some((self.clone(), state.committed)))
    }

    /// Why the log cannot be trusted, once a sync has failed.
    pub fn failure(&self) -> Option<String> {
        self.inner.lock().failed.clone()
    }

    async fn wait(&self, commit: u64) -> Result<(), StoreError> {
        loop {
            // Registered before the state is read: a sync ending in between still wakes it.
            let synced = self.inner.synced.notified();
            tokio::pin!(synced);
            synced.as_mut().enable();
            {
                let mut state = self.inner.lock();
                if let Some(failed) = &state.failed {
                    return Err(StoreError::LogNotSynced(failed.clone()));
                }
                if state.synced >= commit {
                    return Ok(());
                }
                if !state.syncing {
                    state.syncing = true;
                    // Its own task: a waiter dropped mid-sync (a request cancelled) must not
                    // leave `syncing` set with nobody to clear it.
                    tokio::spawn(self.clone().sync_through(state.committed));
                }
            }
            synced.await;
        }
    }

    /// Syncs the log, which covers every commit up to `through`, counted before it started.
    async fn sync_through(self, through: u64) {
        let inner = Arc::clone(&self.inner);
        let outcome = tokio::task::spawn_blocking(move || (inner.sync)()).await;
        let mut state = self.inner.lock();
        state.syncing = false;
        match outcome {
            Ok(Ok(())) => state.synced = state.synced.max(through),
            Ok(Err(error)) => {
                tracing::error!(
                    %error,
                    "syncing SQLite's write-ahead log failed: durable writes fail until cphub \
                     is restarted"
                );
                state.failed = Some(error.to_string());
            }
            Err(error) => state.failed = Some(format!("the log sync did not finish: {error}")),
        }
        drop(state);
        self.inner.synced.notify_waiters();
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opened afresh for each sync rather than kept open: SQLite deletes the log when its last
/// connection closes (after checkpointing all of it into the database file and syncing
/// that), and a new log is a new file; a kept handle would sync the deleted one. A log that
/// is not there has nothing left to sync.
fn sync_file(log: &std::path::Path) -> io::Result<()> {
    match std::fs::File::open(log) {
        Ok(file) => file.sync_data(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

/// When a commit is durable: at once (PostgreSQL, which returns from COMMIT once its log is
/// flushed; SQLite with `synchronous = NORMAL` chosen), or once the log is synced past it.
#[must_use = "a commit is not durable until its ticket is waited for"]
pub struct Durable(Option<(LogSync, u64)>);

impl Durable {
    /// Durable already.
    pub fn now() -> Self {
        Durable(None)
    }

    /// Whether the commit may still be waiting for its sync.
    pub fn is_pending(&self) -> bool {
        self.0.is_some()
    }

    /// Returns once the commit is on disk, or the error that means it may not be.
    pub async fn wait(self) -> Result<(), StoreError> {
        match self.0 {
            None => Ok(()),
            Some((log, commit)) => log.wait(commit).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    /// A log whose syncs each wait for a permit, counting the syncs begun.
    fn gated() -> (LogSync, Arc<Semaphore>, Arc<AtomicUsize>) {
        let gate = Arc::new(Semaphore::new(0));
        let begun = Arc::new(AtomicUsize::new(0));
        let (g, b) = (Arc::clone(&gate), Arc::clone(&begun));
        let log = LogSync::with(move || {
            b.fetch_add(1, Ordering::SeqCst);
            let permit = tokio::runtime::Handle::current().block_on(g.acquire());
            permit.expect("gate open").forget();
            Ok(())
        });
        (log, gate, begun)
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// A commit made while a sync runs is not covered by it: it waits for the next one,
    /// which covers every commit made meanwhile.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_is_durable_only_after_a_sync_that_began_after_it() {
        let (log, gate, begun) = gated();
        let first = tokio::spawn(log.committed().wait());
        settle().await;
        assert_eq!(begun.load(Ordering::SeqCst), 1);
        let second = tokio::spawn(log.committed().wait());
        let third = tokio::spawn(log.committed().wait());
        settle().await;
        assert_eq!(begun.load(Ordering::SeqCst), 1, "one sync at a time");

        gate.add_permits(1);
        first.await.unwrap().unwrap();
        settle().await;
        assert!(!second.is_finished(), "the first sync began before the second commit");
        assert_eq!(begun.load(Ordering::SeqCst), 2, "one sync for both later commits");
        gate.add_permits(1);
        second.await.unwrap().unwrap();
        third.await.unwrap().unwrap();
        assert_eq!(begun.load(Ordering::SeqCst), 2);
    }

    /// After a failed sync no commit is durable again, not even one whose later sync would
    /// succeed.
    #[tokio::test]
    async fn a_failed_sync_fails_every_later_wait() {
        let fail = Arc::new(AtomicUsize::new(1));
        let f = Arc::clone(&fail);
        let log = LogSync::with(move || match f.fetch_sub(1, Ordering::SeqCst) {
            1 => Err(io::Error::other("EIO")),
            _ => Ok(()),
        });
        let error = log.committed().wait().await.unwrap_err();
        assert!(matches!(error, StoreError::LogNotSynced(ref why) if why.contains("EIO")));
        assert!(log.committed().wait().await.is_err());
        assert!(log.failure().is_some());
    }

    /// A waiter that gives up mid-sync does not leave the sync marked as running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_waiter_does_not_stall_the_next() {
        let (log, gate, _) = gated();
        let cancelled = tokio::spawn(log.committed().wait());
        settle().await;
        cancelled.abort();
        gate.add_permits(2);
        let next = tokio::time::timeout(Duration::from_secs(5), log.committed().wait());
        next.await.expect("the next commit's sync ran").unwrap();
    }

    #[tokio::test]
    async fn a_missing_log_has_nothing_to_sync() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSync::of_database(dir.path().join("book.db"));
        log.committed().wait().await.unwrap();
        std::fs::write(dir.path().join("book.db-wal"), b"frames").unwrap();
        log.committed().wait().await.unwrap();
    }
}
