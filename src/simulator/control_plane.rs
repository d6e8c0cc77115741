//! The fake CPH management API: the routes, bodies and authentication of the real one
//! (chapters 2, 4.3, 4.4 and 7.1.1; `tools/huawei-sdk/CPH_WIRE.md` for what the official SDK
//! sends), acting on the simulated [`Fleet`]. Both cphub's own client and Huawei's Python SDK
//! must work against it unchanged, so requests are checked the way the real service checks
//! them: AK/SK signatures recomputed from what arrived, or IAM tokens issued here.
//!
//! Batch operations answer at once with one job per phone; a task per job finishes it after
//! `job_delay`, which is when the phone changes (restart, reset, stop, properties).

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, Resource, ResponseError, web};
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tracing_actix_web::TracingLogger;
use uuid::Uuid;

use super::fleet::{Fleet, JobKind, PhoneFaults, SharedFleet, SimJob, SimPhone};
use crate::cph::model::{job_status, status};
use crate::cph::signer::{self, CanonicalRequest};
use crate::http::request_id;

/// How far `X-Sdk-Date` may be from the server's clock unless configured otherwise
/// (the API gateway's 15 minutes).
pub const DEFAULT_MAX_DATE_SKEW: Duration = Duration::from_secs(15 * 60);
/// IAM tokens live 24 hours (chapter 2.2).
const TOKEN_LIFETIME: TimeDelta = TimeDelta::hours(24);
/// Chapter 4.3.1 allows 1–100; the SDK documents up to 200. The wider range is accepted.
const MAX_PHONE_PAGE: usize = 200;
const MAX_JOB_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 100;
/// Fixed descriptive fields of every simulated phone.
const PHONE_MODEL: &str = "aphs1.large.2.aosp";
const IMAGE_ID: &str = "1564567b8bab40f34711234cb80d8574";
/// Chapter 4.3.1 statuses that `cph::model::status` has no name for.
const STOPPING: i32 = 7;
const STOPPED: i32 = 8;

#[derive(Debug, Clone)]
pub struct ControlPlaneSettings {
    pub project_id: String,
    pub ak: String,
    pub sk: SecretString,
    /// IAM password auth accepted at POST /v3/auth/tokens: (username, password, domain).
    pub iam_user: Option<(String, SecretString, String)>,
    /// Jobs stay status 1 (running) this long.
    pub job_delay: Duration,
    /// 0.0..=1.0: the chance that a restart or reset job fails.
    pub job_failure_rate: f64,
    /// An `X-Sdk-Date` older or newer than this is refused ([`DEFAULT_MAX_DATE_SKEW`]).
    pub max_date_skew: Duration,
}

/// Serves the fake management API on `listener` (already bound); returns the running server.
/// It does not react to signals: whoever runs it stops it through its handle.
pub fn start(
    listener: TcpListener,
    settings: ControlPlaneSettings,
    fleet: SharedFleet,
) -> std::io::Result<Server> {
    let state = web::Data::new(ControlPlane::new(settings, fleet));
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(request_id::scope))
            .wrap(TracingLogger::<request_id::RootSpan>::new())
            .configure(routes)
            .default_service(web::to(no_route))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    Ok(server)
}

fn routes(cfg: &mut web::ServiceConfig) {
    const PHONES: &str = "/v1/{project_id}/cloud-phone/phones";
    const JOBS: &str = "/v1/{project_id}/cloud-phone/jobs";
    cfg.service(resource("/v3/auth/tokens").route(web::post().to(create_token)))
        .service(resource(PHONES).route(web::get().to(list_phones)))
        // The batch paths come before `{phone_id}`, which would match them too.
        .service(
            resource(&format!("{PHONES}/batch-update-property"))
                .route(web::post().to(update_property)),
        )
        .service(resource(&format!("{PHONES}/batch-restart")).route(web::post().to(restart)))
        .service(resource(&format!("{PHONES}/batch-reset")).route(web::post().to(reset)))
        .service(resource(&format!("{PHONES}/batch-stop")).route(web::post().to(stop)))
        .service(resource(&format!("{PHONES}/{{phone_id}}")).route(web::get().to(show_phone)))
        .service(resource(JOBS).route(web::get().to(list_jobs)))
        .service(resource(&format!("{JOBS}/{{job_id}}")).route(web::get().to(show_job)));
}

/// A route whose other methods get the gateway's "no such API" answer, not an empty 405.
fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(no_route))
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why a request was not authenticated; each reason has its own message so a client's
/// mistake can be told from another.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("no Authorization or X-Auth-Token header")]
    Missing,
    #[error(
        "the Authorization header is not \"SDK-HMAC-SHA256 Access=…, SignedHeaders=…, Signature=…\""
    )]
    Malformed,
    #[error("the access key is unknown")]
    UnknownAccessKey,
    #[error("X-Sdk-Date is missing or not in the YYYYMMDDTHHMMSSZ format")]
    BadDate,
    #[error("X-Sdk-Date is too far from the server's time (request expired)")]
    StaleDate,
    #[error("the signed header {0} is not in the request")]
    MissingSignedHeader(String),
    #[error("the signature does not match the request")]
    BadSignature,
    #[error("the token is unknown or expired")]
    BadToken,
}

