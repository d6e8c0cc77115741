//! Group commit for the writes that must be durable before the answer: enter/quit events,
//! the consumption of sign-check tickets, and mints. Each request hands its write to a writer
//! task and waits for the commit; while a transaction is committing, the next requests
//! queue up and go into the next transaction together. Under load one fsync covers hundreds
//! of writes, and every 200 still means "committed". Which writers there are, and which
//! write goes to which, is `writers.rs`'s.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::{Durable, StoreError, within};

/// One kind of write that is committed in groups.
#[async_trait]
pub trait Commit: Send + Sync + 'static {
    type Job: Send + 'static;
    type Done: Send + 'static;
    /// Names a failed batch in the log.
    const WHAT: &'static str;

    /// Names one job's write in its span (`op` of "store write"): what the batch is, unless
    /// a batch holds several kinds of job.
    fn what(_job: &Self::Job) -> &'static str {
        Self::WHAT
    }

    /// Commits `jobs` in one transaction, all or none: one result per job, in order, and
    /// when the commit is durable. The jobs are answered then, while the next round is
    /// already being written.
    async fn commit(&self, jobs: &[Self::Job]) -> Result<(Vec<Self::Done>, Durable), StoreError>;
}

type Reply<T> = oneshot::Sender<Result<T, Arc<StoreError>>>;

/// A job waiting for its writer: what to write, where to answer, since when it waits, and
/// the series that count it.
struct Queued<C: Commit> {
    job: C::Job,
    reply: Reply<C::Done>,
    since: Instant,
    meter: QueueMeter,
}

/// How a writer batches and how long its jobs may take.
#[derive(Debug, Clone, Copy)]
pub struct WriterLimits {
    /// Jobs per transaction at most.
    pub max_batch: usize,
    /// A commit taking longer fails its batch (see [`within`]).
    pub commit: Duration,
    /// A job queued longer is refused unwritten (`database.write_queue_timeout_ms`).
    pub queued: Duration,
}

/// What the writers report of their queues for one kind of write (`cphub_write_queue_jobs`
/// and `cphub_write_queue_dropped_total`, one kind's series of each): a writer takes jobs of
/// several kinds, and each job carries its kind's meter.
#[derive(Clone)]
pub struct QueueMeter {
    /// Jobs submitted and not yet taken into a batch.
    pub waiting: IntGauge,
    /// Jobs not written because their requester had stopped waiting.
    pub requester_gone: IntCounter,
    /// Jobs refused unwritten because they had waited longer than [`WriterLimits::queued`].
    pub queued_too_long: IntCounter,
}

pub struct GroupCommit<C: Commit> {
    queue: mpsc::Sender<Queued<C>>,
}

impl<C: Commit> Clone for GroupCommit<C> {
    fn clone(&self) -> Self {
        GroupCommit {
            queue: self.queue.clone(),
        }
    }
}

impl<C: Commit> GroupCommit<C> {
    /// Starts the writer task. It ends once every handle has been dropped and the queue is
    /// drained.
    pub fn spawn(committer: C, limits: WriterLimits) -> (Self, JoinHandle<()>) {
        let limits = WriterLimits {
            max_batch: limits.max_batch.max(1),
            ..limits
        };
        let (queue, rx) = mpsc::channel(limits.max_batch * 4);
        let task = tokio::spawn(run(committer, rx, limits));
        (GroupCommit { queue }, task)
    }

