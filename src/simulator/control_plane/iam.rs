//! IAM: POST /v3/auth/tokens (chapter 2.1): a project-scoped token for the configured
//! password user, checked afterwards by `auth.rs`.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{HttpResponse, web};
use chrono::Utc;
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::auth::ControlPlane;
use super::error::ControlPlaneError;
use super::wire::parse_json;

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
pub(super) async fn create_token(
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

impl ControlPlane {
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
