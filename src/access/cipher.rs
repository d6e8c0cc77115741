//! Whether `encrypted_data` decrypts under the session key and the presented `aes_iv`
//! (6.1 says only that it is "internal encrypted data of SDK"; the cipher is not
//! published, hence `access.cipher`). The plaintext carries nothing cphub needs: the check
//! is that the caller holds the key.

use aes::{Aes128 as Aes128Block, Aes256 as Aes256Block};
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aead::{Aead, KeyInit, Nonce};
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{
    BlockCipherDecrypt, BlockCipherEncrypt, BlockModeDecrypt, BlockModeEncrypt, KeyIvInit,
};

use crate::config::{Cipher, GcmIv, KeySize};

/// False for a key or IV of the wrong length too: nothing here panics on input.
pub fn decrypts(cipher: Cipher, key: &[u8], iv: &[u8], data: &[u8]) -> bool {
    through::<Open>(cipher, key, iv, data)
}

/// What a client holding the key sends (the simulator's clients): `decrypts` opens it.
/// None for a key or IV of the wrong length.
pub fn encrypt(cipher: Cipher, key: &[u8], iv: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
    through::<Seal>(cipher, key, iv, plain)
}

/// One way through a cipher; `through` names the types once for both ways, so what is
/// sealed and what is opened cannot drift apart.
trait Way {
    type Output;
    fn gcm<A: KeyInit + Aead>(key: &[u8], iv: &[u8], data: &[u8]) -> Self::Output;
    fn cbc<B>(key: &[u8], iv: &[u8], data: &[u8]) -> Self::Output
    where
        B: BlockCipherEncrypt + BlockCipherDecrypt + KeyInit;
}

fn through<W: Way>(cipher: Cipher, key: &[u8], iv: &[u8], data: &[u8]) -> W::Output {
    use {GcmIv::*, KeySize::*};
    match cipher {
        Cipher::Gcm {
            key: Aes128,
            iv: Twelve,
        } => W::gcm::<AesGcm<Aes128Block, U12>>(key, iv, data),
        Cipher::Gcm {
            key: Aes128,
            iv: Sixteen,
        } => W::gcm::<AesGcm<Aes128Block, U16>>(key, iv, data),
        Cipher::Gcm {
            key: Aes256,
            iv: Twelve,
        } => W::gcm::<AesGcm<Aes256Block, U12>>(key, iv, data),
        Cipher::Gcm {
            key: Aes256,
            iv: Sixteen,
        } => W::gcm::<AesGcm<Aes256Block, U16>>(key, iv, data),
        Cipher::Cbc { key: Aes128 } => W::cbc::<Aes128Block>(key, iv, data),
        Cipher::Cbc { key: Aes256 } => W::cbc::<Aes256Block>(key, iv, data),
    }
}

struct Open;

impl Way for Open {
    type Output = bool;

    /// The GCM tag authenticates the data under the key and IV.
    fn gcm<A: KeyInit + Aead>(key: &[u8], iv: &[u8], data: &[u8]) -> bool {
        let (Ok(cipher), Ok(nonce)) = (A::new_from_slice(key), Nonce::<A>::try_from(iv)) else {
            return false;
        };
        cipher.decrypt(&nonce, data).is_ok()
    }

    /// Only that the PKCS#7 padding of the last block decodes: about one wrong key in 256
    /// passes, which is why CBC is documented as the weaker check.
    fn cbc<B>(key: &[u8], iv: &[u8], data: &[u8]) -> bool
    where
        B: BlockCipherEncrypt + BlockCipherDecrypt + KeyInit,
    {
        let Ok(decryptor) = cbc::Decryptor::<B>::new_from_slices(key, iv) else {
            return false;
        };
        let mut buffer = data.to_vec();
        decryptor.decrypt_padded::<Pkcs7>(&mut buffer).is_ok()
    }
}

struct Seal;

impl Way for Seal {
    type Output = Option<Vec<u8>>;

    /// Ciphertext followed by the 16-byte tag.
    fn gcm<A: KeyInit + Aead>(key: &[u8], iv: &[u8], plain: &[u8]) -> Option<Vec<u8>> {
        let cipher = A::new_from_slice(key).ok()?;
        let nonce = Nonce::<A>::try_from(iv).ok()?;
        cipher.encrypt(&nonce, plain).ok()
    }

    /// PKCS#7-padded to whole 16-byte blocks.
    fn cbc<B>(key: &[u8], iv: &[u8], plain: &[u8]) -> Option<Vec<u8>>
    where
        B: BlockCipherEncrypt + BlockCipherDecrypt + KeyInit,
    {
        let encryptor = cbc::Encryptor::<B>::new_from_slices(key, iv).ok()?;
        let mut buffer = plain.to_vec();
        buffer.resize(plain.len() / 16 * 16 + 16, 0);
        let sealed = encryptor
            .encrypt_padded::<Pkcs7>(&mut buffer, plain.len())
            .ok()?;
        Some(sealed.to_vec())
    }
}
