//! The audit trail of operator calls (`audit_log`, migration 0020): who (the token's name,
//! `cli:<user>` for the command line), which request, what action on which target, and how
//! it ended. Written by the operator API after each state-changing call, read newest first.
//! The watchdog's own actions are not here: they are the recovery log.

use serde::Serialize;
use utoipa::ToSchema;

use super::StoreError;
use super::sql::{Sql, args};
use crate::domain::UtcTime;

/// One call to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub at: UtcTime,
    /// `api.tokens` name, or `cli:<user>`.
    pub token_name: String,
    /// The `x-request-id` the answer carried; the CLI's own for its commands.
    pub request_id: String,
    /// The route, e.g. `POST /phones/{phone_id}/restart`, or the CLI command.
    pub action: String,
    /// What was acted on: the route's path values joined by `/` (a phone id, a rollout id,
    /// `endpoint/event_id`), empty when there is none (creating a rollout).
    pub target: String,
    /// The answer's HTTP status (0 for a CLI command that failed before any answer).
    pub status: i64,
    pub error_code: Option<String>,
    /// A small JSON object without secrets (the path values, the query).
    pub detail: String,
}

/// One line of the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
pub struct AuditRecord {
    pub id: i64,
    pub at: UtcTime,
    pub token_name: String,
    pub request_id: String,
    pub action: String,
    pub target: String,
    pub status: i64,
    pub error_code: Option<String>,
    /// A JSON object, as text.
    pub detail: String,
}

/// Which lines, newest first: every filter is optional; `before` is the id to continue
/// below (the previous page's last).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub token_name: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<UtcTime>,
    pub before: Option<i64>,
    pub limit: i64,
}

/// Adds the line; its id.
pub(super) async fn record(tx: &mut impl Sql, e: &NewAuditEntry) -> Result<i64, StoreError> {
    let sql = "INSERT INTO audit_log \
                 (at, token_name, request_id, action, target, status, error_code, detail) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id";
    let args = args![
        e.at,
        e.token_name.as_str(),
        e.request_id.as_str(),
        e.action.as_str(),
        e.target.as_str(),
        e.status,
        e.error_code.as_deref(),
        e.detail.as_str(),
    ];
    let (id,): (i64,) = tx
        .fetch_optional(sql, &args)
        .await?
        .ok_or_else(|| StoreError::Corrupt("an audit line inserted returned no id".into()))?;
    Ok(id)
}

/// The outcome of a call whose line was written as it began.
pub(super) async fn settle(
    tx: &mut impl Sql,
    id: i64,
    status: i64,
    error_code: Option<&str>,
) -> Result<(), StoreError> {
    let sql = "UPDATE audit_log SET status = $2, error_code = $3 WHERE id = $1";
    tx.execute(sql, &args![id, status, error_code]).await?;
    Ok(())
}

pub(super) async fn list(
    db: &mut impl Sql,
    f: &AuditFilter,
) -> Result<Vec<AuditRecord>, StoreError> {
    let sql = "SELECT id, at, token_name, request_id, action, target, status, error_code, \
                      detail \
               FROM audit_log \
               WHERE ($1 IS NULL OR token_name = $1) AND ($2 IS NULL OR action = $2) \
                 AND ($3 IS NULL OR target = $3) AND ($4 IS NULL OR at >= $4) \
                 AND ($5 IS NULL OR id < $5) \
               ORDER BY id DESC LIMIT $6";
    let args = args![
        f.token_name.as_deref(),
        f.action.as_deref(),
        f.target.as_deref(),
        f.since,
        f.before,
        f.limit,
    ];
    Ok(db.fetch_all(sql, &args).await?)
}

/// Removes lines older than `before` (book retention); how many.
pub(super) async fn prune(tx: &mut impl Sql, before: UtcTime) -> Result<u64, StoreError> {
    let sql = "DELETE FROM audit_log WHERE at < $1";
    Ok(tx.execute(sql, &args![before]).await?)
}
