//! The envelope a receiver gets: `{"type", "id", "timestamp", "data"}`, rendered from an
//! outbox row. The row keeps the fact as the book holds it (times as epoch milliseconds);
//! here times become RFC 3339 and a `session.ended` gets its billable minutes under
//! `usage.billing_rounding`, computed from the stored `duration_seconds` when sent.

use serde_json::{Map, Value, json};

use crate::domain::{UtcTime, WebhookEventType};
use crate::store::OutboxEvent;
use crate::usage::Rounding;

/// A body ready to sign and send.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub id: String,
    pub body: Vec<u8>,
}

pub fn render(event: &OutboxEvent, rounding: Rounding) -> Rendered {
    let mut data = match &event.data {
        Value::Object(fields) => fields.clone(),
        _ => Map::new(),
    };
    for (key, value) in data.iter_mut() {
        if key.ends_with("_at") {
            *value = rfc3339(value);
        }
    }
    if event.event_type == WebhookEventType::SessionEnded {
        let seconds = data.get("duration_seconds").and_then(Value::as_i64);
        let minutes = seconds.map(|s| rounding.minutes(s));
        data.insert("billable_minutes".into(), json!(minutes));
    }
    let envelope = json!({
        "type": event.event_type.as_str(),
        "id": event.id,
        "timestamp": rfc3339(&json!(event.recorded_at.epoch_millis())),
        "data": data,
    });
    Rendered {
        id: event.id.clone(),
        body: serde_json::to_vec(&envelope).expect("JSON values serialize"),
    }
}

/// Epoch milliseconds as an RFC 3339 time; anything else (null) as it is.
fn rfc3339(value: &Value) -> Value {
    let time = value.as_i64().and_then(UtcTime::from_epoch_millis);
    time.map_or(value.clone(), |t| json!(t))
}
