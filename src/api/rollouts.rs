//! Game version rollouts: `POST /api/v1/rollouts`, `GET /api/v1/rollouts`,
//! `GET /api/v1/rollouts/{id}`, `POST /api/v1/rollouts/{id}/pause|resume|abort`
//! (docs/operations.md "Rolling out a game version").

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoResponses, ToSchema};

use super::ApiError;
use crate::clock::Clock;
use crate::domain::{MAX_PLAN_COUNT, rollout_versions};
use crate::domain::{AppId, ParseError, PhoneId, Problem, RolloutPlan, RolloutTarget};
use crate::http::error::ErrorBody;
use crate::http::json::OptionalJson;
use crate::rollout::{Change, Rollouts, StartRollout, change_state};
use crate::store::{Rollout, RolloutPhone, Store};

/// The largest rollout the schema allows (1,000 listed phones and 16 versions, ids of up to
/// 64 characters, pretty-printed) is some 80 KB: over `api.body_limit`'s default 64 KiB, it
/// was refused as too large instead of being read. Its own limit, whatever that setting.
pub(super) const BODY_LIMIT: usize = 128 * 1024;

/// Which phones with the app: one of `server_id`, `phones`, `percent`; none of them means
/// every phone with the app.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
#[schema(max_properties = 1)]
pub(super) struct TargetBody {
    /// The phones of one server (chapter 4.3.1 `server_id`).
    #[serde(default)]
    #[schema(value_type = Option<PhoneId>)]
    server_id: Option<String>,
    /// These phones; each must have the app.
    #[serde(default)]
    #[schema(value_type = Option<Vec<PhoneId>>, min_items = 1, max_items = 1000)]
    phones: Option<Vec<String>>,
    /// This share of the phones with the app, 1 to 100, the first in phone id order.
    #[serde(default, deserialize_with = "crate::receiver::optional_integer")]
    #[schema(minimum = 1, maximum = 100)]
    percent: Option<i64>,
}

/// `app_version_ids`: utoipa's attributes cannot say `uniqueItems`.
fn version_ids_schema() -> utoipa::openapi::schema::Array {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name("PhoneId"))
        .min_items(Some(1))
        .max_items(Some(16))
        .unique_items(true)
        .description(Some(
            "Application version ids (chapter 5.2) sent to 5.3.7, 1 to 16, none twice \
             (5.3.7 starts a job per id).",
        ))
        .build()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RolloutBody {
    #[schema(value_type = AppId)]
    app_id: String,
    /// Application version ids (chapter 5.2) sent to 5.3.7, 1 to 16, none twice (5.3.7
    /// starts a job per id).
    #[schema(schema_with = version_ids_schema)]
    app_version_ids: Vec<String>,
    #[serde(default)]
    target: TargetBody,
    /// Phones updated first, alone, as a canary batch (0: none). Default 1.
    #[serde(default, deserialize_with = "crate::receiver::optional_integer")]
    #[schema(minimum = 0, maximum = 1000000)]
    canary: Option<i64>,
    /// Phones per batch after the canary. Default 10.
    #[serde(default, deserialize_with = "crate::receiver::optional_integer")]
    #[schema(minimum = 1, maximum = 1000000)]
    batch_size: Option<i64>,
    /// A batch with more failed phones than this pauses the rollout. Default 0.
    #[serde(default, deserialize_with = "crate::receiver::optional_integer")]
    #[schema(minimum = 0, maximum = 1000000)]
    max_failures: Option<i64>,
    /// How long a drained phone's session may play on; after it the phone is skipped
    /// (retried by a later batch) unless `force`. Default 600.
    #[serde(default, deserialize_with = "crate::receiver::optional_integer")]
    #[schema(minimum = 1, maximum = 86400)]
    drain_deadline_secs: Option<i64>,
    /// Cut short a session that outlives the drain deadline.
    #[serde(default)]
    force: bool,
    /// Push the versions (5.3.4) to the servers that lack them instead of refusing.
    #[serde(default)]
    push_first: bool,
}

