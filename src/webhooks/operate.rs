//! What an operator does with the deliveries — list, show, retry, replay — once, for both
//! `cphub webhooks` and `/api/v1/webhooks` (docs/webhooks.md "Operating"). Every answer is
//! read from the database; nothing here carries an endpoint's URL or secrets.

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::{WebhookEndpoint, WebhookSettings};
use crate::domain::{UtcTime, WebhookEventId};
use crate::store::{AttemptView, DeliveryFilter, DeliveryView, EndpointFilter, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum OperateError {
    #[error("no webhook endpoint named {0:?} is configured")]
    UnknownEndpoint(String),
    #[error("no delivery of {event_id} to {endpoint}")]
    UnknownDelivery {
        endpoint: String,
        event_id: WebhookEventId,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One delivery with every attempt, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryDetail {
    pub delivery: DeliveryView,
    pub attempts: Vec<AttemptView>,
}

/// The operator's view of the deliveries of the configured endpoints.
pub struct Deliveries<'a> {
    store: &'a dyn Store,
    settings: &'a WebhookSettings,
}

impl<'a> Deliveries<'a> {
    pub fn new(store: &'a dyn Store, settings: &'a WebhookSettings) -> Self {
        Deliveries { store, settings }
    }

    /// A replay needs the endpoint's configuration (its `events` filter), and makes work
    /// only a configured endpoint's worker does.
    fn configured(&self, name: &str) -> Result<&'a WebhookEndpoint, OperateError> {
        let found = self.settings.endpoints.iter().find(|e| e.name == name);
        found.ok_or_else(|| OperateError::UnknownEndpoint(name.to_owned()))
    }

    /// Newest first. An endpoint filter must name an endpoint that is configured or has
    /// deliveries in the book (one since removed from the configuration keeps its history).
    pub async fn list(&self, filter: &DeliveryFilter) -> Result<Vec<DeliveryView>, OperateError> {
        if let Some(name) = &filter.endpoint {
            plain(name)?;
        }
        let found = self.store.webhook_deliveries(filter).await?;
        if let Some(name) = &filter.endpoint
            && found.is_empty()
            && self.configured(name).is_err()
            && !self.in_book(name).await?
        {
            return Err(OperateError::UnknownEndpoint(name.clone()));
        }
        Ok(found)
    }

    async fn in_book(&self, name: &str) -> Result<bool, OperateError> {
        let any = DeliveryFilter {
            endpoint: Some(name.to_owned()),
            state: None,
            before: None,
            limit: 1,
        };
        Ok(!self.store.webhook_deliveries(&any).await?.is_empty())
    }

    pub async fn show(
        &self,
        endpoint: &str,
        event_id: &WebhookEventId,
    ) -> Result<DeliveryDetail, OperateError> {
        plain(endpoint)?;
        let found = self.store.webhook_delivery(endpoint, event_id).await?;
        let (delivery, attempts) = found.ok_or_else(|| unknown(endpoint, event_id))?;
        Ok(DeliveryDetail { delivery, attempts })
    }

    /// Pending again, due `now`, with a fresh schedule; answers the delivery as it now is.
    /// The delivery row exists only because its endpoint was configured when the event was
    /// fanned out, so the row is what is checked, not today's configuration.
    pub async fn retry(
        &self,
        endpoint: &str,
        event_id: &WebhookEventId,
        now: UtcTime,
    ) -> Result<DeliveryDetail, OperateError> {
        plain(endpoint)?;
        let store = self.store;
        if !store
            .retry_webhook_delivery(endpoint, event_id, now)
            .await?
        {
            return Err(unknown(endpoint, event_id));
        }
        self.show(endpoint, event_id).await
    }

    /// Every event of the endpoint's types that happened at or after `since`, sent again
    /// under the same ids; how many deliveries are pending for it.
    pub async fn replay(
        &self,
        endpoint: &str,
        since: UtcTime,
        now: UtcTime,
    ) -> Result<u64, OperateError> {
        let configured = self.configured(endpoint)?;
        let filter = EndpointFilter {
            name: configured.name.clone(),
            events: configured.events.clone(),
        };
        Ok(self.store.replay_webhooks(&filter, since, now).await?)
    }
}

/// A name no endpoint can have (config/webhooks.rs) is unknown without asking the
/// database, which must not see what it cannot store (PostgreSQL refuses NUL in text).
fn plain(name: &str) -> Result<(), OperateError> {
    match WebhookEndpoint::plain_name(name) {
        true => Ok(()),
        false => Err(OperateError::UnknownEndpoint(name.to_owned())),
    }
}

fn unknown(endpoint: &str, event_id: &WebhookEventId) -> OperateError {
    OperateError::UnknownDelivery {
        endpoint: endpoint.to_owned(),
        event_id: event_id.clone(),
    }
}
