//! Whether `encrypted_data` decrypts under the session key and the presented `aes_iv`
//! (6.1 says only that it is "internal encrypted data of SDK"; the cipher is not
//! published, hence `access.cipher`). The plaintext carries nothing cphub needs: the check
//! is that the caller holds the key.

use aes::{Aes128 as Aes128Block, Aes256 as Aes256Block};
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{Aead, KeyInit, Nonce};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, KeyIvInit};

use crate::config::{Cipher, GcmIv, KeySize};

/// False for a key or IV of the wrong length too: nothing here panics on input.
pub fn decrypts(cipher: Cipher, key: &[u8], iv: &[u8], data: &[u8]) -> bool {
    use {GcmIv::*, KeySize::*};
    match cipher {
        Cipher::Gcm {
            key: Aes128,
            iv: Twelve,
        } => gcm::<AesGcm<Aes128Block, U12>>(key, iv, data),
        Cipher::Gcm {
            key: Aes128,
            iv: Sixteen,
        } => gcm::<AesGcm<Aes128Block, U16>>(key, iv, data),
        Cipher::Gcm {
            key: Aes256,
            iv: Twelve,
        } => gcm::<AesGcm<Aes256Block, U12>>(key, iv, data),
        Cipher::Gcm {
            key: Aes256,
            iv: Sixteen,
        } => gcm::<AesGcm<Aes256Block, U16>>(key, iv, data),
        Cipher::Cbc { key: Aes128 } => cbc::<cbc::Decryptor<Aes128Block>>(key, iv, data),
        Cipher::Cbc { key: Aes256 } => cbc::<cbc::Decryptor<Aes256Block>>(key, iv, data),
    }
}

/// The GCM tag authenticates the data under the key and IV.
fn gcm<A: KeyInit + Aead>(key: &[u8], iv: &[u8], data: &[u8]) -> bool {
    let (Ok(cipher), Ok(nonce)) = (A::new_from_slice(key), Nonce::<A>::try_from(iv)) else {
        return false;
    };
    cipher.decrypt(&nonce, data).is_ok()
}

/// Only that the PKCS#7 padding of the last block decodes: about one wrong key in 256
/// passes, which is why CBC is documented as the weaker check.
fn cbc<D: KeyIvInit + BlockModeDecrypt>(key: &[u8], iv: &[u8], data: &[u8]) -> bool {
    let Ok(decryptor) = D::new_from_slices(key, iv) else {
        return false;
    };
    let mut buffer = data.to_vec();
    decryptor.decrypt_padded::<Pkcs7>(&mut buffer).is_ok()
}
