//! `[webhooks]`: the endpoints cphub pushes its facts to, and how it retries
//! (docs/webhooks.md). Secrets are parsed here, once, into bytes that never print.

use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretBox};
use serde::{Deserialize, Deserializer};

use super::{ConfigError, positive};
use crate::domain::WebhookEventType;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub endpoints: Vec<WebhookEndpoint>,
    /// Seconds to wait before each attempt: the first entry before the first attempt.
    pub retry_schedule_secs: Vec<u64>,
    #[serde(deserialize_with = "positive")]
    pub timeout_ms: u64,
    #[serde(deserialize_with = "positive")]
    pub concurrency: u64,
    #[serde(deserialize_with = "positive")]
    pub poll_interval_ms: u64,
    #[serde(deserialize_with = "positive")]
    pub max_payload_bytes: u64,
    pub retention_days: u64,
    /// 0: no `session.tick`.
    pub tick_interval_secs: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpoint {
    pub name: String,
    pub url: String,
    pub secrets: Vec<WebhookSecret>,
    /// Empty: every type.
    #[serde(default)]
    pub events: Vec<WebhookEventType>,
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

// The URL may carry a credential (userinfo, a token in the query): never printed, as the
// secrets are not; the name says which endpoint it is.
impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("name", &self.name)
            .field("url", &"[REDACTED]")
            .field("secrets", &self.secrets)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .finish()
    }
}

/// A `whsec_…` signing secret: its key bytes. `env:NAME` in the configuration reads the
/// secret from the environment variable NAME, so it need not sit in a file.
#[derive(Clone)]
pub struct WebhookSecret(std::sync::Arc<SecretBox<Vec<u8>>>);

impl WebhookSecret {
    pub fn key(&self) -> &[u8] {
        self.0.expose_secret()
    }

    /// `whsec_` and the base64 of the key, as Standard Webhooks gives them out: padded or
    /// not, as the reference library takes either (it pads what it is given).
    pub fn parse(text: &str) -> Result<WebhookSecret, String> {
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        const PADDED_OR_NOT: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let encoded = text
            .strip_prefix("whsec_")
            .ok_or("a secret must start with whsec_")?;
        let key = PADDED_OR_NOT
            .decode(encoded)
            .map_err(|_| "the part after whsec_ is not base64")?;
        if key.len() < 24 {
            return Err("a secret must hold at least 24 bytes".into());
        }
        Ok(WebhookSecret(std::sync::Arc::new(SecretBox::new(
            Box::new(key),
        ))))
    }
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl<'de> Deserialize<'de> for WebhookSecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let text = match raw.strip_prefix("env:") {
            Some(name) => std::env::var(name).map_err(|_| {
                serde::de::Error::custom(format!("environment variable {name} is not set"))
            })?,
            None => raw,
        };
        WebhookSecret::parse(text.trim()).map_err(serde::de::Error::custom)
    }
}

impl WebhookSettings {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The endpoints that are on.
    pub fn enabled_endpoints(&self) -> impl Iterator<Item = &WebhookEndpoint> {
        self.endpoints.iter().filter(|e| e.enabled)
    }

    /// Whether the endpoint named `name` is configured and on.
    pub fn is_enabled(&self, name: &str) -> bool {
        self.enabled_endpoints().any(|e| e.name == name)
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: String| Err(ConfigError::Inconsistent { key, reason });
        if self.retry_schedule_secs.is_empty() {
            return invalid(
                "webhooks.retry_schedule_secs",
                "give at least one attempt".into(),
            );
        }
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if let Some((key, reason)) = endpoint.problem() {
                return invalid(key, format!("endpoint {i} ({:?}): {reason}", endpoint.name));
            }
            if self.endpoints[..i].iter().any(|e| e.name == endpoint.name) {
                let reason = format!("endpoint name {:?} is used twice", endpoint.name);
                return invalid("webhooks.endpoints.name", reason);
            }
        }
        Ok(())
    }
}

impl WebhookEndpoint {
    /// What a name may be: 1 to 64 letters, digits, - or _.
    pub fn plain_name(name: &str) -> bool {
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        !name.is_empty() && name.len() <= 64 && name.chars().all(plain)
    }