/// A whole request refused. The body is chapter 7.1.1's `{request_id, error_code, error_msg}`.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("Incorrect IAM authentication information: {0}")]
    Unauthenticated(#[from] AuthFailure),
    #[error("The username or password is wrong, or the scope is not project {0}.")]
    IamRefused(String),
    #[error("The API does not exist or has not been published in the environment: {0}")]
    NoRoute(String),
    #[error("The API does not exist: project {0} is not served here.")]
    WrongProject(String),
    #[error("Parameter: {0}")]
    InvalidParameter(String),
    #[error("Parameter: offset or limit is invalid.")]
    BadPage,
    #[error("Parameter: status is invalid.")]
    BadStatus,
    #[error("Parameter: phone_id list is empty.")]
    NoPhones,
    #[error("Phone is not found.")]
    PhoneNotFound,
    #[error("Job is not found.")]
    JobNotFound,
}

impl ControlPlaneError {
    /// Codes of chapter 7.2 where it has one; `APIGW.*` are the API gateway's. The job code
    /// is the simulator's own (the reference lists none for an unknown job).
    fn code(&self) -> &'static str {
        match self {
            ControlPlaneError::Unauthenticated(_) | ControlPlaneError::IamRefused(_) => {
                "APIGW.0301"
            }
            ControlPlaneError::NoRoute(_) | ControlPlaneError::WrongProject(_) => "APIGW.0101",
            ControlPlaneError::InvalidParameter(_) => "CPS.0001",
            ControlPlaneError::BadPage => "CPS.0002",
            ControlPlaneError::PhoneNotFound => "CPS.0005",
            ControlPlaneError::NoPhones => "CPS.0009",
            ControlPlaneError::BadStatus => "CPS.0010",
            ControlPlaneError::JobNotFound => "CPS.0011",
        }
    }
}

impl ResponseError for ControlPlaneError {
    fn status_code(&self) -> StatusCode {
        match self {
            ControlPlaneError::Unauthenticated(_) | ControlPlaneError::IamRefused(_) => {
                StatusCode::UNAUTHORIZED
            }
            ControlPlaneError::NoRoute(_)
            | ControlPlaneError::WrongProject(_)
            | ControlPlaneError::PhoneNotFound
            | ControlPlaneError::JobNotFound => StatusCode::NOT_FOUND,
            ControlPlaneError::InvalidParameter(_)
            | ControlPlaneError::BadPage
            | ControlPlaneError::BadStatus
            | ControlPlaneError::NoPhones => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ControlPlaneError::Unauthenticated(reason) = self {
            tracing::info!(%reason, "fake CPH API refused a request");
        }
        HttpResponse::build(self.status_code())
            .insert_header(CacheControl(vec![CacheDirective::NoStore]))
            .json(json!({
                "request_id": request_id::current(),
                "error_code": self.code(),
                "error_msg": self.to_string(),
            }))
    }
}

/// A phone of a batch that could not be acted on: reported inside the 200 answer, next to
/// the jobs of the other phones (chapter 4.3.5's example).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum ItemError {
    #[error("Parameter: phone_id is invalid.")]
    InvalidPhoneId,
    #[error("Phone is not found.")]
    PhoneNotFound,
    #[error("Parameter: property is missing.")]
    MissingProperty,
    #[error("Parameter: property is invalid: {0}")]
    InvalidProperty(String),
}

impl ItemError {
    fn code(&self) -> &'static str {
        match self {
            ItemError::InvalidPhoneId => "CPS.0004",
            ItemError::PhoneNotFound => "CPS.0005",
            ItemError::MissingProperty | ItemError::InvalidProperty(_) => "CPS.0001",
        }
    }

    /// The batch answer's entry for the phone: an error in place of a job.
    fn answer(&self, phone_id: &str) -> Value {
        json!({"phone_id": phone_id, "error_code": self.code(), "error_msg": self.to_string()})
    }
}

async fn no_route(req: HttpRequest) -> HttpResponse {
    ControlPlaneError::NoRoute(format!("{} {}", req.method(), req.uri().path())).error_response()
}

// ---------------------------------------------------------------------------------------
// State and authentication
// ---------------------------------------------------------------------------------------

struct ControlPlane {
    settings: ControlPlaneSettings,
    fleet: SharedFleet,
    /// IAM tokens issued here, with their expiry.
    tokens: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Reported as every phone's creation time.
    started: String,
}