    /// How many jobs wait for the writer to take them into a round (those of the round it
    /// commits are not counted).
    pub fn waiting(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// Writes `job` and returns once it is committed (or the commit failed, or the job
    /// waited too long to be tried), counting it in `meter`. The span is the request's view
    /// of its write: the wait in the queue and the batch's commit.
    pub async fn submit(&self, job: C::Job, meter: &QueueMeter) -> Result<C::Done, Arc<StoreError>> {
        let span = tracing::info_span!("store write", op = C::what(&job));
        self.queue_and_wait(job, meter).instrument(span).await
    }

    async fn queue_and_wait(
        &self,
        job: C::Job,
        meter: &QueueMeter,
    ) -> Result<C::Done, Arc<StoreError>> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || Arc::new(StoreError::WriterStopped);
        // Stamped before the wait for room: a full channel is part of the wait in the queue.
        let since = Instant::now();
        let permit = self.queue.reserve().await.map_err(|_| stopped())?;
        // Counted once the job is certain to be queued (a request dropped while waiting for
        // room queues nothing), and before the writer can take it out.
        meter.waiting.inc();
        let meter = meter.clone();
        permit.send(Queued {
            job,
            reply,
            since,
            meter,
        });
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run<C: Commit>(committer: C, mut rx: mpsc::Receiver<Queued<C>>, limits: WriterLimits) {
    let mut batch = Vec::with_capacity(limits.max_batch);
    while rx.recv_many(&mut batch, limits.max_batch).await > 0 {
        let (jobs, replies) = still_awaited(&mut batch, limits.queued);
        if jobs.is_empty() {
            continue;
        }
        match within(limits.commit, committer.commit(&jobs)).await {
            Ok((done, durable)) => answer_when_durable::<C>(replies, done, durable, limits.commit),
            // The database refused something in the batch, and rolled all of it back. One
            // job's fault must not fail the others: commit them one at a time, in order, so
            // only the culprit is refused. (When the database is away, every one would fail
            // the same way: no point.)
            Err(error) if !error.is_unavailable() && jobs.len() > 1 => {
                tracing::warn!(
                    error = %crate::telemetry::ErrorChain(&error),
                    size = jobs.len(),
                    "{} batch refused; committing its jobs one by one",
                    C::WHAT
                );
                for (i, reply) in replies.into_iter().enumerate() {
                    let job = std::slice::from_ref(&jobs[i]);
                    match within(limits.commit, committer.commit(job)).await {
                        Ok((done, durable)) => {
                            answer_when_durable::<C>(vec![reply], done, durable, limits.commit)
                        }
                        Err(error) => fail(C::WHAT, vec![reply], error),
                    }
                }
            }
            Err(error) => fail(C::WHAT, replies, error),
        }
    }
}

/// Takes out of `batch` the jobs still worth writing. Under overload a backlog outlives
/// the clients' timeouts; committing it would be work nobody waits for, and every later
/// request would wait behind it. So a job whose requester has gone (its reply channel is
/// closed: the request was dropped) is skipped, and one that waited longer than `bound` is
/// answered [`StoreError::QueuedTooLong`] (a 503: send it again) — both unwritten, so a
/// redelivery later is decided as if they had never come.
fn still_awaited<C: Commit>(
    batch: &mut Vec<Queued<C>>,
    bound: Duration,
) -> (Vec<C::Job>, Vec<Reply<C::Done>>) {
    let (mut jobs, mut replies) = (Vec::with_capacity(batch.len()), Vec::new());
    let mut too_long = Vec::new();
    // One reading of the clock for the batch: `since.elapsed()` read it once per job.
    let now = Instant::now();
    for queued in batch.drain(..) {
        queued.meter.waiting.dec();
        if queued.reply.is_closed() {
            queued.meter.requester_gone.inc();
        } else if now.saturating_duration_since(queued.since) > bound {
            queued.meter.queued_too_long.inc();
            too_long.push(queued.reply);
        } else {
            jobs.push(queued.job);
            replies.push(queued.reply);
        }
    }
    if !too_long.is_empty() {
        tracing::warn!(
            size = too_long.len(),
            "{} jobs waited in the queue longer than {bound:?}: refused unwritten",
            C::WHAT
        );
        let error = Arc::new(StoreError::QueuedTooLong(bound));
        for reply in too_long {
            let _ = reply.send(Err(Arc::clone(&error)));
        }
    }
    (jobs, replies)
}

/// Answers a committed round once it is durable, within the commit's time limit. Waited for
/// beside the writer, which goes on with the next round meanwhile: a later round's commit
/// is durable only after this one's (`log_sync`), so no answer rests on a write that could
/// still be lost.
fn answer_when_durable<C: Commit>(
    replies: Vec<Reply<C::Done>>,
    done: Vec<C::Done>,
    durable: Durable,
    limit: Duration,
) {
    if !durable.is_pending() {
        return answer(replies, done);
    }
    tokio::spawn(async move {
        match within(limit, durable.wait()).await {
            Ok(()) => answer(replies, done),
            Err(error) => fail(C::WHAT, replies, error),
        }
    });
}

fn answer<T>(replies: Vec<Reply<T>>, done: Vec<T>) {
    for (reply, done) in replies.into_iter().zip(done) {
        // The requester may have gone away while the batch committed (client timeout): the
        // write is committed all the same, and a retry will be recognised as such.
        let _ = reply.send(Ok(done));
    }
}

fn fail<T>(what: &str, replies: Vec<Reply<T>>, error: StoreError) {
    // A round whose log sync failed or timed out was committed, only not (yet) durable.
    let outcome = match error {
        StoreError::LogNotSynced(_) | StoreError::TimedOut(_) => "not known to be durable",
        _ => "not committed",
    };
    let error = Arc::new(error);
    tracing::error!(
        error = %crate::telemetry::ErrorChain(&*error),
        size = replies.len(),
        "{what} {outcome}"
    );
    for reply in replies {
        let _ = reply.send(Err(Arc::clone(&error)));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Commits numbers, refusing any batch that holds a negative one (as a database refuses
    /// a batch with one row it cannot store); records each call and what it committed.
    #[derive(Clone, Default)]
    struct Numbers {
        calls: Arc<Mutex<Vec<Vec<i64>>>>,
        committed: Arc<Mutex<Vec<i64>>>,
        unavailable: bool,
        /// Commits durable once this log is synced (SQLite's); durable at once without.
        log: Option<crate::store::log_sync::LogSync>,
    }

    #[async_trait]
    impl Commit for Numbers {
        type Job = i64;
        type Done = i64;
        const WHAT: &'static str = "number batch";

        async fn commit(&self, jobs: &[i64]) -> Result<(Vec<i64>, Durable), StoreError> {
            self.calls.lock().unwrap().push(jobs.to_vec());
            if self.unavailable {
                return Err(StoreError::from(sqlx::Error::PoolTimedOut));
            }
            if jobs.iter().any(|n| *n < 0) {
                return Err(StoreError::Corrupt("negative".into()));
            }
            self.committed.lock().unwrap().extend_from_slice(jobs);
            let durable = self.log.as_ref().map_or_else(Durable::now, |log| log.committed());
            Ok((jobs.to_vec(), durable))
        }
    }

    fn meter() -> QueueMeter {
        let counter = |name| IntCounter::new(name, name).unwrap();
        QueueMeter {
            waiting: IntGauge::new("waiting", "waiting").unwrap(),
            requester_gone: counter("gone"),
            queued_too_long: counter("too_long"),
        }
    }

    fn spawn(numbers: &Numbers, meter: &QueueMeter) -> (Metered, JoinHandle<()>) {
        spawn_batching(numbers, meter, 64)
    }

    /// A writer of batches of `max_batch`, whose channel holds four batches.
    fn spawn_batching(
        numbers: &Numbers,
        meter: &QueueMeter,
        max_batch: usize,
    ) -> (Metered, JoinHandle<()>) {
        let limits = WriterLimits {
            max_batch,
            commit: Duration::from_secs(5),
            queued: Duration::from_secs(60),
        };
        let (writer, task) = GroupCommit::spawn(numbers.clone(), limits);
        let meter = meter.clone();
        (Metered(writer, meter), task)
    }

    /// A writer whose every job counts in one meter.
    struct Metered(GroupCommit<Numbers>, QueueMeter);

    impl Metered {
        async fn submit(&self, n: i64) -> Result<i64, Arc<StoreError>> {
            self.0.submit(n, &self.1).await
        }
    }

    /// Submits `jobs` at once (all queued before the writer wakes: one batch); whether each
    /// was committed.
    async fn submit_together(numbers: &Numbers, jobs: Vec<i64>) -> Vec<bool> {
        let (writer, task) = spawn(numbers, &meter());
        let outcomes = futures_util::future::join_all(jobs.into_iter().map(|n| writer.submit(n)));
        let outcomes = outcomes.await.iter().map(Result::is_ok).collect();
        drop(writer);
        task.await.unwrap();
        outcomes
    }

    /// A job whose requester stopped waiting before the writer took it (the request was
    /// dropped: a client timeout) is not committed; the jobs around it are.
    #[tokio::test]
    async fn a_job_nobody_waits_for_any_more_is_skipped_unwritten() {
        let (numbers, meter) = (Numbers::default(), meter());
        let (writer, task) = spawn(&numbers, &meter);
        // Each submit is polled once: queued, its requester waiting. The writer task has
        // not run yet (this test's runtime has one thread), so all three wait together.
        let mut waiting: Vec<_> = [1, 2, 3]
            .into_iter()
            .map(|n| Box::pin(writer.submit(n)))
            .collect();
        for submit in &mut waiting {
            let polled = futures_util::future::poll_immediate(submit).await;
            assert!(polled.is_none(), "answered before the writer ran");
        }
        assert_eq!(meter.waiting.get(), 3);
        drop(waiting.remove(1));

        let outcomes = futures_util::future::join_all(waiting).await;
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(*numbers.committed.lock().unwrap(), [1, 3]);
        assert_eq!(meter.requester_gone.get(), 1);
        assert_eq!((meter.waiting.get(), meter.queued_too_long.get()), (0, 0));
        drop(writer);
        task.await.unwrap();
    }

    /// A request dropped while it waits for room in a full channel queued nothing: it is
    /// not counted as waiting, and nothing of it is written.
    #[tokio::test]
    async fn a_request_dropped_before_its_job_found_room_queues_nothing() {
        let (numbers, meter) = (Numbers::default(), meter());
        let (writer, task) = spawn_batching(&numbers, &meter, 1);
        let mut queued: Vec<_> = (1..=5).map(|n| Box::pin(writer.submit(n))).collect();
        for submit in &mut queued {
            let polled = futures_util::future::poll_immediate(submit).await;
            assert!(polled.is_none(), "answered before the writer ran");
        }
        assert_eq!(meter.waiting.get(), 4, "the channel holds four; the fifth waits");
        drop(queued.pop());

        futures_util::future::join_all(queued).await;
        assert_eq!(*numbers.committed.lock().unwrap(), [1, 2, 3, 4]);
        assert_eq!(meter.waiting.get(), 0);
        drop(writer);
        task.await.unwrap();
    }

    /// A committed round is answered once its log sync ends, and the writer commits the
    /// next round meanwhile: the disk's wait is no longer the writer's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_round_commits_while_the_last_waits_for_its_sync() {
        let (log, gate, syncs) = crate::store::log_sync::tests::gated();
        let numbers = Numbers {
            log: Some(log),
            ..Numbers::default()
        };
        let (writer, task) = spawn(&numbers, &meter());
        let writer = Arc::new(writer);
        let first = tokio::spawn({
            let writer = Arc::clone(&writer);
            async move { writer.submit(1).await }
        });
        let committed = |n: usize| {
            let numbers = numbers.clone();
            async move {
                while numbers.committed.lock().unwrap().len() < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        committed(1).await;
        // The first round's answer waits for a sync of the log.
        crate::store::log_sync::tests::begun(&syncs, 1).await;
        let second = tokio::spawn({
            let writer = Arc::clone(&writer);
            async move { writer.submit(2).await }
        });
        let next_round = tokio::time::timeout(Duration::from_secs(5), committed(2));
        next_round.await.expect("the second round committed while the first waited");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!first.is_finished(), "answered before its commit was synced");

        gate.open(1);
        assert_eq!(first.await.unwrap().unwrap(), 1);
        assert!(!second.is_finished(), "the first sync began before the second commit");
        gate.open(1);
        assert_eq!(second.await.unwrap().unwrap(), 2);
        drop(writer);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn one_refused_job_fails_alone_and_the_rest_commit_in_order() {
        let numbers = Numbers::default();
        let outcomes = submit_together(&numbers, vec![1, 2, -3, 4, 5]).await;
        assert_eq!(outcomes, [true, true, false, true, true]);
        assert_eq!(*numbers.committed.lock().unwrap(), [1, 2, 4, 5]);
        let calls = numbers.calls.lock().unwrap();
        assert_eq!(calls[0], [1, 2, -3, 4, 5], "first tried as one batch");
        assert_eq!(calls.len(), 6);
    }

    #[tokio::test]
    async fn an_unavailable_database_fails_the_batch_without_one_by_one_retries() {
        let numbers = Numbers {
            unavailable: true,
            ..Numbers::default()
        };
        let outcomes = submit_together(&numbers, vec![1, 2, 3]).await;
        assert_eq!(outcomes, [false, false, false]);
        assert_eq!(numbers.calls.lock().unwrap().len(), 1);
    }
}
