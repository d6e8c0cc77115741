//! How requests prove who sends them: AK/SK signatures, or an IAM token (chapter 2.2).

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use tokio::sync::Mutex;

use super::CphError;
use crate::config::CphAuthSettings;

pub enum Auth {
    AkSk { ak: String, sk: SecretString },
    Iam(IamTokens),
}

impl Auth {
    pub fn from_settings(
        settings: &CphAuthSettings,
        project_id: &str,
        http: reqwest::Client,
    ) -> Result<Auth, CphError> {
        match (&settings.ak, &settings.sk) {
            (Some(ak), Some(sk)) => Ok(Auth::AkSk {
                ak: ak.clone(),
                sk: sk.clone(),
            }),
            (Some(_), None) | (None, Some(_)) => Err(CphError::Config(
                "cph.auth.ak and cph.auth.sk go together".into(),
            )),
            (None, None) => IamTokens::from_settings(settings, project_id, http).map(Auth::Iam),
        }
    }
}

/// A project-scoped IAM token, fetched once and reused until shortly before it expires
/// (tokens live 24 h; fetching one per call would hammer IAM).
pub struct IamTokens {
    http: reqwest::Client,
    url: String,
    request_body: SecretString,
    refresh_margin: Duration,
    cached: Mutex<Option<CachedToken>>,
}

struct CachedToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

impl IamTokens {
    fn from_settings(
        settings: &CphAuthSettings,
        project_id: &str,
        http: reqwest::Client,
    ) -> Result<Self, CphError> {
        let missing = || {
            CphError::Config(
                "set cph.auth.ak and cph.auth.sk, or cph.auth.iam_endpoint, username, password and domain".into(),
            )
        };
        let endpoint = settings.iam_endpoint.as_ref().ok_or_else(missing)?;
        let username = settings.username.as_ref().ok_or_else(missing)?;
        let password = settings.password.as_ref().ok_or_else(missing)?;
        let domain = settings.domain.as_ref().ok_or_else(missing)?;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": username, "password": password.expose_secret(), "domain": {"name": domain}}}},
            "scope": {"project": {"id": project_id}}
        }});
        Ok(IamTokens {
            http,
            url: format!("{}/v3/auth/tokens", endpoint.trim_end_matches('/')),
            request_body: body.to_string().into(),
            refresh_margin: Duration::from_secs(settings.token_refresh_margin_secs),
            cached: Mutex::new(None),
        })
    }

    /// The cached token, or a new one if none is cached or it expires within the margin.
    pub async fn token(&self) -> Result<SecretString, CphError> {
        let mut cached = self.cached.lock().await;
        let margin = chrono::TimeDelta::from_std(self.refresh_margin).unwrap_or_default();
        if let Some(token) = cached
            .as_ref()
            .filter(|t| t.expires_at - margin > Utc::now())
        {
            return Ok(token.token.clone());
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token (after a 401), so the next call fetches a new one.
    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }

    async fn fetch(&self) -> Result<CachedToken, CphError> {
        let res = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json;charset=utf-8")
            .body(self.request_body.expose_secret().to_owned())
            .send()
            .await
            .map_err(|e| CphError::Token(format!("request failed: {e}")))?;
        let status = res.status();
        let token = res
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(|v| SecretString::from(v.to_owned()));
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        let (Some(token), true) = (token, status.is_success()) else {
            return Err(CphError::Token(format!(
                "IAM answered {status} without X-Subject-Token"
            )));
        };
        let expires_at = body["token"]["expires_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| CphError::Token("IAM answer lacks token.expires_at".into()))?;
        Ok(CachedToken { token, expires_at })
    }
}
