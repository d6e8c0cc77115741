//! `GET /api/v1/usage`: usage for billing over a window, grouped (see `crate::usage`).

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use crate::config::UsageSettings;
use crate::domain::{ParseError, Problem};
use crate::http::error::ErrorBody;
use crate::store::Store;
use crate::usage::{self, Counts, UsageParams};

#[derive(Debug, Clone, Copy)]
enum Format {
    Json,
    Csv,
}

impl Format {
    fn parse(raw: Option<&str>) -> Result<Format, ParseError> {
        match raw {
            None | Some("json") => Ok(Format::Json),
            Some("csv") => Ok(Format::Csv),
            Some(_) => Err(ParseError::new("format", Problem::Invalid("json or csv"))),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct UsageRequest {
    /// Start of the window: RFC 3339, or a date (midnight in the time zone); 1970 to 9999.
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")]
    from: String,
    /// End of the window, excluded: RFC 3339, or a date; after `from`.
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])")]
    to: String,
    /// Comma-separated: `app`, `day`, `phone`, `user`, in the order rows are sorted.
    /// Empty: one row of totals.
    #[param(pattern = "^\\s*(app|day|phone|user)?\\s*(,\\s*(app|day|phone|user)?\\s*)*$")]
    group_by: Option<String>,
    /// IANA zone whose midnights cut `day` (default: `usage.time_zone`).
    time_zone: Option<String>,
    /// `json` (default) or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
}

/// The JSON answer (documentation only: `usage::UsageReport` serialises itself).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(super) struct UsageReportDoc {
    /// The window's start, UTC.
    from: String,
    /// The window's end (excluded), UTC.
    to: String,
    time_zone: String,
    /// `started_minute`, `completed_minute` or `nearest_minute`.
    billing_rounding: String,
    /// Column names of the keys grouped by: `app_id`, `day`, `phone_id`, `user_id`.
    group_by: Vec<String>,
    /// One object per group: its keys (null for a session without one, e.g. no user),
    /// then the figures of `totals`.
    rows: Vec<BTreeMap<String, serde_json::Value>>,
    totals: Counts,
}

/// The report `GET /api/v1/usage` answers with, for `params`: the console's usage page
/// shows the same one, so its figures cannot differ from the API's.
pub(crate) async fn report(
    store: &dyn Store,
    settings: &UsageSettings,
    params: &UsageParams,
) -> Result<usage::UsageReport, ApiError> {
    let plan = usage::plan(settings, params)?;
    let rows = store.usage(&plan.query).await?;
    Ok(usage::UsageReport::new(plan, rows))
}

#[utoipa::path(
    get,
    path = "/usage",
    tag = "operator",
    params(UsageRequest),
    responses(
        (status = 200, description = "Usage per group, sorted by the keys; CSV has the same columns",
         content(
            (UsageReportDoc = "application/json"),
            (String = "text/csv"),
         )),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: the field is named in the message", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn usage(
    request: web::Query<UsageRequest>,
    store: web::Data<dyn Store>,
    settings: web::Data<UsageSettings>,
) -> Result<HttpResponse, ApiError> {
    let request = request.into_inner();
    let format = Format::parse(request.format.as_deref())?;
    let params = UsageParams {
        from: request.from,
        to: request.to,
        group_by: request.group_by.unwrap_or_default(),
        time_zone: request.time_zone,
    };
    let report = report(&**store, &settings, &params).await?;
    Ok(match format {
        Format::Json => HttpResponse::Ok().json(report),
        Format::Csv => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("Content-Disposition", "inline; filename=\"usage.csv\""))
            .body(usage::to_csv(&report).map_err(|e| ApiError::Render(e.to_string()))?),
    })
}
