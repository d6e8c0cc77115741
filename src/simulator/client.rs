//! The player's client SDK as the sign check (6.1) sees it: something sealed under the
//! session key with a fresh IV. The reference calls `encrypted_data` "internal encrypted
//! data of SDK" and publishes neither cipher nor encodings; cphub makes both configurable
//! (`[access]`, `[access.cipher]`), and the simulated clients seal as that configuration
//! says, so a fleet simulated against a cphub that enforces a non-default cipher still
//! plays.

use crate::access::{decode, encode, encrypt};
use crate::config::{AccessSettings, Cipher, Encoding, GcmIv, KeySize};

/// What the client seals with, and how it writes what it sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSeal {
    pub cipher: Cipher,
    /// How the minted `aes_key` is written (`access.key_encoding`).
    pub key_encoding: Encoding,
    pub iv_encoding: Encoding,
    pub data_encoding: Encoding,
}

impl Default for ClientSeal {
    /// cphub's defaults (config/default.toml): AES-256-GCM with a 12-byte IV, hex key and
    /// IV, base64 data.
    fn default() -> Self {
        ClientSeal {
            cipher: Cipher::Gcm {
                key: KeySize::Aes256,
                iv: GcmIv::Twelve,
            },
            key_encoding: Encoding::Hex,
            iv_encoding: Encoding::Hex,
            data_encoding: Encoding::Base64,
        }
    }
}

impl From<&AccessSettings> for ClientSeal {
    fn from(access: &AccessSettings) -> Self {
        ClientSeal {
            cipher: access.cipher,
            key_encoding: access.key_encoding,
            iv_encoding: access.iv_encoding,
            data_encoding: access.data_encoding,
        }
    }
}

const HELLO: &[u8] = b"cphub simulator client hello";

impl ClientSeal {
    /// `encrypted_data` and `aes_iv` for a session minted with `aes_key`; None when the key
    /// is not one of this configuration (wrong encoding or length).
    pub fn seal(&self, aes_key: &str) -> Option<(String, String)> {
        let key = decode(self.key_encoding, aes_key)?;
        let iv: Vec<u8> = (0..self.cipher.iv_bytes()).map(|_| rand::random()).collect();
        let sealed = encrypt(self.cipher, &key, &iv, HELLO)?;
        Some((
            encode(self.data_encoding, &sealed),
            encode(self.iv_encoding, &iv),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::decrypts;

    /// Every cipher and encoding cphub accepts opens what the client sealed, and only
    /// under the session's key.
    #[test]
    fn what_the_client_seals_decrypts_under_every_cipher_cphub_takes() {
        use {GcmIv::*, KeySize::*};
        let ciphers = [
            Cipher::Gcm { key: Aes128, iv: Twelve },
            Cipher::Gcm { key: Aes128, iv: Sixteen },
            Cipher::Gcm { key: Aes256, iv: Twelve },
            Cipher::Gcm { key: Aes256, iv: Sixteen },
            Cipher::Cbc { key: Aes128 },
            Cipher::Cbc { key: Aes256 },
        ];
        for cipher in ciphers {
            for encoding in [Encoding::Hex, Encoding::Base64] {
                let seal = ClientSeal {
                    cipher,
                    key_encoding: encoding,
                    iv_encoding: encoding,
                    data_encoding: encoding,
                };
                let key: Vec<u8> = (0..cipher.key_bytes() as u8).collect();
                let (data, iv) = seal.seal(&encode(encoding, &key)).expect("sealed");
                let (data, iv) = (decode(encoding, &data).unwrap(), decode(encoding, &iv).unwrap());
                assert_eq!(iv.len(), cipher.iv_bytes(), "{cipher:?}");
                assert!(decrypts(cipher, &key, &iv, &data), "{cipher:?} {encoding:?}");
                if matches!(cipher, Cipher::Gcm { .. }) {
                    let other = vec![7u8; key.len()];
                    assert!(!decrypts(cipher, &other, &iv, &data), "{cipher:?}");
                }
            }
        }
        let short = ClientSeal::default().seal(&hex::encode([1u8; 16]));
        assert_eq!(short, None, "a 16-byte key is not AES-256's");
    }
}
