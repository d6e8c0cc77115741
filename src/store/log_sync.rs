//! When a SQLite commit is durable: its write-ahead log synced to disk, by a sync of the
//! log's file that runs beside the writer instead of inside its commit.
//!
//! With `synchronous = FULL` SQLite fsyncs the log at the end of every commit, on the one
//! writer connection: the next round of events, sign checks and mints waited for the disk
//! (about 1 ms of a 2.2 ms round at 32 connections; docs/benchmarks.md). The writer now
//! commits with `synchronous = NORMAL`, which writes the same log frames in the same order
//! and leaves only their fsync out, and a durable write is answered once a sync of the log
//! *begun after its commit* has ended. That sync covers its frames and every earlier
//! commit's, while the writer is already committing the next round. Durability is FULL's:
//! SQLite's recovery keeps the log up to its last whole commit (each frame checksummed), so
//! a power cut keeps a prefix of the commits, and every answered commit is in it. What
//! changes is that a reader may see a commit in the millisecond before it is durable;
//! whatever acts outside the book (an answer to a phone, a webhook) waits for its own
//! durable write first.
//!
//! The syncs run on a thread of their own, one at a time, each for every commit counted
//! before it began: under load one fsync covers several rounds. A failed sync poisons the
//! log: the kernel may have dropped the pages it could not write, so a later sync that
//! succeeds proves nothing about them. Every durable write then fails, the writer begins
//! no transaction (`SqliteStore::begin_write`), and readiness fails, until cphub is
//! restarted and SQLite recovers the log from what is on disk.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::StoreError;

/// The sync of the log itself: blocking, owned and run by the log's own thread.
type SyncFn = dyn FnMut() -> io::Result<()> + Send;

/// What to do once a commit is durable (`Ok`) or cannot be (`Err`). Run on the log's
/// thread: it must not block.
type Then = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The log of one SQLite database and how far it is synced. Its syncs run on a thread of
/// their own, which ends once the last handle (and ticket) is dropped.
#[derive(Clone)]
pub(super) struct LogSync {
    owner: Arc<Owner>,
}

/// Stops the thread on drop.
struct Owner {
    inner: Arc<Inner>,
}

struct Inner {
    /// The file the thread syncs, when it is one (for the log and `file`).
    file: Option<PathBuf>,
    state: Mutex<State>,
    /// Woken when a commit wants a sync, and on stop.
    wanted: Condvar,
}

#[derive(Default)]
struct State {
    /// Commits counted so far: a commit's number is the count after it.
    committed: u64,
    /// Every commit up to this number is on disk.
    synced: u64,
    /// Why a sync failed, once one has.
    failed: Option<String>,
    /// Waiting for a sync: the commit's number and what to do then.
    waiting: Vec<(u64, Then)>,
    stopped: bool,
}

impl LogSync {
    /// The log of the database file `database` (SQLite's `<database>-wal`).
    pub fn of_database(database: &Path) -> io::Result<Self> {
        let mut log = database.as_os_str().to_owned();
        log.push("-wal");
        let path = PathBuf::from(log);
        let mut file = LogFile {
            path: path.clone(),
            open: None,
        };
        let sync = move || file.sync();
        Self::start(Box::new(sync), Some(path))
    }

    /// A log synced by `sync` (tests stand in for the disk with it).
    #[cfg(test)]
    pub fn with(sync: impl FnMut() -> io::Result<()> + Send + 'static) -> Self {
        Self::start(Box::new(sync), None).expect("the log's thread starts")
    }

    fn start(sync: Box<SyncFn>, file: Option<PathBuf>) -> io::Result<Self> {
        let inner = Arc::new(Inner {
            file,
            state: Mutex::default(),
            wanted: Condvar::new(),
        });
        let thread = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("cphub-log-sync".into())
            .spawn(move || thread.run(sync))?;
        Ok(LogSync {
            owner: Arc::new(Owner { inner }),
        })
    }

