//! Group commit for the writes that must be durable before the answer: enter/quit events
//! and the consumption of sign-check tickets. Each request hands its write to one writer
//! task and waits for the commit; while a transaction is committing, the next requests
//! queue up and go into the next transaction together. Under load one fsync covers hundreds
//! of writes, and every 200 still means "committed".

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Applied, ApplyRules, ReceivedEvent, Store, StoreError, Verification, within};

/// One kind of write that is committed in groups.
#[async_trait]
pub trait Commit: Send + Sync + 'static {
    type Job: Send + 'static;
    type Done: Send + 'static;
    /// Names a failed batch in the log.
    const WHAT: &'static str;

    /// Commits `jobs` in one transaction, all or none: one result per job, in order.
    async fn commit(&self, jobs: &[Self::Job]) -> Result<Vec<Self::Done>, StoreError>;
}

type Reply<T> = oneshot::Sender<Result<T, Arc<StoreError>>>;

pub struct GroupCommit<C: Commit> {
    queue: mpsc::Sender<(C::Job, Reply<C::Done>)>,
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
    /// drained. A commit taking longer than `limit` fails its batch (see [`within`]).
    pub fn spawn(committer: C, max_batch: usize, limit: Duration) -> (Self, JoinHandle<()>) {
        let max_batch = max_batch.max(1);
        let (queue, rx) = mpsc::channel(max_batch * 4);
        let task = tokio::spawn(run(committer, rx, max_batch, limit));
        (GroupCommit { queue }, task)
    }

    /// Writes `job` and returns once it is committed (or the commit failed).
    pub async fn submit(&self, job: C::Job) -> Result<C::Done, Arc<StoreError>> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || Arc::new(StoreError::WriterStopped);
        self.queue.send((job, reply)).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run<C: Commit>(
    committer: C,
    mut rx: mpsc::Receiver<(C::Job, Reply<C::Done>)>,
    max_batch: usize,
    limit: Duration,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let (jobs, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        match within(limit, committer.commit(&jobs)).await {
            Ok(done) => {
                for (reply, done) in replies.into_iter().zip(done) {
                    // The requester may have gone away (client timeout): the write is
                    // committed all the same, and a retry will be recognised as such.
                    let _ = reply.send(Ok(done));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                tracing::error!(
                    error = %crate::telemetry::ErrorChain(&*error),
                    size = jobs.len(),
                    "{} not committed",
                    C::WHAT
                );
                for reply in replies {
                    let _ = reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }
}

/// Enter/quit events, applied in arrival order.
pub struct ApplyEvents {
    pub store: Arc<dyn Store>,
    pub rules: ApplyRules,
}

#[async_trait]
impl Commit for ApplyEvents {
    type Job = ReceivedEvent;
    type Done = Applied;
    const WHAT: &'static str = "event batch";

    async fn commit(&self, events: &[ReceivedEvent]) -> Result<Vec<Applied>, StoreError> {
        self.store.apply_events(events, self.rules).await
    }
}

pub type EventWriter = GroupCommit<ApplyEvents>;

/// First successful sign checks: each consumes its ticket (true) unless another sign check
/// of the same session consumed it first (false), possibly earlier in the same batch.
pub struct ConsumeTickets(pub Arc<dyn Store>);

#[async_trait]
impl Commit for ConsumeTickets {
    type Job = Verification;
    type Done = bool;
    const WHAT: &'static str = "sign-check batch";

    async fn commit(&self, verifications: &[Verification]) -> Result<Vec<bool>, StoreError> {
        self.0.mark_verified(verifications).await
    }
}

pub type TicketWriter = GroupCommit<ConsumeTickets>;