impl ControlPlane {
    fn new(settings: ControlPlaneSettings, fleet: SharedFleet) -> Self {
        ControlPlane {
            settings,
            fleet,
            tokens: Mutex::new(HashMap::new()),
            started: timestamp(Utc::now()),
        }
    }

    /// Authenticates the request, then checks that it is for this project. Every `/v1`
    /// handler starts with this.
    fn admit(&self, req: &HttpRequest, body: &[u8]) -> Result<(), ControlPlaneError> {
        self.authenticate(req, body)?;
        let project = req.match_info().get("project_id").unwrap_or_default();
        if project != self.settings.project_id {
            return Err(ControlPlaneError::WrongProject(project.to_owned()));
        }
        Ok(())
    }

    /// An IAM token (`X-Auth-Token`) or an AK/SK signature (`Authorization`).
    fn authenticate(&self, req: &HttpRequest, body: &[u8]) -> Result<(), AuthFailure> {
        if let Some(token) = req.headers().get("X-Auth-Token") {
            return self.check_token(token.as_bytes());
        }
        let authorization = req
            .headers()
            .get("Authorization")
            .ok_or(AuthFailure::Missing)?;
        let credential = SignedCredential::parse(authorization.as_bytes())?;
        if credential.access != self.settings.ak {
            return Err(AuthFailure::UnknownAccessKey);
        }
        let date = header_text(req, "X-Sdk-Date").ok_or(AuthFailure::BadDate)?;
        self.check_date(&date)?;
        let expected = expected_signature(req, body, &credential, &date, &self.settings.sk)?;
        let matches: bool = expected
            .as_bytes()
            .ct_eq(credential.signature.as_bytes())
            .into();
        matches.then_some(()).ok_or(AuthFailure::BadSignature)
    }

    fn check_date(&self, date: &str) -> Result<(), AuthFailure> {
        let sent = NaiveDateTime::parse_from_str(date, "%Y%m%dT%H%M%SZ")
            .map_err(|_| AuthFailure::BadDate)?
            .and_utc();
        let skew = TimeDelta::from_std(self.settings.max_date_skew).unwrap_or(TimeDelta::MAX);
        if (Utc::now() - sent).abs() > skew {
            return Err(AuthFailure::StaleDate);
        }
        Ok(())
    }

    fn check_token(&self, presented: &[u8]) -> Result<(), AuthFailure> {
        let token = std::str::from_utf8(presented).map_err(|_| AuthFailure::BadToken)?;
        let tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match tokens.get(token) {
            Some(expires_at) if *expires_at > Utc::now() => Ok(()),
            _ => Err(AuthFailure::BadToken),
        }
    }

    /// Remembers a new token for 24 hours, forgetting expired ones.
    fn issue_token(&self) -> (String, DateTime<Utc>) {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let now = Utc::now();
        let expires_at = now + TOKEN_LIFETIME;
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(token.clone(), expires_at);
        (token, expires_at)
    }

    fn iam_password_matches(&self, user: &PasswordUser) -> bool {
        let Some((name, password, domain)) = &self.settings.iam_user else {
            return false;
        };
        let password_ok: bool = password
            .expose_secret()
            .as_bytes()
            .ct_eq(user.password.as_bytes())
            .into();
        password_ok && user.name == *name && user.domain.name.as_deref() == Some(domain.as_str())
    }
}

/// The three parts of `SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex`.
#[derive(Debug, PartialEq, Eq)]
struct SignedCredential {
    access: String,
    signed_headers: Vec<String>,
    signature: String,
}

impl SignedCredential {
    fn parse(header: &[u8]) -> Result<Self, AuthFailure> {
        let text = std::str::from_utf8(header).map_err(|_| AuthFailure::Malformed)?;
        let rest = text
            .strip_prefix(signer::ALGORITHM)
            .and_then(|rest| rest.strip_prefix(' '))
            .ok_or(AuthFailure::Malformed)?;
        let mut parts = HashMap::new();
        for part in rest.split(',') {
            let (name, value) = part.trim().split_once('=').ok_or(AuthFailure::Malformed)?;
            parts.insert(name, value);
        }
        let part = |name| parts.get(name).map(|v| v.to_string());
        let (Some(access), Some(signed), Some(signature)) =
            (part("Access"), part("SignedHeaders"), part("Signature"))
        else {
            return Err(AuthFailure::Malformed);
        };
        let signed_headers = signed.split(';').map(str::to_owned).collect();
        Ok(SignedCredential {
            access,
            signed_headers,
            signature,
        })
    }
}

