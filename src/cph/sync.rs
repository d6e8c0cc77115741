//! `serve` keeps the book's phone table in step with the control plane: names, servers and
//! statuses, so allocation skips phones the control plane does not report as running.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::{CphClient, PhoneFilter};
use crate::clock::Clock;
use crate::store::{ControlPlanePhone, Store};

pub struct PhoneSync(JoinHandle<()>);

impl PhoneSync {
    /// Syncs at once, then every `every`.
    pub fn spawn(
        client: Arc<CphClient>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        every: Duration,
    ) -> Self {
        PhoneSync(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = sync_once(&client, &*store, &*clock).await {
                    tracing::warn!(error = %crate::telemetry::ErrorChain(&*error), "phone sync failed; will retry");
                }
            }
        }))
    }

    /// The sync writes in one transaction, so stopping mid-way loses nothing.
    pub fn stop(self) {
        self.0.abort();
    }
}

async fn sync_once(
    client: &CphClient,
    store: &dyn Store,
    clock: &dyn Clock,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let phones: Vec<ControlPlanePhone> = client
        .list_phones(&PhoneFilter::default())
        .await?
        .into_iter()
        .map(|p| ControlPlanePhone {
            phone_id: p.phone_id,
            phone_name: p.phone_name,
            server_id: p.server_id,
            status: p.status,
        })
        .collect();
    store.sync_phones(&phones, clock.now()).await?;
    tracing::debug!(
        phones = phones.len(),
        "phones synced from the control plane"
    );
    Ok(())
}