    /// The file it syncs.
    #[cfg(test)]
    pub fn file(&self) -> Option<&Path> {
        self.owner.inner.file.as_deref()
    }

    /// Counts a commit that has just returned: its frames are in the log file, maybe not on
    /// disk. The ticket waits for them.
    pub fn committed(&self) -> Durable {
        let mut state = self.owner.inner.lock();
        state.committed += 1;
        Durable(Some((self.clone(), state.committed)))
    }

    /// Why the log cannot be trusted, once a sync has failed.
    pub fn failure(&self) -> Option<String> {
        self.owner.inner.lock().failed.clone()
    }

    /// Runs `then` once commit `commit` is durable, or cannot be: at once if that is known.
    fn then(&self, commit: u64, then: Then) {
        let inner = &self.owner.inner;
        let mut state = inner.lock();
        let known = match &state.failed {
            Some(failed) => Some(Err(StoreError::LogNotSynced(failed.clone()))),
            None if state.synced >= commit => Some(Ok(())),
            None => None,
        };
        match known {
            Some(outcome) => {
                drop(state);
                then(outcome);
            }
            None => {
                state.waiting.push((commit, then));
                inner.wanted.notify_one();
            }
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.inner.lock().stopped = true;
        self.inner.wanted.notify_one();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One sync at a time, for every commit counted before it began; then what waited for
    /// those commits. Ends once stopped with nothing waiting.
    fn run(&self, mut sync: Box<SyncFn>) {
        loop {
            let mut state = self.lock();
            while state.waiting.is_empty() && !state.stopped {
                state = self.wanted.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            if state.waiting.is_empty() {
                return;
            }
            let through = state.committed;
            drop(state);
            let synced = sync();
            let mut state = self.lock();
            if let Err(error) = synced {
                tracing::error!(
                    %error,
                    file = ?self.file,
                    "syncing SQLite's write-ahead log failed: durable writes fail until cphub \
                     is restarted"
                );
                state.failed = Some(error.to_string());
            }
            state.synced = state.synced.max(through);
            let failed = state.failed.clone();
            let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut state.waiting)
                .into_iter()
                .partition(|(commit, _)| failed.is_some() || *commit <= through);
            state.waiting = waiting;
            drop(state);
            for (_, then) in done {
                then(match &failed {
                    Some(failed) => Err(StoreError::LogNotSynced(failed.clone())),
                    None => Ok(()),
                });
            }
        }
    }
}

/// The log's file, kept open between syncs. Linux reports a failed write-back once to each
/// handle that was open when it failed: a handle opened afresh for each sync would miss a
/// failure that another handle (the checkpointer's sync) had already been told of, and call
/// lost pages synced. The handle is opened again only when the log is another file: SQLite
/// deletes the log when its last connection closes (after checkpointing all of it into the
/// database file and syncing that) and creates a new one. A log that is not there has
/// nothing left to sync.
struct LogFile {
    path: PathBuf,
    open: Option<std::fs::File>,
}

impl LogFile {
    fn sync(&mut self) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;

        let on_disk = match std::fs::metadata(&self.path) {
            Ok(meta) => (meta.dev(), meta.ino()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(error),
        };
        // Deleted (no links left: its inode number may already be the new log's) or
        // another file. The old file's frames were checkpointed and synced before SQLite
        // deleted it.
        let stale = match &self.open {
            None => true,
            Some(file) => {
                let held = file.metadata()?;
                held.nlink() == 0 || (held.dev(), held.ino()) != on_disk
            }
        };
        if stale {
            self.open = Some(std::fs::File::open(&self.path)?);
        }
        self.open.as_ref().expect("opened above").sync_data()
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
        let Some((log, commit)) = self.0 else {
            return Ok(());
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        log.then(
            commit,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        let stopped = || StoreError::LogNotSynced("the log's thread stopped".into());
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    /// Opens a [`gated`] log's syncs, one per permit.
    pub struct Gate(Mutex<mpsc::Sender<()>>);

    impl Gate {
        pub fn open(&self, syncs: usize) {
            for _ in 0..syncs {
                self.0.lock().unwrap().send(()).unwrap();
            }
        }
    }

    /// A log whose syncs each wait for the gate, counting the syncs begun.
    pub fn gated() -> (LogSync, Gate, Arc<AtomicUsize>) {
        let (permits, gate) = mpsc::channel();
        let gate = Mutex::new(gate);
        let begun = Arc::new(AtomicUsize::new(0));
        let b = Arc::clone(&begun);
        let log = LogSync::with(move || {
            b.fetch_add(1, Ordering::SeqCst);
            gate.lock().unwrap().recv().map_err(io::Error::other)
        });
        (log, Gate(Mutex::new(permits)), begun)
    }

    /// Waits until `n` syncs have begun.
    pub async fn begun(count: &AtomicUsize, n: usize) {
        let all = async {
            while count.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let all = tokio::time::timeout(Duration::from_secs(5), all).await;
        all.unwrap_or_else(|_| panic!("{n} syncs never began"));
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    /// A commit made while a sync runs is not covered by it: it waits for the next one,
    /// which covers every commit made meanwhile.
    #[tokio::test]
    async fn a_commit_is_durable_only_after_a_sync_that_began_after_it() {
        let (log, gate, count) = gated();
        let first = tokio::spawn(log.committed().wait());
        begun(&count, 1).await;
        let second = tokio::spawn(log.committed().wait());
        let third = tokio::spawn(log.committed().wait());
        settle().await;
        assert_eq!(count.load(Ordering::SeqCst), 1, "one sync at a time");

        gate.open(1);
        first.await.unwrap().unwrap();
        begun(&count, 2).await;
        settle().await;
        assert!(!second.is_finished(), "the first sync began before the second commit");
        gate.open(1);
        second.await.unwrap().unwrap();
        third.await.unwrap().unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2, "one sync for both later commits");
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

    /// A waiter that gives up mid-sync does not hold up the next.
    #[tokio::test]
    async fn a_cancelled_waiter_does_not_stall_the_next() {
        let (log, gate, count) = gated();
        let cancelled = tokio::spawn(log.committed().wait());
        begun(&count, 1).await;
        cancelled.abort();
        gate.open(2);
        let next = tokio::time::timeout(Duration::from_secs(5), log.committed().wait());
        next.await.expect("the next commit's sync ran").unwrap();
    }

    /// One handle for every sync of the same file (it hears of write-back failures since
    /// it was opened), a new one for a new file.
    #[test]
    fn the_log_file_is_opened_once_and_again_only_when_replaced() {
        use std::os::unix::fs::MetadataExt;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("book.db-wal");
        let mut log = LogFile {
            path: path.clone(),
            open: None,
        };
        let held = |log: &LogFile| log.open.as_ref().map(|f| f.metadata().unwrap());
        log.sync().unwrap();
        assert!(log.open.is_none(), "no log, nothing opened");
        std::fs::write(&path, b"frames").unwrap();
        log.sync().unwrap();
        let first = held(&log).unwrap();
        log.sync().unwrap();
        let again = held(&log).unwrap();
        assert_eq!((again.ino(), again.nlink()), (first.ino(), 1), "the same handle");

        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"a new log").unwrap();
        log.sync().unwrap();
        let reopened = held(&log).unwrap();
        assert_eq!(reopened.nlink(), 1, "not the deleted file");
        assert_eq!(reopened.ino(), std::fs::metadata(&path).unwrap().ino());
        assert_eq!(reopened.len(), 9, "the new file");
    }

    #[tokio::test]
    async fn a_missing_log_has_nothing_to_sync() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSync::of_database(&dir.path().join("book.db")).unwrap();
        assert_eq!(log.file(), Some(dir.path().join("book.db-wal").as_path()));
        log.committed().wait().await.unwrap();
        std::fs::write(dir.path().join("book.db-wal"), b"frames").unwrap();
        log.committed().wait().await.unwrap();
    }
}
