//! Phones held for minted sessions that never got their sign check or enter are released in
//! the background, so they show up idle (and the session `expired`) without waiting for the
//! next mint, which also releases them on the spot.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::store::Store;

pub struct HoldSweeper(JoinHandle<()>);

impl HoldSweeper {
    pub fn spawn(store: Arc<dyn Store>, clock: Arc<dyn Clock>, every: Duration) -> Self {
        HoldSweeper(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match store.release_lapsed_holds(clock.now()).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(sessions = n, "released phones held for expired sessions")
                    }
                    Err(error) => tracing::warn!(
                        error = %crate::telemetry::ErrorChain(&error),
                        "releasing lapsed holds failed; will retry"
                    ),
                }
            }
        }))
    }

    /// Each pass is one transaction, so stopping mid-pass loses nothing.
    pub fn stop(self) {
        self.0.abort();
    }
}