/// The signature the client must have sent, recomputed from what arrived: method, raw path,
/// query pairs (decoded; the signer re-encodes them), the listed headers, the body.
fn expected_signature(
    req: &HttpRequest,
    body: &[u8],
    credential: &SignedCredential,
    date: &str,
    sk: &SecretString,
) -> Result<String, AuthFailure> {
    let headers = credential
        .signed_headers
        .iter()
        .map(|name| {
            header_text(req, name)
                .map(|value| (name.clone(), value))
                .ok_or_else(|| AuthFailure::MissingSignedHeader(name.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let query = query_pairs(req.uri().query().unwrap_or_default());
    // Only an announced hash that was signed may stand in for the body's.
    let payload_hash = signer::payload_hash(&headers, body);
    let (canonical, _) = CanonicalRequest {
        method: req.method().as_str(),
        path: req.uri().path(),
        query: &query,
        headers: &headers,
        payload_hash: &payload_hash,
    }
    .build();
    let to_sign = signer::string_to_sign(date, &canonical);
    Ok(signer::signature(sk.expose_secret(), &to_sign))
}

fn header_text(req: &HttpRequest, name: &str) -> Option<String> {
    let value = req.headers().get(name)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// `a=1&b=x%20y` → `[("a","1"), ("b","x y")]`, in the order sent.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |text: &str| percent_decode_str(text).decode_utf8_lossy().into_owned();
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

fn query_param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ControlPlaneError> {
    serde_json::from_slice(body)
        .map_err(|e| ControlPlaneError::InvalidParameter(format!("request body: {e}")))
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn new_id() -> String {
    Uuid::new_v4().simple().to_string()
}

fn ok_json(body: Value) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .json(body)
}

// ---------------------------------------------------------------------------------------
// IAM: POST /v3/auth/tokens (chapter 2.1)
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct TokenRequest {
    auth: TokenAuth,
}

#[derive(Deserialize)]
struct TokenAuth {
    identity: Identity,
    #[serde(default)]
    scope: Option<Scope>,
}

#[derive(Deserialize)]
struct Identity {
    methods: Vec<String>,
    #[serde(default)]
    password: Option<PasswordIdentity>,
}

#[derive(Deserialize)]
struct PasswordIdentity {
    user: PasswordUser,
}

#[derive(Deserialize)]
struct PasswordUser {
    name: String,
    password: String,
    domain: NameOrId,
}

#[derive(Deserialize)]
struct NameOrId {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Scope {
    #[serde(default)]
    project: Option<NameOrId>,
}

/// Issues a project-scoped token for the configured user; the project may be named by id or
/// by name, both being the project id here.
async fn create_token(
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    let request: TokenRequest = parse_json(&body)?;
    let project_id = &cp.settings.project_id;
    let refused = || ControlPlaneError::IamRefused(project_id.clone());
    let user = match &request.auth.identity.password {
        Some(password)
            if request
                .auth
                .identity
                .methods
                .iter()
                .any(|m| m == "password") =>
        {
            &password.user
        }
        _ => return Err(refused()),
    };
    let project = request.auth.scope.as_ref().and_then(|s| s.project.as_ref());
    let scoped = project.is_some_and(|p| p.id.as_ref().or(p.name.as_ref()) == Some(project_id));
    if !scoped || !cp.iam_password_matches(user) {
        return Err(refused());
    }
    let (token, expires_at) = cp.issue_token();
    Ok(HttpResponse::Created()
        .insert_header(("X-Subject-Token", token))
        .insert_header(CacheControl(vec![CacheDirective::NoStore]))
        .json(json!({"token": {
            "expires_at": expires_at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "issued_at": Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "methods": ["password"],
            "project": {"id": project_id, "name": project_id},
            "user": {"name": user.name, "domain": {"name": user.domain.name}},
        }})))
}

// ---------------------------------------------------------------------------------------
// Phones: chapters 4.3.1 and 4.3.2
// ---------------------------------------------------------------------------------------

/// Query of the phone list.
struct PhoneQuery {
    offset: usize,
    limit: usize,
    server_id: Option<String>,
    status: Option<i32>,
    phone_name: Option<String>,
    phone_type: Option<i32>,
}

impl PhoneQuery {
    fn parse(pairs: &[(String, String)]) -> Result<Self, ControlPlaneError> {
        let (offset, limit) = page(pairs, MAX_PHONE_PAGE)?;
        let status = query_param(pairs, "status")
            .map(|s| s.parse().map_err(|_| ControlPlaneError::BadStatus))
            .transpose()?;
        let phone_type = query_param(pairs, "type")
            .map(|t| {
                t.parse()
                    .map_err(|_| ControlPlaneError::InvalidParameter("type is invalid.".into()))
            })
            .transpose()?;
        Ok(PhoneQuery {
            offset,
            limit,
            server_id: query_param(pairs, "server_id").map(str::to_owned),
            status,
            phone_name: query_param(pairs, "phone_name").map(str::to_owned),
            phone_type,
        })
    }

    /// Every simulated phone is a common one (type 0).
    fn matches(&self, phone: &SimPhone) -> bool {
        self.server_id
            .as_ref()
            .is_none_or(|s| *s == phone.server_id)
            && self.status.is_none_or(|s| s == phone.status)
            && self
                .phone_name
                .as_ref()
                .is_none_or(|n| phone.phone_name.contains(n.as_str()))
            && self.phone_type.is_none_or(|t| t == 0)
    }
}

/// `offset` (default 0) and `limit` (default 100, 1..=max).
fn page(pairs: &[(String, String)], max: usize) -> Result<(usize, usize), ControlPlaneError> {
    let number = |name, default| {
        query_param(pairs, name).map_or(Ok(default), |v| {
            v.parse::<usize>().map_err(|_| ControlPlaneError::BadPage)
        })
    };
    let offset = number("offset", 0)?;
    let limit = number("limit", DEFAULT_PAGE)?;
    if !(1..=max).contains(&limit) {
        return Err(ControlPlaneError::BadPage);
    }
    Ok((offset, limit))
}

async fn list_phones(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body)?;
    let query = PhoneQuery::parse(&query_pairs(req.uri().query().unwrap_or_default()))?;
    let fleet = cp.fleet.lock();
    let matching: Vec<(usize, &SimPhone)> = fleet
        .phones
        .iter()
        .enumerate()
        .filter(|(_, phone)| query.matches(phone))
        .collect();
    let phones: Vec<Value> = matching
        .iter()
        .skip(query.offset)
        .take(query.limit)
        .map(|(index, phone)| phone_summary(phone, *index, &cp.started))
        .collect();
    Ok(ok_json(json!({
        "request_id": request_id::current(),
        "count": matching.len(),
        "phones": phones,
    })))
}

async fn show_phone(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body)?;
    let phone_id = req.match_info().get("phone_id").unwrap_or_default();
    let fleet = cp.fleet.lock();
    let (index, phone) = fleet
        .phones
        .iter()
        .enumerate()
        .find(|(_, phone)| phone.phone_id == phone_id)
        .ok_or(ControlPlaneError::PhoneNotFound)?;
    let mut detail = phone_summary(phone, index, &cp.started);
    if let Value::Object(fields) = &mut detail {
        fields.insert("request_id".into(), request_id::current().into());
        fields.insert("property".into(), property_string(&phone.properties).into());
        fields.insert("access_infos".into(), json!([access_info(index)]));
    }
    Ok(ok_json(detail))
}

/// The fields chapter 4.3.1 lists for a phone. `index` (its place in the fleet) makes up
/// stable addresses and order ids.
fn phone_summary(phone: &SimPhone, index: usize, created: &str) -> Value {
    json!({
        "phone_name": phone.phone_name,
        "server_id": phone.server_id,
        "phone_id": phone.phone_id,
        "phone_model_name": PHONE_MODEL,
        "image_id": IMAGE_ID,
        "vnc_enable": "false",
        "status": phone.status,
        "type": 0,
        "metadata": {"order_id": format!("CS{:015}", index + 1), "product_id": "00301-25217-0--0"},
        "create_time": created,
        "update_time": created,
    })
}

/// Chapter 4.3.2's access details, with both the current and the expired field names.
fn access_info(index: usize) -> Value {
    let phone_ip = format!(
        "10.{}.{}.{}",
        200 + index / 65536,
        index / 256 % 256,
        index % 256
    );
    let server_ip = format!("172.31.{}.{}", index / 16 / 256 % 256, index / 16 % 256);
    json!({
        "type": "server1",
        "phone_ip": phone_ip, "device_ip": phone_ip,
        "server_ip": server_ip, "intranet_ip": server_ip,
        "public_ip": "127.0.0.1", "access_ip": "127.0.0.1",
        "listen_port": 38080,
        "access_port": 10000 + index % 50000,
    })
}

/// The properties as the API shows them: a JSON object serialised into a string.
fn property_string(properties: &BTreeMap<String, String>) -> String {
    let object: Map<String, Value> = properties
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    Value::Object(object).to_string()
}

// ---------------------------------------------------------------------------------------
// Batch operations: chapters 4.3.5–4.3.7 and 4.3.9
// ---------------------------------------------------------------------------------------

type Properties = BTreeMap<String, String>;

/// `{"phones": [{"phone_id", "property"?}]}` of update-property, restart and reset. The
/// property is kept raw so that a bad one fails only its own phone.
#[derive(Deserialize)]
struct PhonesBody {
    phones: Vec<PhoneItem>,
}

#[derive(Deserialize)]
struct PhoneItem {
    phone_id: String,
    #[serde(default)]
    property: Option<Value>,
}

#[derive(Deserialize)]
struct PhoneIdsBody {
    phone_ids: Vec<String>,
}

/// What a job does to its phone when it ends; decided (and validated) when it is accepted.
#[derive(Debug, Clone, PartialEq)]
enum Operation {
    UpdateProperty(Properties),
    /// A restart may set properties too (chapter 4.3.6).
    Restart(Option<Properties>),
    /// A reset restores factory settings: these properties replace all others.
    Reset(Properties),
    Stop,
}

impl Operation {
    fn kind(&self) -> JobKind {
        match self {
            Operation::UpdateProperty(_) => JobKind::UpdateProperty,
            Operation::Restart(_) => JobKind::Restart,
            Operation::Reset(_) => JobKind::Reset,
            Operation::Stop => JobKind::Stop,
        }
    }

    /// The phone's status while the job runs; `None` leaves it as it is.
    fn running_status(&self) -> Option<i32> {
        match self {
            Operation::UpdateProperty(_) => None,
            Operation::Restart(_) => Some(status::RESTARTING),
            Operation::Reset(_) => Some(status::RESETTING),
            Operation::Stop => Some(STOPPING),
        }
    }

    /// Restarts fail always on a `restart_fails` phone, and restarts and resets at the
    /// configured rate.
    fn fails(&self, phone: &SimPhone, failure_rate: f64) -> bool {
        let roll = || rand::random_bool(failure_rate.clamp(0.0, 1.0));
        match self {
            Operation::Restart(_) => phone.faults.restart_fails || roll(),
            Operation::Reset(_) => roll(),
            Operation::UpdateProperty(_) | Operation::Stop => false,
        }
    }

    fn succeed(self, phone: &mut SimPhone) {
        match self {
            Operation::UpdateProperty(properties) => phone.properties.extend(properties),
            Operation::Restart(properties) => {
                phone.properties.extend(properties.unwrap_or_default());
                phone.status = status::RUNNING;
                // A stuck phone stays stuck: only a reset helps it.
                phone.faults.silent = false;
                phone.boots += 1;
            }
            Operation::Reset(properties) => {
                phone.properties = properties;
                phone.status = status::RUNNING;
                phone.faults = PhoneFaults::default();
                phone.boots += 1;
            }
            Operation::Stop => phone.status = STOPPED,
        }
    }

    /// Marks the phone failed; returns the job's `error_msg`.
    fn fail(&self, phone: &mut SimPhone) -> &'static str {
        match self {
            Operation::Restart(_) => {
                phone.status = status::RESTART_FAILED;
                "Service internal error. The phone failed to restart."
            }
            Operation::Reset(_) => {
                phone.status = status::RESET_FAILED;
                "Service internal error. The phone failed to reset."
            }
            Operation::UpdateProperty(_) | Operation::Stop => "Service internal error.",
        }
    }
}

/// `error_code` of a failed job (chapter 7.2: "System error").
const JOB_FAILED: &str = "CPS.0003";

/// One phone of a batch, with the operation to start on it or why none can start.
struct Order {
    phone_id: String,
    operation: Result<Operation, ItemError>,
}

async fn update_property(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body)?;
    let body: PhonesBody = parse_json(&body)?;
    let orders = body.phones.into_iter().map(|item| {
        let operation = match item.property {
            None | Some(Value::Null) => Err(ItemError::MissingProperty),
            Some(property) => parse_property(&property).map(Operation::UpdateProperty),
        };
        Order {
            phone_id: item.phone_id,
            operation,
        }
    });
    cp.run_batch(orders.collect())
}

async fn restart(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body)?;
    let body: PhonesBody = parse_json(&body)?;
    let orders = body.phones.into_iter().map(|item| Order {
        operation: optional_property(item.property).map(Operation::Restart),
        phone_id: item.phone_id,
    });
    cp.run_batch(orders.collect())
}

async fn reset(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body)?;
    let body: PhonesBody = parse_json(&body)?;
    let orders = body.phones.into_iter().map(|item| Order {
        operation: optional_property(item.property)
            .map(|properties| Operation::Reset(properties.unwrap_or_default())),
        phone_id: item.phone_id,
    });
    cp.run_batch(orders.collect())
}

