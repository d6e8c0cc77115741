//! The sign-check rules, as a pure function of what was issued, what is presented and the
//! time. The caller consumes the ticket only on [`Verdict::FirstUse`].

use std::time::Duration;

use aes_gcm::aead::Aead;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AesKey, Ticket};
use crate::domain::{SessionState, UtcTime};

/// What the book holds about a minted session's access.
pub struct Issued {
    pub state: SessionState,
    pub ticket_hash: String,
    pub aes_key: AesKey,
    pub auth_ts: i64,
    pub verified_at: Option<UtcTime>,
    pub sign_check_digest: Option<String>,
}

/// A sign check as presented, already decoded.
pub struct SignCheck {
    pub ticket: Ticket,
    pub auth_ts: i64,
    /// `(ciphertext with tag, 12-byte IV)`, when `encrypted_data` is not empty.
    pub encrypted: Option<(Vec<u8>, [u8; 12])>,
}

impl SignCheck {
    /// Identifies the request, so an identical retry can be told from another use.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.ticket.expose().as_bytes());
        hash.update(self.auth_ts.to_be_bytes());
        if let Some((data, iv)) = &self.encrypted {
            hash.update(iv);
            hash.update(data);
        }
        hex::encode(hash.finalize())
    }
}

pub struct Rules {
    pub clock_skew: Duration,
    pub replay_grace: Duration,
    pub require_encrypted_data: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// All rules hold and the ticket is unused: consume it.
    FirstUse,
    /// The same request again shortly after it succeeded: answer the same.
    Retry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no session was issued with this session_id")]
    UnknownSession,
    #[error("ticket does not match")]
    BadTicket,
    #[error("auth_ts differs from the issued value")]
    BadAuthTs,
    #[error("ticket expired")]
    Expired,
    #[error("encrypted_data is required")]
    EncryptedDataRequired,
    #[error("encrypted_data does not authenticate under the session key and aes_iv")]
    DecryptFailed,
    #[error("ticket already used")]
    Replayed,
}

pub fn verify(
    issued: &Issued,
    presented: &SignCheck,
    now: UtcTime,
    rules: &Rules,
) -> Result<Verdict, Refusal> {
    let presented_hash = hex::encode(Sha256::digest(presented.ticket.expose().as_bytes()));
    if !bool::from(
        presented_hash
            .as_bytes()
            .ct_eq(issued.ticket_hash.as_bytes()),
    ) {
        return Err(Refusal::BadTicket);
    }
    if presented.auth_ts != issued.auth_ts {
        return Err(Refusal::BadAuthTs);
    }
    if issued.state != SessionState::Minted && issued.state != SessionState::Expired {
        return retry_or_replay(issued, presented, now, rules);
    }
    let deadline = UtcTime::from_epoch_millis(issued.auth_ts).map(|t| t.plus(rules.clock_skew));
    if issued.state == SessionState::Expired || deadline.is_none_or(|deadline| now > deadline) {
        return Err(Refusal::Expired);
    }
    match &presented.encrypted {
        None if rules.require_encrypted_data => Err(Refusal::EncryptedDataRequired),
        None => Ok(Verdict::FirstUse),
        Some((data, iv)) => decrypts(&issued.aes_key, data, iv)
            .then_some(Verdict::FirstUse)
            .ok_or(Refusal::DecryptFailed),
    }
}

fn retry_or_replay(
    issued: &Issued,
    presented: &SignCheck,
    now: UtcTime,
    rules: &Rules,
) -> Result<Verdict, Refusal> {
    let same_request = issued
        .sign_check_digest
        .as_ref()
        .is_some_and(|digest| bool::from(digest.as_bytes().ct_eq(presented.digest().as_bytes())));
    let within_grace = issued
        .verified_at
        .is_some_and(|at| now <= at.plus(rules.replay_grace));
    if same_request && within_grace {
        Ok(Verdict::Retry)
    } else {
        Err(Refusal::Replayed)
    }
}

