//! `GET /api/v1/usage`: usage for billing over a window, grouped (see `crate::usage`).

use actix_web::{HttpResponse, web};
use serde::Deserialize;

use super::ApiError;
use crate::config::UsageSettings;
use crate::domain::{ParseError, Problem};
use crate::store::Store;
use crate::usage::{self, UsageParams};

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

#[derive(Debug, Deserialize)]
pub(super) struct UsageRequest {
    #[serde(flatten)]
    params: UsageParams,
    format: Option<String>,
}

pub(super) async fn usage(
    request: web::Query<UsageRequest>,
    store: web::Data<dyn Store>,
    settings: web::Data<UsageSettings>,
) -> Result<HttpResponse, ApiError> {
    let format = Format::parse(request.format.as_deref())?;
    let report = usage::report(store.get_ref(), &settings, &request.params).await?;
    Ok(match format {
        Format::Json => HttpResponse::Ok().json(report),
        Format::Csv => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(("Content-Disposition", "inline; filename=\"usage.csv\""))
            .body(usage::to_csv(&report).map_err(|e| ApiError::Render(e.to_string()))?),
    })
}
