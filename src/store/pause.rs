//! The durable record of a control-plane pause (7.2 CPS.0006/0007/0008: the account is
//! refused and the watchdog starts no recovery): `account_pauses`, migration 0015, whose
//! triggers write the `fleet.incident` events in the same transaction. At most one pause is
//! open at a time (a partial unique index), so replicas that each notice the refusal open it
//! once, and the first to see the account served again closes it.

use super::StoreError;
use super::sql::{Sql, args};
use crate::domain::{PhoneId, UtcTime};

/// An open pause: what began it, and the phone whose re-read tells when it ends.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AccountPause {
    pub id: i64,
    /// The 7.2 error code, e.g. `CPS.0006`.
    pub code: String,
    #[sqlx(try_from = "String")]
    pub probe_phone_id: PhoneId,
    pub started_at: UtcTime,
}

/// Opens a pause unless one is open; true if this call opened it.
pub(super) async fn open(
    tx: &mut impl Sql,
    code: &str,
    probe: &PhoneId,
    now: UtcTime,
) -> Result<bool, StoreError> {
    let sql = "INSERT INTO account_pauses (code, probe_phone_id, started_at) \
               VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
    Ok(tx.execute(sql, &args![code, probe.as_str(), now]).await? > 0)
}

/// Closes the open pause, if any; true if this call closed it.
pub(super) async fn close(tx: &mut impl Sql, now: UtcTime) -> Result<bool, StoreError> {
    let sql = "UPDATE account_pauses SET ended_at = $1 WHERE ended_at IS NULL";
    Ok(tx.execute(sql, &args![now]).await? > 0)
}

pub(super) async fn current(db: &mut impl Sql) -> Result<Option<AccountPause>, StoreError> {
    let sql = "SELECT id, code, probe_phone_id, started_at FROM account_pauses \
               WHERE ended_at IS NULL";
    Ok(db.fetch_optional(sql, &args![]).await?)
}