/// A count of the plan: `default` when absent, refused outside `range`.
fn count(
    field: &'static str,
    value: Option<i64>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, ParseError> {
    let Some(value) = value else {
        return Ok(default);
    };
    (u32::try_from(value).ok())
        .filter(|v| range.contains(v))
        .ok_or(ParseError::new(field, Problem::Invalid("out of range")))
}

impl TryFrom<RolloutBody> for StartRollout {
    type Error = ParseError;

    fn try_from(body: RolloutBody) -> Result<Self, ParseError> {
        const MANY: u32 = MAX_PLAN_COUNT;
        let plan = RolloutPlan::new(
            count("canary", body.canary, 1, 0..=MANY)?,
            count("batch_size", body.batch_size, 10, 1..=MANY)?,
            count("max_failures", body.max_failures, 0, 0..=MANY)?,
            count(
                "drain_deadline_secs",
                body.drain_deadline_secs,
                600,
                1..=86_400,
            )?,
            body.force,
        )?;
        Ok(StartRollout {
            app_id: AppId::parse("app_id", body.app_id)?,
            app_version_ids: rollout_versions("app_version_ids", body.app_version_ids)?,
            target: target(body.target)?,
            plan,
            push_first: body.push_first,
        })
    }
}

fn target(body: TargetBody) -> Result<RolloutTarget, ParseError> {
    let only_one = Problem::Invalid("give at most one of server_id, phones, percent");
    match (body.server_id, body.phones, body.percent) {
        (None, None, None) => Ok(RolloutTarget::All),
        (Some(server), None, None) => {
            let server = PhoneId::parse("target.server_id", server)?;
            Ok(RolloutTarget::ServerId(server.to_string()))
        }
        (None, Some(phones), None) => RolloutTarget::phones("target.phones", phones),
        (None, None, Some(percent)) => RolloutTarget::percent(percent),
        _ => Err(ParseError::new("target", only_one)),
    }
}

/// Why a rollout is refused; only describes the answers for the document.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum StartRefusal {
    /// `CPHUB.MALFORMED_JSON` or `CPHUB.INVALID_FIELD` (also `app_version_ids` the
    /// control plane refused to push, 7.2 `CPS.0200`)
    #[response(status = 400)]
    Invalid(ErrorBody<'static>),
    /// `CPHUB.ROLLOUT_CONFLICT`: the app has a running or paused rollout;
    /// `CPHUB.VERSION_NOT_PUSHED`: the servers named lack the version (5.3.1, 5.3.7);
    /// `CPHUB.NO_TARGET_PHONES`: no phone of the target has the app, or listed phones lack it
    #[response(status = 409)]
    Conflict(ErrorBody<'static>),
    /// `CPHUB.PAYLOAD_TOO_LARGE`: over 128 KiB
    #[response(status = 413)]
    TooLarge(ErrorBody<'static>),
    /// `CPHUB.CPH_FAILED`: the CPH management API refused or failed a call
    #[response(status = 502)]
    Cph(ErrorBody<'static>),
    /// `CPHUB.CPH_NOT_CONFIGURED` or `CPHUB.UNAVAILABLE`, with `Retry-After`
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// Starts a rollout; the leader's engine drains and updates its phones from then on.
#[utoipa::path(
    post,
    path = "/rollouts",
    tag = "operator",
    request_body = RolloutBody,
    responses(
        (status = 201, description = "Started", body = Rollout),
        StartRefusal,
    ),
)]
pub(super) async fn create(
    body: web::Json<RolloutBody>,
    rollouts: Option<web::Data<Rollouts>>,
) -> Result<HttpResponse, ApiError> {
    let ask = StartRollout::try_from(body.into_inner())?;
    let rollouts = rollouts.ok_or(ApiError::CphNotConfigured)?;
    let rollout = rollouts.start(&ask).await?;
    Ok(HttpResponse::Created().json(rollout))
}

#[derive(Serialize, ToSchema)]
pub(super) struct RolloutList {
    /// Newest first, at most 100.
    rollouts: Vec<Rollout>,
}

#[utoipa::path(
    get,
    path = "/rollouts",
    tag = "operator",
    responses(
        (status = 200, description = "Rollouts, newest first", body = RolloutList),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn list(store: web::Data<dyn Store>) -> Result<HttpResponse, ApiError> {
    let rollouts = store.rollouts(100).await?;
    Ok(HttpResponse::Ok().json(RolloutList { rollouts }))
}

#[derive(Serialize, ToSchema)]
pub(super) struct RolloutView {
    #[serde(flatten)]
    rollout: Rollout,
    /// Every target phone with its step, in phone id order.
    phones: Vec<RolloutPhone>,
}

#[utoipa::path(
    get,
    path = "/rollouts/{rollout_id}",
    tag = "operator",
    params(("rollout_id" = i64, Path, minimum = 1, description = "The rollout's id")),
    responses(
        (status = 200, description = "The rollout and each phone's step", body = RolloutView),
        (status = 400, description = "`CPHUB.INVALID_FIELD`: not a number", body = ErrorBody),
        (status = 404, description = "`CPHUB.NOT_FOUND`", body = ErrorBody),
        (status = 503, description = "`CPHUB.UNAVAILABLE`, with `Retry-After`", body = ErrorBody),
    ),
)]
pub(super) async fn show(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
) -> Result<HttpResponse, ApiError> {
    let id = rollout_id(&path)?;
    let rollout = store.rollout(id).await?;
    let rollout = rollout.ok_or(ApiError::NotFound("rollout"))?;
    let phones = store.rollout_phones(id).await?;
    Ok(HttpResponse::Ok().json(RolloutView { rollout, phones }))
}

/// The path's id; anything but a positive number is an invalid field, not a 404.
fn rollout_id(raw: &str) -> Result<i64, ParseError> {
    let problem = Problem::Invalid("a positive rollout id");
    (raw.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or(ParseError::new("rollout_id", problem))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct PauseBody {
    /// Kept with the rollout, to tell others why (at most 500 characters).
    #[serde(default)]
    #[schema(max_length = 500)]
    reason: Option<String>,
}

/// Why a pause, resume or abort is refused; only describes the answers for the document.
#[derive(IntoResponses)]
#[allow(dead_code)]
pub(super) enum ChangeRefusal {
    /// `CPHUB.INVALID_FIELD`
    #[response(status = 400)]
    Invalid(ErrorBody<'static>),
    /// `CPHUB.NOT_FOUND`
    #[response(status = 404)]
    NotFound(ErrorBody<'static>),
    /// `CPHUB.ROLLOUT_CONFLICT`: its state does not allow it (a done rollout cannot resume)
    #[response(status = 409)]
    Conflict(ErrorBody<'static>),
    /// `CPHUB.UNAVAILABLE`, with `Retry-After`
    #[response(status = 503)]
    Unavailable(ErrorBody<'static>),
}

/// Takes no new phones; updates already sent are followed to their end, phones only
/// drained go back to the pool.
#[utoipa::path(
    post,
    path = "/rollouts/{rollout_id}/pause",
    tag = "operator",
    params(("rollout_id" = i64, Path, minimum = 1, description = "The rollout's id")),
    request_body(content = Option<PauseBody>),
    responses((status = 200, description = "Paused", body = Rollout), ChangeRefusal),
)]
pub(super) async fn pause(
    path: web::Path<String>,
    body: OptionalJson<PauseBody>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
) -> Result<HttpResponse, ApiError> {
    let id = rollout_id(&path)?;
    let reason = crate::domain::pause_reason(body.0.and_then(|b| b.reason).unwrap_or_default())?;
    let pause = Change::Pause {
        by: "operator",
        why: &reason,
    };
    let rollout = change_state(&**store, clock.now(), id, pause).await?;
    Ok(HttpResponse::Ok().json(rollout))
}

#[utoipa::path(
    post,
    path = "/rollouts/{rollout_id}/resume",
    tag = "operator",
    params(("rollout_id" = i64, Path, minimum = 1, description = "The rollout's id")),
    responses((status = 200, description = "Running again, from a new batch", body = Rollout), ChangeRefusal),
)]
pub(super) async fn resume(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
) -> Result<HttpResponse, ApiError> {
    let id = rollout_id(&path)?;
    let rollout = change_state(&**store, clock.now(), id, Change::Resume).await?;
    Ok(HttpResponse::Ok().json(rollout))
}

/// Stops for good: no new updates, drained phones back to the pool.
#[utoipa::path(
    post,
    path = "/rollouts/{rollout_id}/abort",
    tag = "operator",
    params(("rollout_id" = i64, Path, minimum = 1, description = "The rollout's id")),
    responses((status = 200, description = "Aborted", body = Rollout), ChangeRefusal),
)]
pub(super) async fn abort(
    path: web::Path<String>,
    store: web::Data<dyn Store>,
    clock: web::Data<dyn Clock>,
) -> Result<HttpResponse, ApiError> {
    let id = rollout_id(&path)?;
    let rollout = change_state(&**store, clock.now(), id, Change::Abort).await?;
    Ok(HttpResponse::Ok().json(rollout))
}
