//! The secrets minted per session. None of them prints: `Debug` is redacted by hand or by
//! `secrecy`, and they are never logged.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

use crate::config::Cipher;

/// A ticket: 32 random bytes, URL-safe base64 without padding (43 characters).
pub struct Ticket(SecretString);

impl Ticket {
    pub const MAX_LEN: usize = 256;

    fn mint() -> Ticket {
        let bytes: [u8; 32] = rand::random();
        Ticket(URL_SAFE_NO_PAD.encode(bytes).into())
    }

    /// A ticket as presented in a sign check; only its length is checked.
    pub fn presented(text: String) -> Option<Ticket> {
        (!text.is_empty() && text.len() <= Self::MAX_LEN).then(|| Ticket(text.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// What the store keeps: SHA-256, hex. Compared in constant time at sign check.
    pub fn hash_hex(&self) -> String {
        hex::encode(Sha256::digest(self.expose().as_bytes()))
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket([REDACTED])")
    }
}

/// An AES key, 16 or 32 bytes (`access.cipher`). A key minted under another cipher
/// setting stays as long as it was minted; the cipher refuses it if it does not fit.
#[derive(Clone)]
pub struct AesKey(Vec<u8>);

impl AesKey {
    fn mint(cipher: Cipher) -> AesKey {
        let bytes: [u8; 32] = rand::random();
        AesKey(bytes[..cipher.key_bytes()].to_vec())
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The store's form, independent of the configured encoding.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    pub fn from_hex(text: &str) -> Option<AesKey> {
        let bytes = hex::decode(text).ok()?;
        matches!(bytes.len(), 16 | 32).then_some(AesKey(bytes))
    }
}

impl fmt::Debug for AesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AesKey([REDACTED])")
    }
}

/// Everything minted for one session.
#[derive(Debug)]
pub struct MintedAccess {
    /// 32 lowercase hex characters.
    pub session_id: String,
    pub ticket: Ticket,
    pub aes_key: AesKey,
}

impl MintedAccess {
    /// The key has the size `cipher` takes. The IV is not minted: the SDK picks one per
    /// sign check and sends it as `aes_iv` (6.1).
    pub fn mint(cipher: Cipher) -> MintedAccess {
        MintedAccess {
            session_id: uuid::Uuid::new_v4().simple().to_string(),
            ticket: Ticket::mint(),
            aes_key: AesKey::mint(cipher),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GcmIv, KeySize};

    const DEFAULT: Cipher = Cipher::Gcm {
        key: KeySize::Aes256,
        iv: GcmIv::Twelve,
    };

    #[test]
    fn minted_values_have_the_documented_shape() {
        let a = MintedAccess::mint(DEFAULT);
        let b = MintedAccess::mint(DEFAULT);
        assert_eq!(a.session_id.len(), 32);
        assert!(
            a.session_id
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(a.ticket.expose().len(), 43);
        assert!(
            a.ticket
                .expose()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a.ticket.expose(), b.ticket.expose());
        assert_ne!(a.aes_key.bytes(), b.aes_key.bytes());
        assert_eq!(
            AesKey::from_hex(&a.aes_key.to_hex()).unwrap().bytes(),
            a.aes_key.bytes()
        );
    }

    #[test]
    fn the_key_has_the_size_of_the_configured_cipher() {
        let short = MintedAccess::mint(Cipher::Cbc {
            key: KeySize::Aes128,
        });
        assert_eq!(short.aes_key.bytes().len(), 16);
        assert_eq!(MintedAccess::mint(DEFAULT).aes_key.bytes().len(), 32);
        assert!(AesKey::from_hex(&"ab".repeat(24)).is_none());
    }

    #[test]
    fn debug_output_reveals_no_secret() {
        let a = MintedAccess::mint(DEFAULT);
        let printed = format!("{a:?}");
        assert!(!printed.contains(a.ticket.expose()));
        assert!(!printed.contains(&a.aes_key.to_hex()));
        assert!(printed.contains("REDACTED"));
    }
}
