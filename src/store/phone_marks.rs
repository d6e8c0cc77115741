//! What else the book recorded about one phone, for its history (the console's phone page):
//! its steps in rollouts, the times cphub learned it was out of service, and the account's
//! control-plane pauses. Read from the tables that record them already — `rollout_phones`,
//! the outbox rows the out-of-service trigger writes (migration 0015), `account_pauses` —
//! so no state log is kept besides them.

use super::sql::{Sql, args};
use super::{RolloutPhone, StoreError, rollout};
use crate::domain::{PhoneId, UtcTime};

/// The phone's marks, newest first, each kind bounded by the read's limit.
#[derive(Debug, Clone, Default)]
pub struct PhoneMarks {
    /// Its step in each rollout that took it, and when it passed each stage (the last
    /// time, should a skipped phone have been taken again).
    pub rollout_steps: Vec<RolloutPhone>,
    pub out_of_service: Vec<OutOfServiceMark>,
    pub account_pauses: Vec<PausePeriod>,
}

/// cphub learned the phone's control-plane status became an out-of-service one (frozen,
/// stopped, creation or stopping failed, chapter 4.3.1), whoever wrote it: phone sync, the
/// watchdog's re-read, `cphub phones stop`.
#[derive(Debug, Clone)]
pub struct OutOfServiceMark {
    pub at: UtcTime,
    /// As the outbox row says it, e.g. `status 8 (stopped)`.
    pub detail: String,
}

/// A control-plane pause of the whole account (chapter 7.2): no recovery while it lasts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PausePeriod {
    pub code: String,
    pub started_at: UtcTime,
    pub ended_at: Option<UtcTime>,
}

/// The marks of `phone`, `limit` of each kind; the pauses that lasted into `since` or later
/// (the phone's first sight: older ones did not concern it).
pub(super) async fn read(
    db: &mut impl Sql,
    phone: &PhoneId,
    since: UtcTime,
    limit: i64,
) -> Result<PhoneMarks, StoreError> {
    Ok(PhoneMarks {
        rollout_steps: rollout::of_phone(db, phone, limit).await?,
        out_of_service: out_of_service(db, phone, limit).await?,
        account_pauses: pauses(db, since, limit).await?,
    })
}

#[derive(sqlx::FromRow)]
struct OutOfServiceRow {
    occurred_at: UtcTime,
    data: String,
}

/// The outbox rows of migration 0015's trigger: `phone.recovery` with the phone as subject
/// and an id naming `out_of_service`. They are kept after delivery (only deliveries are
/// pruned), so they are the phone's record of these changes.
async fn out_of_service(
    db: &mut impl Sql,
    phone: &PhoneId,
    limit: i64,
) -> Result<Vec<OutOfServiceMark>, StoreError> {
    let sql = "SELECT occurred_at, data FROM webhook_events \
               WHERE type = 'phone.recovery' AND subject = $1 AND event_id LIKE $2 \
               ORDER BY seq DESC LIMIT $3";
    let ids = format!("evt_phone.recovery_{phone}_out_of_service_%");
    let rows: Vec<OutOfServiceRow> = db.fetch_all(sql, &args![phone.as_str(), ids.as_str(), limit]).await?;
    rows.into_iter().map(OutOfServiceMark::try_from).collect()
}

impl TryFrom<OutOfServiceRow> for OutOfServiceMark {
    type Error = StoreError;

    fn try_from(row: OutOfServiceRow) -> Result<Self, StoreError> {
        let data: serde_json::Value =
            serde_json::from_str(&row.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let detail = data["detail"].as_str().unwrap_or("out of service");
        Ok(OutOfServiceMark {
            at: row.occurred_at,
            detail: detail.to_owned(),
        })
    }
}

async fn pauses(
    db: &mut impl Sql,
    since: UtcTime,
    limit: i64,
) -> Result<Vec<PausePeriod>, StoreError> {
    let sql = "SELECT code, started_at, ended_at FROM account_pauses \
               WHERE ended_at IS NULL OR ended_at >= $1 ORDER BY id DESC LIMIT $2";
    Ok(db.fetch_all(sql, &args![since, limit]).await?)
}
