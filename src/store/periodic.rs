//! A store's own chore, repeated on a period for as long as the store lives: SQLite's
//! checkpoint, PostgreSQL's analysis of grown tables. A failed round is logged with its
//! cause chain and tried again at the next one.

use std::error::Error;
use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;

/// The running chore; aborted when dropped, with the store that owns it.
pub(super) struct Periodic(Option<JoinHandle<()>>);

impl Periodic {
    /// Runs `round` every `every`, the first after `first_after`; nothing with a zero
    /// `every`. `failed` is the log line of a failed round.
    pub(super) fn start<F, Fut, E>(
        every: Duration,
        first_after: Duration,
        failed: &'static str,
        mut round: F,
    ) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Error + 'static,
    {
        if every.is_zero() {
            return Periodic(None);
        }
        Periodic(Some(tokio::spawn(async move {
            let first = tokio::time::Instant::now() + first_after;
            let mut ticks = tokio::time::interval_at(first, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = round().await {
                    tracing::warn!(error = %crate::telemetry::ErrorChain(&error), "{failed}");
                }
            }
        })))
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}