async fn stop(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body)?;
    let body: PhoneIdsBody = parse_json(&body)?;
    let orders = body.phone_ids.into_iter().map(|phone_id| Order {
        phone_id,
        operation: Ok(Operation::Stop),
    });
    cp.run_batch(orders.collect())
}

fn optional_property(property: Option<Value>) -> Result<Option<Properties>, ItemError> {
    match property {
        None | Some(Value::Null) => Ok(None),
        Some(property) => parse_property(&property).map(Some),
    }
}

/// A `property` must be a string holding a JSON object; values are kept as strings (the
/// appendix's integer ones, e.g. `com.cph.mainkeys`, as their decimal text).
fn parse_property(property: &Value) -> Result<Properties, ItemError> {
    let invalid = |why: &str| ItemError::InvalidProperty(why.to_owned());
    let Value::String(text) = property else {
        return Err(invalid("expected a JSON object serialised into a string"));
    };
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Err(invalid("the string is not a JSON object"));
    };
    object
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key, text)),
            Value::Number(number) => Ok((key, number.to_string())),
            Value::Bool(flag) => Ok((key, flag.to_string())),
            _ => Err(invalid(&format!("the value of {key} is not a string"))),
        })
        .collect()
}

impl ControlPlane {
    /// Starts a job per acceptable phone and answers `{"request_id", "jobs": [...]}`, one
    /// entry per phone in the order given. Each job ends `job_delay` later in its own task.
    fn run_batch(&self, orders: Vec<Order>) -> Result<HttpResponse, ControlPlaneError> {
        if orders.is_empty() {
            return Err(ControlPlaneError::NoPhones);
        }
        let request_id = request_id::current();
        let mut started = Vec::new();
        let mut answers = Vec::new();
        {
            let mut fleet = self.fleet.lock();
            for order in orders {
                match accept(&mut fleet, &request_id, &order) {
                    Ok(job_id) => {
                        answers.push(json!({"phone_id": order.phone_id, "job_id": job_id}));
                        if let Ok(operation) = order.operation {
                            started.push((job_id, order.phone_id, operation));
                        }
                    }
                    Err(error) => answers.push(error.answer(&order.phone_id)),
                }
            }
        }
        for (job_id, phone_id, operation) in started {
            self.finish_later(job_id, phone_id, operation);
        }
        Ok(ok_json(json!({"request_id": request_id, "jobs": answers})))
    }

