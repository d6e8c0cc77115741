//! The control plane's state and how requests are authenticated: AK/SK `SDK-HMAC-SHA256`
//! signatures recomputed from what arrived (`tools/huawei-sdk/SIGNER.md`), and the IAM tokens
//! issued by `iam.rs` (chapter 2.2).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use actix_web::HttpRequest;
use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::ControlPlaneSettings;
use super::error::{AuthFailure, ControlPlaneError};
use super::faults::Operation;
use super::wire::query_pairs;
use crate::cph::signer::{self, CanonicalRequest};
use crate::simulator::fleet::SharedFleet;

/// IAM tokens live 24 hours (chapter 2.2).
const TOKEN_LIFETIME: TimeDelta = TimeDelta::hours(24);

pub(super) struct ControlPlane {
    pub(super) settings: ControlPlaneSettings,
    pub(super) fleet: SharedFleet,
    /// IAM tokens issued here, with their expiry.
    tokens: Mutex<HashMap<String, DateTime<Utc>>>,
    /// The phones' creation times are made up from it (`phones.rs`).
    pub(super) started: DateTime<Utc>,
}

impl ControlPlane {
    pub(super) fn new(settings: ControlPlaneSettings, fleet: SharedFleet) -> Self {
        ControlPlane {
            settings,
            fleet,
            tokens: Mutex::new(HashMap::new()),
            started: Utc::now(),
        }
    }

    /// Authenticates the request, checks that it is for this project, then applies the
    /// account-wide faults asked for (`faults.rs`): arrears (CPS.0006) before a system error
    /// (CPS.0003). Every `/v1` handler starts with this.
    pub(super) fn admit(
        &self,
        req: &HttpRequest,
        body: &[u8],
        operation: Operation,
    ) -> Result<(), ControlPlaneError> {
        self.authenticate(req, body)?;
        let project = req.match_info().get("project_id").unwrap_or_default();
        if project != self.settings.project_id {
            return Err(ControlPlaneError::WrongProject(project.to_owned()));
        }
        let faults = &self.settings.faults;
        if faults.in_arrears() {
            return Err(ControlPlaneError::Arrears);
        }
        if faults.take_system_error(operation) {
            return Err(ControlPlaneError::SystemError);
        }
        if faults.take_invalid_request(operation) {
            let what = "the request is refused (a fault asked for).";
            return Err(ControlPlaneError::InvalidParameter(what.to_owned()));
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
    pub(super) fn issue_token(&self) -> (String, DateTime<Utc>) {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let now = Utc::now();
        let expires_at = now + TOKEN_LIFETIME;
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        tokens.retain(|_, expiry| *expiry > now);
        tokens.insert(token.clone(), expires_at);
        (token, expires_at)
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
}