    /// The name is a metric label and a path segment: short, plain. The URL must be one
    /// reqwest can send to, over HTTP(S) (reqwest's `Url` is this `url::Url`).
    fn problem(&self) -> Option<(&'static str, String)> {
        if !Self::plain_name(&self.name) {
            let reason = "1 to 64 letters, digits, - or _".to_owned();
            return Some(("webhooks.endpoints.name", reason));
        }
        match url::Url::parse(&self.url) {
            Ok(url) if ["http", "https"].contains(&url.scheme()) => {}
            Ok(_) => return Some(("webhooks.endpoints.url", "not http(s)".into())),
            Err(e) => return Some(("webhooks.endpoints.url", e.to_string())),
        }
        if self.secrets.is_empty() {
            let reason = "at least one whsec_ secret".to_owned();
            return Some(("webhooks.endpoints.secrets", reason));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, Settings};

    fn key_refused(endpoint: &str) -> String {
        let toml = format!("[webhooks]\nendpoints = [{endpoint}]\n");
        match Settings::with_overrides(&toml) {
            Err(ConfigError::Inconsistent { key, .. }) => key.to_owned(),
            Err(other) => other.to_string(),
            Ok(_) => panic!("accepted: {endpoint}"),
        }
    }

    /// Standard Webhooks' reference library pads a secret it is given: one handed out
    /// without its `=` is the same key.
    #[test]
    fn a_secret_without_its_padding_is_the_same_key() {
        let padded =
            super::WebhookSecret::parse("whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=").unwrap();
        let bare =
            super::WebhookSecret::parse("whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24").unwrap();
        assert_eq!(padded.key(), b"second-secret-for-rotation");
        assert_eq!(bare.key(), padded.key());
        assert!(super::WebhookSecret::parse("whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb2=").is_err());
    }

    /// Neither the URL (it may carry a credential) nor the secret shows in `Debug`.
    #[test]
    fn an_endpoints_debug_shows_neither_its_url_nor_its_secret() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let toml = format!(
            "[webhooks]\nendpoints = [{{ name = \"billing\", \
             url = \"http://user:pw-1@billing.local/hook?token=tok-1\", secrets = [\"{secret}\"] }}]\n"
        );
        let settings = Settings::with_overrides(&toml).unwrap();
        let printed = format!("{:?}", settings.webhooks.endpoints[0]);
        assert!(printed.contains("billing"), "{printed}");
        for hidden in ["pw-1", "tok-1", "billing.local", "MfKQ9r8G"] {
            assert!(!printed.contains(hidden), "{hidden} in {printed}");
        }
    }

    #[test]
    fn an_invalid_endpoint_stops_start_up_naming_the_key() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let cases = [
            (
                format!("{{ name = \"a b\", url = \"http://x\", secrets = [\"{secret}\"] }}"),
                "webhooks.endpoints.name",
            ),
            (
                format!("{{ name = \"a\", url = \"ftp://x\", secrets = [\"{secret}\"] }}"),
                "webhooks.endpoints.url",
            ),
            (
                "{ name = \"a\", url = \"http://x\", secrets = [] }".to_owned(),
                "webhooks.endpoints.secrets",
            ),
            (
                "{ name = \"a\", url = \"http://x\", secrets = [\"sk_nope\"] }".to_owned(),
                "whsec_",
            ),
            (
                "{ name = \"a\", url = \"http://x\", secrets = [\"env:CPHUB_TEST_UNSET_9\"] }"
                    .to_owned(),
                "CPHUB_TEST_UNSET_9",
            ),
            (
                format!(
                    "{{ name = \"a\", url = \"http://x\", secrets = [\"{secret}\"], \
                      events = [\"session.paused\"] }}"
                ),
                "session.paused",
            ),
        ];
        for (endpoint, expected) in cases {
            let said = key_refused(&endpoint);
            assert!(said.contains(expected), "{endpoint}: {said}");
        }
    }

    #[test]
    fn a_secret_never_prints() {
        let toml = "[webhooks]\nendpoints = [{ name = \"a\", url = \"http://x\", \
                    secrets = [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"] }]\n";
        let settings = Settings::with_overrides(toml).unwrap();
        let printed = format!("{:?}", settings.webhooks);
        assert!(!printed.contains("MfKQ9r8G"), "{printed}");
        assert!(printed.contains("REDACTED"));
    }
}
