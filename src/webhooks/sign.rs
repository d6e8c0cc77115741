//! Standard Webhooks signatures (standardwebhooks.com): `v1,` and the base64 HMAC-SHA256 of
//! `id.timestamp.body` under each secret, space-separated, so a receiver holding either the
//! old or the new secret verifies during a rotation.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::WebhookSecret;

/// The `webhook-signature` header for `body` sent as message `id` at `timestamp` (epoch
/// seconds, the `webhook-timestamp` header).
pub fn signature(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    let one = |secret: &WebhookSecret| {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(secret.key()).expect("HMAC takes any key length");
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        let tag = mac.finalize().into_bytes();
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(tag)
        )
    };
    secrets.iter().map(one).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks reference libraries' test suites
    /// (`whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw`, message `msg_p5jXN8AQM9LWM0D4loKWxJek`,
    /// timestamp 1614265330, body `{"test": 2432232314}`).
    #[test]
    fn signs_as_the_standard_webhooks_reference_example() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signed = signature(
            &[secret],
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn each_secret_signs_side_by_side() {
        let old = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let new = WebhookSecret::parse("whsec_c2Vjb25kLXNlY3JldC1mb3Itcm90YXRpb24=").unwrap();
        let both = signature(&[old.clone(), new.clone()], "evt_1", 1, b"{}");
        let parts: Vec<_> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], signature(&[old], "evt_1", 1, b"{}"));
        assert_eq!(parts[1], signature(&[new], "evt_1", 1, b"{}"));
        assert_ne!(parts[0], parts[1]);
    }
}