/// The GCM tag check; the plaintext itself carries nothing cphub needs.
fn decrypts(key: &AesKey, data: &[u8], iv: &[u8; 12]) -> bool {
    let cipher = Aes256Gcm::new(key.bytes().into());
    cipher.decrypt(&Nonce::from(*iv), data).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::MintedAccess;

    const T0: i64 = 1_764_324_000_000;

    fn at(ms: i64) -> UtcTime {
        UtcTime::from_epoch_millis(ms).unwrap()
    }

    fn rules() -> Rules {
        Rules {
            clock_skew: Duration::from_secs(5),
            replay_grace: Duration::from_secs(10),
            require_encrypted_data: false,
        }
    }

    fn issue() -> (MintedAccess, Issued) {
        let minted = MintedAccess::mint();
        let issued = Issued {
            state: SessionState::Minted,
            ticket_hash: minted.ticket.hash_hex(),
            aes_key: minted.aes_key.clone(),
            auth_ts: T0,
            verified_at: None,
            sign_check_digest: None,
        };
        (minted, issued)
    }

    fn presented(minted: &MintedAccess, plaintext: Option<&[u8]>) -> SignCheck {
        let encrypted = plaintext.map(|p| {
            let iv: [u8; 12] = rand::random();
            let cipher = Aes256Gcm::new(minted.aes_key.bytes().into());
            (cipher.encrypt(&Nonce::from(iv), p).unwrap(), iv)
        });
        let ticket = Ticket::presented(minted.ticket.expose().to_owned()).unwrap();
        SignCheck {
            ticket,
            auth_ts: T0,
            encrypted,
        }
    }

    #[test]
    fn a_correct_first_use_passes_with_and_without_data() {
        let (minted, issued) = issue();
        assert_eq!(
            verify(
                &issued,
                &presented(&minted, Some(b"hi")),
                at(T0 - 1000),
                &rules()
            ),
            Ok(Verdict::FirstUse)
        );
        assert_eq!(
            verify(&issued, &presented(&minted, None), at(T0 + 5000), &rules()),
            Ok(Verdict::FirstUse)
        );
    }

    #[test]
    fn each_rule_refuses_on_its_own() {
        let (minted, issued) = issue();
        let mut wrong_ticket = presented(&minted, None);
        wrong_ticket.ticket = Ticket::presented("x".repeat(43)).unwrap();
        assert_eq!(
            verify(&issued, &wrong_ticket, at(T0), &rules()),
            Err(Refusal::BadTicket)
        );

        let mut wrong_ts = presented(&minted, None);
        wrong_ts.auth_ts += 1;
        assert_eq!(
            verify(&issued, &wrong_ts, at(T0), &rules()),
            Err(Refusal::BadAuthTs)
        );

        assert_eq!(
            verify(&issued, &presented(&minted, None), at(T0 + 5001), &rules()),
            Err(Refusal::Expired)
        );

        let mut tampered = presented(&minted, Some(b"hello"));
        tampered.encrypted.as_mut().unwrap().0[0] ^= 1;
        assert_eq!(
            verify(&issued, &tampered, at(T0), &rules()),
            Err(Refusal::DecryptFailed)
        );

        let strict = Rules {
            require_encrypted_data: true,
            ..rules()
        };
        assert_eq!(
            verify(&issued, &presented(&minted, None), at(T0), &strict),
            Err(Refusal::EncryptedDataRequired)
        );
    }

    #[test]
    fn after_success_only_an_identical_prompt_retry_passes() {
        let (minted, mut issued) = issue();
        let first = presented(&minted, Some(b"hello"));
        issued.state = SessionState::Verified;
        issued.verified_at = Some(at(T0 - 60_000));
        issued.sign_check_digest = Some(first.digest());

        assert_eq!(
            verify(&issued, &first, at(T0 - 55_000), &rules()),
            Ok(Verdict::Retry)
        );
        assert_eq!(
            verify(&issued, &first, at(T0 - 49_999), &rules()),
            Err(Refusal::Replayed)
        );
        let other = presented(&minted, Some(b"hello"));
        assert_eq!(
            verify(&issued, &other, at(T0 - 55_000), &rules()),
            Err(Refusal::Replayed)
        );
    }
}
