//! Group commit for enter/quit events. Each request hands its event to one writer task and
//! waits for the commit; while a transaction is committing, the next requests queue up and go
//! into the next transaction together. Under load one fsync covers hundreds of events, and
//! every 200 still means "committed".

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Applied, ApplyRules, ReceivedEvent, Store, StoreError};

type Reply = oneshot::Sender<Result<Applied, Arc<StoreError>>>;

#[derive(Clone)]
pub struct EventWriter {
    queue: mpsc::Sender<(ReceivedEvent, Reply)>,
}

impl EventWriter {
    /// Starts the writer task. It ends once every `EventWriter` clone has been dropped and
    /// the queue is drained.
    pub fn spawn(
        store: Arc<dyn Store>,
        max_batch: usize,
        rules: ApplyRules,
    ) -> (EventWriter, JoinHandle<()>) {
        let max_batch = max_batch.max(1);
        let (queue, rx) = mpsc::channel(max_batch * 4);
        let task = tokio::spawn(run(store, rx, max_batch, rules));
        (EventWriter { queue }, task)
    }

    /// Applies `event` and returns once it is committed (or the commit failed).
    pub async fn submit(&self, event: ReceivedEvent) -> Result<Applied, Arc<StoreError>> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || Arc::new(StoreError::WriterStopped);
        self.queue
            .send((event, reply))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<(ReceivedEvent, Reply)>,
    max_batch: usize,
    rules: ApplyRules,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let (events, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        match store.apply_events(&events, rules).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The requester may have gone away (client timeout): the event is
                    // committed all the same, and a retry will be recognised as a duplicate.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                tracing::error!(
                    error = %crate::telemetry::ErrorChain(&*error),
                    events = events.len(),
                    "event batch not committed"
                );
                for reply in replies {
                    let _ = reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }
}
