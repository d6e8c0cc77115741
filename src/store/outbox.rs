//! The webhook outbox's SQL, shared by both backends as plain functions over [`Sql`] (like
//! `book.rs`). The outbox rows are written by the triggers of migration 0013, never here:
//! that is what keeps each in the transaction of the change it reports.

use super::StoreError;
use super::sql::{Sql, args};
use crate::domain::{UtcTime, WebhookEventType};

/// One fact of the outbox, as the triggers recorded it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Commit order within a subject.
    pub seq: i64,
    /// Stable for the fact: `evt_` + type + subject (docs/webhooks.md).
    pub id: String,
    pub event_type: WebhookEventType,
    /// The session, phone or server the event is about; its deliveries are ordered by it.
    pub subject: String,
    pub occurred_at: UtcTime,
    pub recorded_at: UtcTime,
    /// The fact as the book holds it: times as epoch milliseconds.
    pub data: serde_json::Value,
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    seq: i64,
    event_id: String,
    r#type: String,
    subject: String,
    occurred_at: UtcTime,
    recorded_at: UtcTime,
    data: String,
}

impl TryFrom<OutboxRow> for OutboxEvent {
    type Error = StoreError;

    fn try_from(row: OutboxRow) -> Result<Self, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(format!("webhook event {}: {e}", row.seq));
        let event_type = WebhookEventType::try_from(row.r#type.clone()).map_err(corrupt)?;
        let data = serde_json::from_str(&row.data).map_err(|e| corrupt(e.to_string()))?;
        Ok(OutboxEvent {
            seq: row.seq,
            id: row.event_id,
            event_type,
            subject: row.subject,
            occurred_at: row.occurred_at,
            recorded_at: row.recorded_at,
            data,
        })
    }
}

/// The outbox after `after_seq`, in `seq` order.
pub(super) async fn events(
    db: &mut impl Sql,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<OutboxEvent>, StoreError> {
    let sql = "SELECT seq, event_id, type, subject, occurred_at, recorded_at, data \
               FROM webhook_events WHERE seq > $1 ORDER BY seq LIMIT $2";
    let rows: Vec<OutboxRow> = db.fetch_all(sql, &args![after_seq, limit]).await?;
    rows.into_iter().map(OutboxEvent::try_from).collect()
}
