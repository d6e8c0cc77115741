//! Encoding servers, a recovery with its diagnostics, and an ad-hoc command on a phone:
//! `GET /api/v1/encode-servers`, `GET /api/v1/recoveries/{id}`,
//! `POST /api/v1/phones/{phone_id}/exec`.

use std::sync::Arc;

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiError;
use crate::domain::{CommandRun, PhoneId, ShellCommand};
use crate::http::error::ErrorBody;
use crate::store::{EncodeServer, Recovery, Store};
use crate::watchdog::Watchdog;

#[derive(Serialize, ToSchema)]
pub(super) struct EncodeServerList {
    /// In id order, as the watchdog last listed them (chapter 4.6.1).
    encode_servers: Vec<EncodeServer>,
}

/// The encoding servers with their state, as the watchdog last listed them.
#[utoipa::path(
    get,
    path = "/encode-servers",
    tag = "operator",
    responses(
        (status = 200, description = "The encoding servers", body = EncodeServerList),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn list(store: web::Data<dyn Store>) -> Result<HttpResponse, ApiError> {
    let encode_servers = store.encode_servers().await?;
    Ok(HttpResponse::Ok().json(EncodeServerList { encode_servers }))
}

/// One line of the recovery log, with the diagnostics run before its reset (chapter 4.7.5).
#[utoipa::path(
    get,
    path = "/recoveries/{id}",
    tag = "operator",
    params(("id" = i64, Path, description = "The recovery's id")),
    responses(
        (status = 200, description = "The recovery", body = Recovery),
        (status = 400, description = "`CPHUB.INVALID_FIELD`", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn recovery(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let id = path.parse::<i64>().map_err(|_| {
        let problem = crate::domain::Problem::Invalid("expected the recovery's number");
        crate::domain::ParseError::new("id", problem)
    })?;
    let recovery = store.recovery(id).await?;
    let recovery = recovery.ok_or(ApiError::NotFound("recovery"))?;
    Ok(HttpResponse::Ok().json(recovery))
}

/// A misspelt or unknown field is refused, not ignored, as on every operator body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ExecRequest {
    /// An ADB shell command: at most 1,024 bytes of letters, digits, spaces and `_ . / : -`
    /// (chapter 4.7.5).
    #[schema(
        max_length = 1024,
        pattern = "^[A-Za-z0-9_./: -]*[A-Za-z0-9_./:-][A-Za-z0-9_./: -]*$"
    )]
    command: String,
}

/// Runs one command in the phone's ADB shell (chapter 4.7.5) and answers what it gave. The
/// command is checked against the API's limits before any call.
#[utoipa::path(
    post,
    path = "/phones/{phone_id}/exec",
    tag = "operator",
    params(("phone_id" = PhoneId, Path, description = "The phone")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The run: succeeded, failed (with its output), timed out or error", body = CommandRun),
        (status = 400, description = "`CPHUB.INVALID_FIELD`, `CPHUB.INVALID_COMMAND` or `CPHUB.MALFORMED_JSON`", body = ErrorBody),
        (status = 503, description = "`CPHUB.CPH_NOT_CONFIGURED`", body = ErrorBody),
    ),
)]
pub(super) async fn exec(
    path: web::Path<String>,
    body: web::Json<ExecRequest>,
    watchdog: Option<web::Data<Arc<Watchdog>>>,
) -> Result<HttpResponse, ApiError> {
    let phone_id = PhoneId::parse("phone_id", path.into_inner())?;
    let command = ShellCommand::parse(&body.command)?;
    let watchdog = watchdog.ok_or(ApiError::CphNotConfigured)?;
    Ok(HttpResponse::Ok().json(watchdog.exec(&phone_id, &command).await))
}
