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
/// (tokens live 24 h; fetching one per call would hammer IAM, chapter 3's note). After a
/// failed fetch IAM is not asked again for a while: every CPH call (phone sync, the
/// watchdog, rollouts, job polls) needs a token, and asking once each with a wrong
/// password would lock the IAM user out (the reference is silent on IAM's lockout; Huawei
/// IAM locks a user after a few wrong passwords in a row).
pub struct IamTokens {
    http: reqwest::Client,
    url: String,
    request_body: SecretString,
    refresh_margin: Duration,
    state: Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    cached: Option<CachedToken>,
    paused: Option<Paused>,
}

struct CachedToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

/// The last fetches failed: calls answer the failure without asking IAM before `until`.
struct Paused {
    until: tokio::time::Instant,
    /// Failed fetches in a row of this kind (a refusal, or an outage): a change of kind
    /// counts from one again.
    failures: u32,
    refusal: bool,
    why: String,
}

/// How long before its expiry a token is still used while IAM cannot renew it (the renewal
/// starts `cph.auth.token_refresh_margin_secs` before, an hour by default).
const STILL_VALID: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// Why a fetch failed, and whether IAM itself refused it (a 4xx but 429: the credentials,
/// the user or the project), which only a person can change.
struct FetchFailure {
    why: String,
    refused: bool,
}

impl FetchFailure {
    /// How long IAM is left alone after `failures` failed fetches in a row: a refusal
    /// 5 min, doubling to 1 h (a handful of tries an hour, never a lockout's worth); an
    /// outage (no answer, a 5xx) 5 s, doubling to 5 min.
    fn pause(&self, failures: u32) -> Duration {
        let (first, most) = match self.refused {
            true => (Duration::from_secs(300), Duration::from_secs(3600)),
            false => (Duration::from_secs(5), Duration::from_secs(300)),
        };
        let doubled = first.saturating_mul(1 << failures.saturating_sub(1).min(16));
        doubled.min(most)
    }
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
            state: Mutex::new(TokenState::default()),
        })
    }

    /// The cached token, or a new one if none is cached or it expires within the margin.
    /// While IAM is left alone after failed fetches, and when a renewal fails, a token still
    /// valid for [`STILL_VALID`] is used; without one, the last failure, without asking.
    pub async fn token(&self) -> Result<SecretString, CphError> {
        let mut state = self.state.lock().await;
        let margin = chrono::TimeDelta::from_std(self.refresh_margin).unwrap_or_default();
        let now = Utc::now();
        let valid_for = |within| (state.cached.as_ref()).filter(|t| t.expires_at - within > now);
        if let Some(token) = valid_for(margin) {
            return Ok(token.token.clone());
        }
        let still_valid = valid_for(STILL_VALID).map(|t| t.token.clone());
        if let Some(paused) = (state.paused.as_ref()).filter(|p| p.until > tokio::time::Instant::now()) {
            if let Some(token) = still_valid {
                return Ok(token);
            }
            let left = paused.until - tokio::time::Instant::now();
            return Err(CphError::Token(format!(
                "{}; IAM not asked again for {} s (failed fetches in a row: {})",
                paused.why,
                left.as_secs_f64().ceil(),
                paused.failures
            )));
        }
        match self.fetch().await {
            Ok(fresh) => {
                let token = fresh.token.clone();
                *state = TokenState {
                    cached: Some(fresh),
                    paused: None,
                };
                Ok(token)
            }
            Err(failure) => {
                let failures = match &state.paused {
                    Some(paused) if paused.refusal == failure.refused => paused.failures + 1,
                    _ => 1,
                };
                let pause = failure.pause(failures);
                tracing::warn!(failures, pause_secs = pause.as_secs(), why = %failure.why, renewing = still_valid.is_some(), "no IAM token; IAM is left alone for a while");
                state.paused = Some(Paused {
                    until: tokio::time::Instant::now() + pause,
                    failures,
                    refusal: failure.refused,
                    why: failure.why.clone(),
                });
                still_valid.ok_or(CphError::Token(failure.why))
            }
        }
    }

    /// Forgets the cached token (after a 401), so the next call fetches a new one.
    pub async fn invalidate(&self) {
        self.state.lock().await.cached = None;
    }

    async fn fetch(&self) -> Result<CachedToken, FetchFailure> {
        let outage = |why: String| FetchFailure {
            why,
            refused: false,
        };
        let res = self
            .http
            .post(&self.url)
            .header("Content-Type", "application/json;charset=utf-8")
            .body(self.request_body.expose_secret().to_owned())
            .send()
            .await
            .map_err(|e| outage(format!("request failed: {e}")))?;
        let status = res.status();
        let token = res
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(|v| SecretString::from(v.to_owned()));
        let body: serde_json::Value = res.json().await.unwrap_or_default();
        let (Some(token), true) = (token, status.is_success()) else {
            return Err(FetchFailure {
                why: format!("IAM answered {status} without X-Subject-Token"),
                // A 429 is IAM's throttle, not a verdict on the login: an outage.
                refused: status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS,
            });
        };
        let expires_at = body["token"]["expires_at"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(|| outage("IAM answer lacks token.expires_at".into()))?;
        Ok(CachedToken { token, expires_at })
    }
}