    fn finish_later(&self, job_id: String, phone_id: String, operation: Operation) {
        let fleet = self.fleet.clone();
        let delay = self.settings.job_delay;
        let failure_rate = self.settings.job_failure_rate;
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            finish(
                &mut fleet.lock(),
                &job_id,
                &phone_id,
                operation,
                failure_rate,
            );
        });
    }
}

/// Records a running job for the order's phone and puts the phone in the job's status.
fn accept(fleet: &mut Fleet, request_id: &str, order: &Order) -> Result<String, ItemError> {
    let Some(phone) = fleet.phone_mut(&order.phone_id) else {
        return Err(unknown_phone(&order.phone_id));
    };
    let operation = order.operation.as_ref().map_err(Clone::clone)?;
    if let Some(running) = operation.running_status() {
        phone.status = running;
    }
    let job = SimJob {
        job_id: new_id(),
        request_id: request_id.to_owned(),
        phone_id: order.phone_id.clone(),
        kind: operation.kind(),
        status: job_status::RUNNING,
        begin_time: timestamp(Utc::now()),
        end_time: None,
        error_code: None,
        error_msg: None,
    };
    let job_id = job.job_id.clone();
    fleet.jobs.insert(job_id.clone(), job);
    Ok(job_id)
}

/// Ids are 32 lowercase hex characters; anything else is not even a possible phone.
fn unknown_phone(phone_id: &str) -> ItemError {
    let well_formed = phone_id.len() == 32
        && phone_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if well_formed {
        ItemError::PhoneNotFound
    } else {
        ItemError::InvalidPhoneId
    }
}

