//! The types of event cphub pushes to webhook endpoints (docs/webhooks.md), each with its
//! wire name, which is also its text in the outbox (`webhook_events.type`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ParseError, Problem};

/// A webhook event's type, as the envelope's `type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum WebhookEventType {
    #[serde(rename = "session.started")]
    SessionStarted,
    #[serde(rename = "session.ended")]
    SessionEnded,
    /// Written by the dispatcher, every `webhooks.tick_interval_secs` of a playing session.
    #[serde(rename = "session.tick")]
    SessionTick,
    #[serde(rename = "phone.recovery")]
    PhoneRecovery,
    #[serde(rename = "fleet.incident")]
    FleetIncident,
    #[serde(rename = "queue.assigned")]
    QueueAssigned,
    /// A rollout started, paused, resumed, was aborted or finished.
    #[serde(rename = "fleet.rollout")]
    FleetRollout,
}

impl WebhookEventType {
    pub const ALL: &[WebhookEventType] = &[
        WebhookEventType::SessionStarted,
        WebhookEventType::SessionEnded,
        WebhookEventType::SessionTick,
        WebhookEventType::PhoneRecovery,
        WebhookEventType::FleetIncident,
        WebhookEventType::QueueAssigned,
        WebhookEventType::FleetRollout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::SessionStarted => "session.started",
            WebhookEventType::SessionEnded => "session.ended",
            WebhookEventType::SessionTick => "session.tick",
            WebhookEventType::PhoneRecovery => "phone.recovery",
            WebhookEventType::FleetIncident => "fleet.incident",
            WebhookEventType::QueueAssigned => "queue.assigned",
            WebhookEventType::FleetRollout => "fleet.rollout",
        }
    }
}

impl TryFrom<String> for WebhookEventType {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let found = Self::ALL.iter().find(|t| t.as_str() == text);
        found
            .copied()
            .ok_or_else(|| format!("unknown webhook event type {text:?}"))
    }
}

impl std::fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a delivery of one event to one endpoint stands (`webhook_deliveries.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not yet answered 2xx; due at `next_attempt_at`.
    Pending,
    Delivered,
    /// Every scheduled attempt failed, or the payload is over the bound; kept.
    Failed,
}

impl DeliveryState {
    pub const ALL: &[DeliveryState] = &[
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(field: &'static str, text: &str) -> Result<Self, ParseError> {
        let found = Self::ALL.iter().find(|s| s.as_str() == text);
        let invalid = Problem::Invalid("must be pending, delivered or failed");
        found.copied().ok_or(ParseError::new(field, invalid))
    }
}

impl TryFrom<String> for DeliveryState {
    type Error = ParseError;

    /// For rows read back: the column only ever holds the three names.
    fn try_from(text: String) -> Result<Self, ParseError> {
        Self::parse("stored delivery state", &text)
    }
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_type_reads_back_from_its_text_and_serializes_as_it() {
        for t in WebhookEventType::ALL {
            assert_eq!(WebhookEventType::try_from(t.as_str().to_owned()), Ok(*t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert!(WebhookEventType::try_from("session.paused".to_owned()).is_err());
    }

    #[test]
    fn each_delivery_state_reads_back_from_its_text_and_nothing_else_does() {
        for s in DeliveryState::ALL {
            assert_eq!(DeliveryState::parse("state", s.as_str()), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(DeliveryState::parse("state", "leased").is_err());
        assert!(DeliveryState::parse("state", "Pending").is_err());
    }
}
