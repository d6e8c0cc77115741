//! The sign-check decrypt: `encrypted_data` and `aes_iv` from the network, under a session
//! key. Random input must never panic and never authenticate (that would be a forgery);
//! data sealed with the key must.
#![no_main]

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use cphub::access::{AesKey, Issued, Refusal, Rules, SignCheck, Ticket, Verdict, verify};
use cphub::domain::{SessionState, UtcTime};
use libfuzzer_sys::fuzz_target;

const AUTH_TS: i64 = 4_102_444_800_000; // 2100-01-01: never expired here

fn check(key: &[u8; 32], data: Vec<u8>, iv: [u8; 12]) -> Result<Verdict, Refusal> {
    let ticket = "fuzz-ticket";
    let issued = Issued {
        state: SessionState::Minted,
        ticket_hash: Ticket::presented(ticket.into()).unwrap().hash_hex(),
        aes_key: AesKey::from_hex(&hex(key)).unwrap(),
        auth_ts: AUTH_TS,
        verified_at: None,
        sign_check_digest: None,
    };
    let presented = SignCheck {
        ticket: Ticket::presented(ticket.into()).unwrap(),
        auth_ts: AUTH_TS,
        encrypted: Some((data, iv)),
    };
    let rules = Rules {
        clock_skew: std::time::Duration::from_secs(60),
        replay_grace: std::time::Duration::from_secs(60),
        require_encrypted_data: true,
    };
    verify(&issued, &presented, UtcTime::now(), &rules)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|input: &[u8]| {
    if input.len() < 44 {
        return;
    }
    let key: [u8; 32] = input[..32].try_into().unwrap();
    let iv: [u8; 12] = input[32..44].try_into().unwrap();
    let rest = input[44..].to_vec();
    assert_eq!(check(&key, rest.clone(), iv), Err(Refusal::DecryptFailed));
    let sealed = Aes256Gcm::new(&key.into())
        .encrypt(&Nonce::from(iv), rest.as_slice())
        .unwrap();
    assert_eq!(check(&key, sealed, iv), Ok(Verdict::FirstUse));
});