/// Ends a job: the phone changes (or fails), the job records the outcome.
fn finish(fleet: &mut Fleet, job_id: &str, phone_id: &str, operation: Operation, rate: f64) {
    let outcome = match fleet.phone_mut(phone_id) {
        None => Err(ItemError::PhoneNotFound.to_string()),
        Some(phone) if operation.fails(phone, rate) => Err(operation.fail(phone).to_owned()),
        Some(phone) => {
            operation.succeed(phone);
            Ok(())
        }
    };
    let Some(job) = fleet.jobs.get_mut(job_id) else {
        return;
    };
    job.end_time = Some(timestamp(Utc::now()));
    match outcome {
        Ok(()) => job.status = job_status::SUCCEEDED,
        Err(message) => {
            job.status = job_status::FAILED;
            job.error_code = Some(JOB_FAILED.to_owned());
            job.error_msg = Some(message);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Jobs: chapters 4.4.1 and 4.4.2
// ---------------------------------------------------------------------------------------

async fn show_job(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body)?;
    let job_id = req.match_info().get("job_id").unwrap_or_default();
    let fleet = cp.fleet.lock();
    let job = fleet
        .jobs
        .get(job_id)
        .ok_or(ControlPlaneError::JobNotFound)?;
    let mut answer = job_json(&fleet, job);
    if let Value::Object(fields) = &mut answer {
        fields.insert("request_id".into(), request_id::current().into());
    }
    Ok(ok_json(answer))
}

/// The jobs of one or more batch requests (`request_ids`, comma-separated, wins over
/// `request_id`), in fleet order of their phones.
async fn list_jobs(
    req: HttpRequest,
    body: web::Bytes,
    cp: web::Data<ControlPlane>,
) -> Result<HttpResponse, ControlPlaneError> {
    cp.admit(&req, &body)?;
    let pairs = query_pairs(req.uri().query().unwrap_or_default());
    let wanted: Vec<&str> = query_param(&pairs, "request_ids")
        .or_else(|| query_param(&pairs, "request_id"))
        .map(|ids| ids.split(',').map(str::trim).collect())
        .ok_or_else(|| ControlPlaneError::InvalidParameter("request_id is missing.".into()))?;
    let (offset, limit) = page(&pairs, MAX_JOB_PAGE)?;
    let fleet = cp.fleet.lock();
    let position = |phone_id: &str| fleet.phones.iter().position(|p| p.phone_id == phone_id);
    let mut jobs: Vec<&SimJob> = fleet
        .jobs
        .values()
        .filter(|job| wanted.contains(&job.request_id.as_str()))
        .collect();
    jobs.sort_by_key(|job| {
        (
            position(&job.phone_id),
            job.begin_time.clone(),
            job.job_id.clone(),
        )
    });
    let jobs: Vec<Value> = jobs
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|job| job_json(&fleet, job))
        .collect();
    Ok(ok_json(
        json!({"request_id": request_id::current(), "jobs": jobs}),
    ))
}

fn job_json(fleet: &Fleet, job: &SimJob) -> Value {
    let server_id = fleet.phone(&job.phone_id).map(|p| p.server_id.as_str());
    json!({
        "job_id": job.job_id,
        "phone_id": job.phone_id,
        "server_id": server_id,
        "status": job.status,
        "begin_time": job.begin_time,
        "end_time": job.end_time,
        "error_code": job.error_code,
        "error_msg": job.error_msg,
        "execute_msg": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_authorization_header_the_sdk_sends() {
        let credential = SignedCredential::parse(
            b"SDK-HMAC-SHA256 Access=AK1, SignedHeaders=content-type;host;x-sdk-date, Signature=abc",
        )
        .unwrap();
        assert_eq!(
            credential,
            SignedCredential {
                access: "AK1".into(),
                signed_headers: vec!["content-type".into(), "host".into(), "x-sdk-date".into()],
                signature: "abc".into(),
            }
        );
        for bad in [
            &b"Bearer x"[..],
            b"SDK-HMAC-SHA256 Access=AK1, Signature=abc",
            b"SDK-HMAC-SHA256 Access=AK1 SignedHeaders=host Signature=abc",
            b"SDK-HMAC-SHA256 \xff",
        ] {
            assert_eq!(SignedCredential::parse(bad), Err(AuthFailure::Malformed));
        }
    }

    #[test]
    fn query_pairs_are_decoded_so_the_signer_can_reencode_them() {
        let pairs = query_pairs("limit=100&name=a%20b%2Fc&flag&&x=");
        assert_eq!(
            pairs,
            [
                ("limit".to_owned(), "100".to_owned()),
                ("name".into(), "a b/c".into()),
                ("flag".into(), "".into()),
                ("x".into(), "".into()),
            ]
        );
        assert_eq!(
            signer::canonical_query(&pairs),
            "flag=&limit=100&name=a%20b%2Fc&x="
        );
    }

    #[test]
    fn a_property_is_a_json_object_in_a_string() {
        let parsed = parse_property(&json!(r#"{"a": "x", "com.cph.mainkeys": 1}"#)).unwrap();
        assert_eq!(parsed["a"], "x");
        assert_eq!(parsed["com.cph.mainkeys"], "1");
        for bad in [
            json!({"a": "x"}),
            json!("[1]"),
            json!("{"),
            json!(r#"{"a": {}}"#),
        ] {
            assert!(
                matches!(parse_property(&bad), Err(ItemError::InvalidProperty(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_phone_ids_differ_from_unknown_ones() {
        assert_eq!(unknown_phone(&"0".repeat(32)), ItemError::PhoneNotFound);
        assert_eq!(unknown_phone("nope"), ItemError::InvalidPhoneId);
    }

    #[test]
    fn restart_clears_silence_but_not_stuck_and_reset_clears_everything() {
        let mut fleet = Fleet::new(1, 7);
        let phone = &mut fleet.phones[0];
        phone.faults = PhoneFaults {
            silent: true,
            stuck: true,
            restart_fails: false,
        };
        phone.properties.insert("old".into(), "1".into());
        Operation::Restart(None).succeed(phone);
        assert_eq!(
            (phone.faults.silent, phone.faults.stuck, phone.boots),
            (false, true, 1)
        );
        Operation::Reset(Properties::from([("new".into(), "2".into())])).succeed(phone);
        assert_eq!(phone.faults, PhoneFaults::default());
        assert_eq!(
            phone.properties,
            Properties::from([("new".into(), "2".into())])
        );
        assert_eq!(phone.boots, 2);
    }
}
