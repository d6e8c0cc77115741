//! The types of event cphub pushes to webhook endpoints (docs/webhooks.md), each with its
//! wire name, which is also its text in the outbox (`webhook_events.type`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

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
}

impl WebhookEventType {
    pub const ALL: &[WebhookEventType] = &[
        WebhookEventType::SessionStarted,
        WebhookEventType::SessionEnded,
        WebhookEventType::SessionTick,
        WebhookEventType::PhoneRecovery,
        WebhookEventType::FleetIncident,
        WebhookEventType::QueueAssigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::SessionStarted => "session.started",
            WebhookEventType::SessionEnded => "session.ended",
            WebhookEventType::SessionTick => "session.tick",
            WebhookEventType::PhoneRecovery => "phone.recovery",
            WebhookEventType::FleetIncident => "fleet.incident",
            WebhookEventType::QueueAssigned => "queue.assigned",
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
}
