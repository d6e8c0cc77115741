//! Holding a role's lease across ticks, for the loops that act on one replica only.

use crate::store::{Lease, Role, Store};
use crate::telemetry::ErrorChain;

/// Whether this replica holds `role`'s lease, asking for it when it does not (`what` names
/// the role in the log).
pub(super) async fn leads(
    store: &dyn Store,
    role: Role,
    lease: &mut Option<Box<dyn Lease>>,
    what: &str,
) -> bool {
    if let Some(held) = lease.as_mut() {
        if held.held().await {
            return true;
        }
        tracing::warn!("{what} lease lost");
        *lease = None;
    }
    *lease = store.try_lead(role).await.unwrap_or_else(|error| {
        tracing::warn!(error = %ErrorChain(&error), "{what} cannot ask for the lease");
        None
    });
    lease.is_some()
}
