//! The sign-check decrypt: `encrypted_data` and `aes_iv` from the network, under a session
//! key, for each `access.cipher`. Random input must never panic and, under GCM, never
//! authenticate (that would be a forgery; CBC's padding check can pass by chance, which is
//! why it is documented as the weaker check); data sealed with the key must.
#![no_main]

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use cphub::access::{AesKey, Issued, Refusal, Rules, Sealed, SignCheck, Ticket, Verdict, verify};
use cphub::config::{Cipher, EncryptedDataMode, GcmIv, KeySize, Reconnect};
use cphub::domain::{SessionState, UtcTime};
use libfuzzer_sys::fuzz_target;

const AUTH_TS: i64 = 4_102_444_800_000; // 2100-01-01: never expired here

const DEFAULT: Cipher = Cipher::Gcm {
    key: KeySize::Aes256,
    iv: GcmIv::Twelve,
};

const CIPHERS: [Cipher; 6] = [
    DEFAULT,
    Cipher::Gcm {
        key: KeySize::Aes256,
        iv: GcmIv::Sixteen,
    },
    Cipher::Gcm {
        key: KeySize::Aes128,
        iv: GcmIv::Twelve,
    },
    Cipher::Gcm {
        key: KeySize::Aes128,
        iv: GcmIv::Sixteen,
    },
    Cipher::Cbc {
        key: KeySize::Aes256,
    },
    Cipher::Cbc {
        key: KeySize::Aes128,
    },
];

fn check(cipher: Cipher, key: &[u8], data: Vec<u8>, iv: &[u8]) -> Result<Verdict, Refusal> {
    let ticket = "fuzz-ticket";
    let issued = Issued {
        state: SessionState::Minted,
        ticket_hash: Ticket::presented(ticket.into()).unwrap().hash_hex(),
        aes_key: AesKey::from_hex(&hex(key)).unwrap(),
        auth_ts: AUTH_TS,
        verified_at: None,
        sign_check_digest: None,
    };
    let sealed = Sealed::Present {
        data,
        iv: iv.to_vec(),
    };
    let presented = SignCheck::new(
        Ticket::presented(ticket.into()).unwrap(),
        AUTH_TS,
        sealed,
        ["", ""],
    );
    let rules = Rules {
        clock_skew: std::time::Duration::from_secs(60),
        replay_grace: std::time::Duration::from_secs(60),
        require_encrypted_data: true,
        reconnect: Reconnect::WhileLive,
        encrypted_data: EncryptedDataMode::Enforce,
        cipher,
    };
    let verdict = verify(&issued, &presented, UtcTime::now(), &rules)?;
    rules.admit(rules.check_data(&issued.aes_key, &presented.sealed))?;
    Ok(verdict)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Input: one byte picking the cipher, 32 of key and 16 of IV (each cut to the cipher's
// sizes), then the data.
fuzz_target!(|input: &[u8]| {
    if input.len() < 49 {
        return;
    }
    let cipher = CIPHERS[usize::from(input[0]) % CIPHERS.len()];
    let key = &input[1..1 + cipher.key_bytes()];
    let iv = &input[33..33 + cipher.iv_bytes()];
    let rest = input[49..].to_vec();
    let random = check(cipher, key, rest.clone(), iv);
    if matches!(cipher, Cipher::Gcm { .. }) {
        assert_eq!(random, Err(Refusal::DecryptFailed));
    }
    if cipher == DEFAULT {
        let sealed = Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(
                &Nonce::from(<[u8; 12]>::try_from(iv).unwrap()),
                rest.as_slice(),
            )
            .unwrap();
        assert_eq!(check(cipher, key, sealed, iv), Ok(Verdict::FirstUse));
    }
});
