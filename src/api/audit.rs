//! The audit trail: a line per state-changing operator call, written by the route's guard
//! (`auth::guard`) as the call begins and settled with its answer, and `GET /api/v1/audit`.
//!
//! Lines are not written inside the action's transaction: the answer the caller got is what
//! the line records, whether the action wrote the book, called the control plane, or was
//! refused; a call cut short keeps the status 499 it was written with. A line that cannot be
//! written is logged as an error; the action's answer stands.

use actix_web::body::BoxBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{HttpMessage, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, PREFIX};
use crate::clock::Clock;
use crate::domain::{ParseError, Problem, UtcTime};
use crate::http::ErrorCode;
use crate::http::error::ErrorBody;
use crate::http::request_id::{self, RequestId};
use crate::store::{AuditFilter, AuditRecord, NewAuditEntry, Store};
use crate::telemetry::ErrorChain;

/// The status of a line whose call has not answered (yet): a call cut short — its future
/// dropped by shutdown's timeout — keeps it, as nginx logs a request whose answer never
/// went out.
pub(crate) const CUT_SHORT: i64 = 499;

/// A call's line, written as the call begins (status [`CUT_SHORT`]) and settled with its
/// outcome by [`Pending::record`]: a call that never gets that far (the action may have
/// gone as far as restarting a phone) is still in the trail. A line that could not be
/// written at the start is written whole at the end, as are the lines of players' traffic
/// (joining and leaving the wait queue): a commit more on the players' path for a call
/// whose every effect is in the book it answers from.
pub(crate) struct Pending {
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
    entry: NewAuditEntry,
    /// The line written at the start, to settle.
    written: Option<i64>,
}

impl Pending {
    pub(crate) async fn start(
        req: &ServiceRequest,
        token_name: &str,
        players: bool,
    ) -> Option<Pending> {
        let store = req.app_data::<web::Data<dyn Store>>().cloned()?;
        let clock = req.app_data::<web::Data<dyn Clock>>().cloned()?;
        let pattern = req.match_pattern().unwrap_or_default();
        let route = pattern.strip_prefix(PREFIX).unwrap_or(&pattern);
        let values: Vec<&str> = req.match_info().iter().map(|(_, value)| value).collect();
        let path: serde_json::Map<String, serde_json::Value> = (req.match_info().iter())
            .map(|(name, value)| (name.to_owned(), value.into()))
            .collect();
        let mut detail = serde_json::json!({ "path": path });
        if !req.query_string().is_empty() {
            detail["query"] = req.query_string().into();
        }
        let request_id = req.extensions().get::<RequestId>().copied();
        let entry = NewAuditEntry {
            at: clock.now(),
            token_name: token_name.to_owned(),
            request_id: request_id.map_or_else(request_id::current, |id| id.to_string()),
            action: format!("{} {route}", req.method()),
            // A path value may carry a NUL (`%00`), which PostgreSQL's text refuses: the
            // line would not be written. Kept as U+FFFD, as what the operator sent.
            target: values.join("/").replace('\0', "\u{FFFD}"),
            status: CUT_SHORT,
            error_code: None,
            detail: detail.to_string(),
        };
        let written = match players {
            true => Ok(None),
            false => store.record_audit(&entry).await.map(Some),
        };
        let written = match written {
            Ok(id) => id,
            Err(error) => {
                tracing::warn!(error = %ErrorChain(&error), action = %entry.action, "the audit line of this call was not written before it; tried again after");
                None
            }
        };
        Some(Pending {
            store,
            clock,
            entry,
            written,
        })
    }

    pub(crate) async fn record(self, res: &ServiceResponse<BoxBody>) {
        let code = res.response().extensions().get::<ErrorCode>().copied();
        let (status, code) = (res.status().as_u16().into(), code.map(|c| c.as_str()));
        let written = match self.written {
            Some(id) => self.store.settle_audit(id, status, code).await,
            None => {
                let entry = NewAuditEntry {
                    at: self.clock.now(),
                    status,
                    error_code: code.map(str::to_owned),
                    ..self.entry.clone()
                };
                self.store.record_audit(&entry).await.map(|_| ())
            }
        };
        if let Err(error) = written {
            let what = match self.written {
                Some(_) => "the audit line of this call keeps status 499: its answer was not written",
                None => "the audit line of this call was not written",
            };
            tracing::error!(error = %ErrorChain(&error), action = %self.entry.action, "{what}");
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AuditQuery {
    /// Only calls made with this token (its name in `api.tokens`, or `cli:<user>`).
    token: Option<String>,
    /// Only this action, e.g. `POST /phones/{phone_id}/restart`.
    action: Option<String>,
    /// Only this target (a phone id, a rollout id, `endpoint/event_id`).
    target: Option<String>,
    /// Only calls at or after this time (RFC 3339).
    #[param(format = DateTime, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    since: Option<String>,
    /// Page size, default 100; brought into 1 to 1000.
    limit: Option<i64>,
    /// The `next_cursor` of the previous page (a line's id: the page goes on below it).
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(super) struct AuditPage {
    entries: Vec<AuditRecord>,
    /// Pass as `cursor` for the next (older) page; null on the last one.
    next_cursor: Option<String>,
}

/// The audit trail, newest first: every state-changing operator call (mints aside), by
/// whom, its request id, target and outcome. Calls refused for a missing scope (403) are
/// recorded too; unauthenticated ones (401) are not, having no token name.
#[utoipa::path(
    get,
    path = "/audit",
    tag = "operator",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit lines newest first", body = AuditPage),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: a bad time or cursor", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn list(
    query: web::Query<AuditQuery>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let filter = AuditFilter {
        token_name: no_nul("token", q.token)?,
        action: no_nul("action", q.action)?,
        target: no_nul("target", q.target)?,
        since: q.since.map(|s| UtcTime::parse("since", &s)).transpose()?,
        before: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit,
    };
    let entries = store.audit_log(&filter).await?;
    let next_cursor = super::next_position(&entries, limit, |e| e.id.to_string());
    Ok(HttpResponse::Ok().json(AuditPage {
        entries,
        next_cursor,
    }))
}

fn decode_cursor(cursor: &str) -> Result<i64, ParseError> {
    let invalid = || ParseError::new("cursor", Problem::Invalid("not a cursor this API returned"));
    cursor.parse().ok().filter(|id| *id > 0).ok_or_else(invalid)
}

/// A filter holding a NUL matches no line (a NUL is never stored) and PostgreSQL's text
/// refuses it outright: a 400 naming the filter rather than a 500.
fn no_nul(field: &'static str, value: Option<String>) -> Result<Option<String>, ParseError> {
    match value {
        Some(text) if text.contains('\0') => {
            Err(ParseError::new(field, Problem::Invalid("holds a NUL character")))
        }
        other => Ok(other),
    }
}
