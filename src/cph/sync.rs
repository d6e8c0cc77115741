//! `serve` keeps the book's phone table in step with the control plane: names, servers and
//! statuses, so allocation skips phones the control plane does not report as running; where
//! players connect to each phone; and which applications are deployed on which phones, so a
//! mint for a game lands on a phone that has it.
//!
//! Which apps are where: chapter 5.1.2 (one app's phones) rather than 5.3.6 (one phone's
//! apps). Both page by at most 100 records, but 5.3.6 needs at least one call per phone —
//! 100,000 calls per sync for a 100k fleet — while 5.1.2 needs one call per 100 phones of
//! each app, after 5.1.3 lists the apps: with every phone carrying one to three games,
//! 1,000 to 3,000 calls plus one per 100 apps.
//!
//! Where to connect: `access_infos` is only in a phone's detail (4.3.2), not in the list
//! (4.3.1), so it costs a call per phone. It is read for phones the book has none for, and
//! again when the list's `update_time` moves; at most `cph.detail_reads_per_sync` a sync.
//! The same read keeps the phone's properties (`property`), which a reset falls back to
//! when it cannot read the phone right before (chapter 4.3.5 restores factory settings).
//!
//! Which phones are gone: a phone left out of two complete listings that did not overlap
//! in time (its server released, or the phone deleted, outside cphub) is marked
//! `unlisted`, and cphub stops allocating and recovering it; listed again, it is back
//! (store, migration 0033). Every replica syncs; a listing of one counts as any other's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use tokio::task::JoinHandle;

use super::{CphClient, Phone, PhoneDetail, PhoneFilter};
use crate::clock::Clock;
use crate::domain::{AppId, PhoneId};
use crate::store::{ControlPlanePhone, PhoneApp, Store};

/// Phone details read at once: enough to finish a sync's reads well within its interval,
/// few enough not to look like a burst to the API gateway.
const DETAIL_READS_IN_FLIGHT: usize = 8;

type SyncError = Box<dyn std::error::Error + Send + Sync>;

pub struct PhoneSync(JoinHandle<()>);

/// What a sync reads beyond the phone list.
#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    pub detail_reads_per_sync: usize,
}

impl PhoneSync {
    /// Syncs at once, then every `every`.
    pub fn spawn(
        client: Arc<CphClient>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        every: Duration,
        limits: SyncLimits,
    ) -> Self {
        PhoneSync(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(error) = sync_once(&client, &*store, &*clock, limits).await {
                    tracing::warn!(error = %crate::telemetry::ErrorChain(&*error), "phone sync failed; will retry");
                }
            }
        }))
    }

    /// Each write is one transaction, so stopping mid-way loses nothing.
    pub fn stop(self) {
        self.0.abort();
    }
}

async fn sync_once(
    client: &CphClient,
    store: &dyn Store,
    clock: &dyn Clock,
    limits: SyncLimits,
) -> Result<(), SyncError> {
    let began = clock.now();
    let listed = client.list_phones(&PhoneFilter::default()).await?;
    if listed.is_empty() {
        tracing::warn!("the control plane lists no phone: is `cph.project_id` the fleet's project? Phones it listed before are kept as they were");
    }
    let phones = with_access(client, store, listed, limits).await?;
    store.sync_phones(&phones, began, clock.now()).await?;
    let apps = deployed_apps(client).await?;
    store.sync_phone_apps(&apps, clock.now()).await?;
    tracing::debug!(
        phones = phones.len(),
        deployments = apps.len(),
        "phones synced from the control plane"
    );
    Ok(())
}

/// The listed phones, with access information read for those that need it.
async fn with_access(
    client: &CphClient,
    store: &dyn Store,
    listed: Vec<Phone>,
    limits: SyncLimits,
) -> Result<Vec<ControlPlanePhone>, SyncError> {
    let read: HashMap<String, Option<String>> = store.access_read().await?.into_iter().collect();
    let stale = |p: &Phone| read.get(&p.phone_id) != Some(&p.update_time);
    let mut budget = limits.detail_reads_per_sync;
    let phones = listed.into_iter().map(|phone| {
        let wanted = budget > 0 && stale(&phone);
        budget -= usize::from(wanted);
        (phone, wanted)
    });
    let phones = stream::iter(phones)
        .map(|(phone, wanted)| async move {
            let detail = if wanted {
                detail(client, &phone.phone_id).await
            } else {
                None
            };
            let (access, property) = match detail {
                Some(detail) => (Some(detail.access()), detail.property),
                None => (None, None),
            };
            ControlPlanePhone {
                access,
                property,
                phone_id: phone.phone_id,
                phone_name: phone.phone_name,
                server_id: phone.server_id,
                status: phone.status,
                update_time: phone.update_time,
            }
        })
        .buffered(DETAIL_READS_IN_FLIGHT)
        .collect()
        .await;
    Ok(phones)
}

/// One phone's detail (4.3.2): its access information, and its properties, which a reset
/// falls back to when it cannot read the phone itself. A failed read is left for the next
/// sync.
async fn detail(client: &CphClient, phone_id: &str) -> Option<PhoneDetail> {
    match client.phone(phone_id).await {
        Ok(detail) => Some(detail),
        Err(error) => {
            tracing::warn!(phone_id, error = %crate::telemetry::ErrorChain(&error), "phone detail not read; access information and properties kept as they were");
            None
        }
    }
}

/// Every app's phones (5.1.3, then 5.1.2 per app). Ids cphub cannot take (too long, odd
/// characters) are left out with a warning: no mint could ask for them.
async fn deployed_apps(client: &CphClient) -> Result<Vec<PhoneApp>, SyncError> {
    let mut deployed = Vec::new();
    for app in client.list_apps().await? {
        let Ok(app_id) = AppId::parse("app_id", app.app_id.clone()) else {
            tracing::warn!(app_id = %app.app_id, "app id cphub cannot take; its phones are not matched");
            continue;
        };
        for phone in client.app_phones(app_id.as_str()).await? {
            let Ok(phone_id) = PhoneId::parse("phone_id", phone.phone_id) else {
                continue;
            };
            deployed.push(PhoneApp {
                phone_id,
                app_id: app_id.clone(),
                app_version_id: phone.app_version_id,
                version_code: phone.version_code,
                version_name: phone.version_name,
            });
        }
    }
    Ok(deployed)
}
