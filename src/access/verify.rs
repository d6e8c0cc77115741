//! The sign-check rules, as pure functions of what was issued, what is presented and the
//! time. [`verify`] decides what the ticket allows; [`Rules::check_data`] and
//! [`Rules::admit`] what `encrypted_data` proves. The caller consumes the ticket only on
//! [`Verdict::FirstUse`].

use std::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::cipher::decrypts;
use super::{AesKey, Ticket};
use crate::config::{Cipher, EncryptedDataMode, Reconnect};
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

/// `encrypted_data` and `aes_iv` as presented.
pub enum Sealed {
    /// Empty or missing (6.1's example sends both empty).
    Absent,
    /// Not in the configured encoding or of the wrong length; refused at parsing only
    /// under `enforce`.
    Garbled,
    Present {
        data: Vec<u8>,
        iv: Vec<u8>,
    },
}

/// Ends the digest of a sign check that carried sealed data: kept with the first use, it
/// tells what a reconnect without data is held to under `enforce`.
const SEALED: &str = ".sealed";

impl Issued {
    /// Whether the sign check that used the ticket first carried sealed data.
    fn first_use_sealed(&self) -> bool {
        (self.sign_check_digest.as_deref()).is_some_and(|digest| digest.ends_with(SEALED))
    }
}

/// A sign check as presented, already decoded.
pub struct SignCheck {
    pub ticket: Ticket,
    pub auth_ts: i64,
    pub sealed: Sealed,
    digest: String,
}

impl SignCheck {
    /// `raw` is `encrypted_data` and `aes_iv` as sent: what identifies the request.
    pub fn new(ticket: Ticket, auth_ts: i64, sealed: Sealed, raw: [&str; 2]) -> SignCheck {
        let mut hash = Sha256::new();
        hash.update(ticket.expose().as_bytes());
        hash.update(auth_ts.to_be_bytes());
        for field in raw {
            hash.update((field.len() as u64).to_be_bytes());
            hash.update(field.as_bytes());
        }
        let mut digest = hex::encode(hash.finalize());
        if matches!(sealed, Sealed::Present { .. }) {
            digest.push_str(SEALED);
        }
        SignCheck {
            ticket,
            auth_ts,
            sealed,
            digest,
        }
    }

    /// Identifies the request, so an identical retry can be told from another use.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

pub struct Rules {
    pub clock_skew: Duration,
    pub replay_grace: Duration,
    pub require_encrypted_data: bool,
    pub reconnect: Reconnect,
    pub encrypted_data: EncryptedDataMode,
    pub cipher: Cipher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// All rules hold and the ticket is unused: consume it.
    FirstUse,
    /// The same request again shortly after it succeeded: answer the same.
    Retry,
    /// The ticket again while its session is live (`access.reconnect = "while_live"`).
    Reconnect,
}

/// What decrypting `encrypted_data` showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCheck {
    Ok,
    Failed,
    Absent,
}

impl DataCheck {
    pub const ALL: [DataCheck; 3] = [DataCheck::Ok, DataCheck::Failed, DataCheck::Absent];

    pub fn as_str(self) -> &'static str {
        match self {
            DataCheck::Ok => "ok",
            DataCheck::Failed => "failed",
            DataCheck::Absent => "absent",
        }
    }
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
    #[error("encrypted_data does not decrypt under the session key and aes_iv")]
    DecryptFailed,
    #[error("ticket already used")]
    Replayed,
    #[error("the ticket's session has ended")]
    SessionEnded,
}

/// The ticket rules: which ticket, which `auth_ts`, and what the session's state allows.
pub fn verify(
    issued: &Issued,
    presented: &SignCheck,
    now: UtcTime,
    rules: &Rules,
) -> Result<Verdict, Refusal> {
    let presented_hash = presented.ticket.hash_hex();
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
    match issued.state {
        SessionState::Minted => first_use(issued, now, rules),
        SessionState::Expired => Err(Refusal::Expired),
        _ => used_again(issued, presented, now, rules),
    }
}

/// `auth_ts` (plus the skew) bounds the first sign check only.
fn first_use(issued: &Issued, now: UtcTime, rules: &Rules) -> Result<Verdict, Refusal> {
    let deadline = UtcTime::from_epoch_millis(issued.auth_ts).map(|t| t.plus(rules.clock_skew));
    if deadline.is_none_or(|deadline| now > deadline) {
        return Err(Refusal::Expired);
    }
    Ok(Verdict::FirstUse)
}

/// A ticket already used: an identical prompt retry, a reconnect, or a refusal.
fn used_again(
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
    let live = matches!(issued.state, SessionState::Verified | SessionState::Playing);
    match rules.reconnect {
        _ if same_request && within_grace => Ok(Verdict::Retry),
        // Under `enforce` the data proves the caller holds the session key only if it is not
        // a copy: the reference calls `aes_iv` a salt, which a client that seals its data
        // picks anew, so the first request again word for word, its sealed data included, is
        // someone replaying it (from a log, a proxy) — unless it is the phone retrying a sign
        // check whose answer was lost, which comes before the enter (the enter needs the
        // answer) and soon, though after the grace when the write outlasted it: that one is
        // answered again and changes nothing. Empty data (6.1's example) repeats by nature
        // and is left to the ticket's rules, as is a session that ended.
        _ if same_request
            && live
            && rules.encrypted_data == EncryptedDataMode::Enforce
            && matches!(presented.sealed, Sealed::Present { .. }) =>
        {
            let late_retry = issued.state == SessionState::Verified
                && (issued.verified_at).is_some_and(|at| now <= at.plus(rules.replay_grace * 2));
            match late_retry {
                true => Ok(Verdict::Retry),
                false => Err(Refusal::Replayed),
            }
        }
        // Under `enforce` a reconnect proves the caller holds the key by its data; one
        // without any, after a first use that carried some, proves nothing: whoever learnt
        // the ticket would get the key by leaving the data out. (A client whose first sign
        // check had none, 6.1's example, is left to the ticket's rules.)
        Reconnect::WhileLive
            if live
                && rules.encrypted_data == EncryptedDataMode::Enforce
                && matches!(presented.sealed, Sealed::Absent)
                && issued.first_use_sealed() =>
        {
            Err(Refusal::EncryptedDataRequired)
        }
        Reconnect::WhileLive if live => Ok(Verdict::Reconnect),
        Reconnect::WhileLive => Err(Refusal::SessionEnded),
        Reconnect::Never => Err(Refusal::Replayed),
    }
}

/// What one sign check gets: what `encrypted_data` showed (None when not decrypted), and
/// the verdict or the refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub data: Option<DataCheck>,
    pub verdict: Result<Verdict, Refusal>,
}

/// Every rule of a sign check: the ticket's ([`verify`]), then what `encrypted_data` proves
/// (not for a retry: its data was checked when it passed). A first use leaves `issued` as
/// consuming the ticket leaves the book, so the next sign check of the session in the same
/// batch is decided as it would be one by one: the identical request a retry, another a
/// reconnect or a replay.
pub fn decide(issued: &mut Issued, presented: &SignCheck, now: UtcTime, rules: &Rules) -> Decision {
    let verdict = match verify(issued, presented, now, rules) {
        Ok(verdict) => verdict,
        Err(refusal) => {
            return Decision {
                data: None,
                verdict: Err(refusal),
            };
        }
    };
    let data = match verdict {
        Verdict::Retry => None,
        _ => rules.check_data(&issued.aes_key, &presented.sealed),
    };
    let verdict = rules.admit(data).map(|()| verdict);
    if verdict == Ok(Verdict::FirstUse) {
        issued.state = SessionState::Verified;
        issued.verified_at = Some(now);
        issued.sign_check_digest = Some(presented.digest().to_owned());
    }
    Decision { data, verdict }
}

impl Rules {
    /// None with `access.encrypted_data = "off"`: the data is not even decrypted.
    pub fn check_data(&self, key: &AesKey, sealed: &Sealed) -> Option<DataCheck> {
        Some(match sealed {
            _ if self.encrypted_data == EncryptedDataMode::Off => return None,
            Sealed::Absent => DataCheck::Absent,
            Sealed::Garbled => DataCheck::Failed,
            Sealed::Present { data, iv } if decrypts(self.cipher, key.bytes(), iv, data) => {
                DataCheck::Ok
            }
            Sealed::Present { .. } => DataCheck::Failed,
        })
    }

    /// Only `enforce` refuses; absent data only with `require_encrypted_data` too.
    pub fn admit(&self, data: Option<DataCheck>) -> Result<(), Refusal> {
        if self.encrypted_data != EncryptedDataMode::Enforce {
            return Ok(());
        }
        match data {
            Some(DataCheck::Failed) => Err(Refusal::DecryptFailed),
            Some(DataCheck::Absent) if self.require_encrypted_data => {
                Err(Refusal::EncryptedDataRequired)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use aes_gcm::aead::Aead;
    use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

    use super::*;
    use crate::access::MintedAccess;
    use crate::config::{GcmIv, KeySize};

    const T0: i64 = 1_764_324_000_000;
    const GCM: Cipher = Cipher::Gcm {
        key: KeySize::Aes256,
        iv: GcmIv::Twelve,
    };

    fn at(ms: i64) -> UtcTime {
        UtcTime::from_epoch_millis(ms).unwrap()
    }

    fn rules(reconnect: Reconnect) -> Rules {
        Rules {
            clock_skew: Duration::from_secs(5),
            replay_grace: Duration::from_secs(10),
            require_encrypted_data: false,
            reconnect,
            encrypted_data: EncryptedDataMode::Enforce,
            cipher: GCM,
        }
    }

    fn issue() -> (MintedAccess, Issued) {
        let minted = MintedAccess::mint(GCM);
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

    fn seal(minted: &MintedAccess, plaintext: &[u8]) -> Sealed {
        let iv: [u8; 12] = rand::random();
        let cipher = Aes256Gcm::new_from_slice(minted.aes_key.bytes()).unwrap();
        let data = cipher.encrypt(&Nonce::from(iv), plaintext).unwrap();
        Sealed::Present {
            data,
            iv: iv.to_vec(),
        }
    }

    /// A request with a fresh random `raw`, so no two are identical.
    fn presented(minted: &MintedAccess, sealed: Sealed) -> SignCheck {
        let ticket = Ticket::presented(minted.ticket.expose().to_owned()).unwrap();
        let nonce = hex::encode(rand::random::<[u8; 8]>());
        SignCheck::new(ticket, T0, sealed, [&nonce, ""])
    }

    #[test]
    fn a_first_use_passes_until_auth_ts_and_the_skew() {
        let (minted, issued) = issue();
        let rules = rules(Reconnect::WhileLive);
        let check = presented(&minted, Sealed::Absent);
        assert_eq!(
            verify(&issued, &check, at(T0 - 1000), &rules),
            Ok(Verdict::FirstUse)
        );
        assert_eq!(
            verify(&issued, &check, at(T0 + 5000), &rules),
            Ok(Verdict::FirstUse)
        );
        assert_eq!(
            verify(&issued, &check, at(T0 + 5001), &rules),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn a_wrong_ticket_or_auth_ts_is_refused() {
        let (minted, issued) = issue();
        let rules = rules(Reconnect::WhileLive);
        let mut wrong_ticket = presented(&minted, Sealed::Absent);
        wrong_ticket.ticket = Ticket::presented("x".repeat(43)).unwrap();
        assert_eq!(
            verify(&issued, &wrong_ticket, at(T0), &rules),
            Err(Refusal::BadTicket)
        );
        let mut wrong_ts = presented(&minted, Sealed::Absent);
        wrong_ts.auth_ts += 1;
        assert_eq!(
            verify(&issued, &wrong_ts, at(T0), &rules),
            Err(Refusal::BadAuthTs)
        );
    }

    /// `issued` after `first` succeeded at `T0 - 60 s`, now in `state`.
    fn used(issued: &mut Issued, first: &SignCheck, state: SessionState) {
        issued.state = state;
        issued.verified_at = Some(at(T0 - 60_000));
        issued.sign_check_digest = Some(first.digest().to_owned());
    }

    #[test]
    fn never_answers_only_an_identical_prompt_retry() {
        let (minted, mut issued) = issue();
        let first = presented(&minted, Sealed::Absent);
        used(&mut issued, &first, SessionState::Verified);
        let rules = rules(Reconnect::Never);

        assert_eq!(
            verify(&issued, &first, at(T0 - 55_000), &rules),
            Ok(Verdict::Retry)
        );
        assert_eq!(
            verify(&issued, &first, at(T0 - 49_999), &rules),
            Err(Refusal::Replayed)
        );
        let other = presented(&minted, Sealed::Absent);
        assert_eq!(
            verify(&issued, &other, at(T0 - 55_000), &rules),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn while_live_admits_the_ticket_again_until_the_session_ends() {
        let (minted, mut issued) = issue();
        let first = presented(&minted, Sealed::Absent);
        let rules = rules(Reconnect::WhileLive);
        let again = presented(&minted, Sealed::Absent);
        // Hours past auth_ts: it bounds only the first sign check.
        let later = at(T0 + 3 * 3_600_000);
        for state in [SessionState::Verified, SessionState::Playing] {
            used(&mut issued, &first, state);
            assert_eq!(
                verify(&issued, &again, later, &rules),
                Ok(Verdict::Reconnect)
            );
            // Empty data repeats by nature: the same request long after is a reconnect.
            assert_eq!(
                verify(&issued, &first, later, &rules),
                Ok(Verdict::Reconnect)
            );
        }
        assert_eq!(
            verify(&issued, &first, at(T0 - 55_000), &rules),
            Ok(Verdict::Retry)
        );
        for state in [SessionState::Ended, SessionState::Abandoned] {
            used(&mut issued, &first, state);
            assert_eq!(
                verify(&issued, &again, later, &rules),
                Err(Refusal::SessionEnded)
            );
        }
        issued.state = SessionState::Expired;
        assert_eq!(
            verify(&issued, &again, later, &rules),
            Err(Refusal::Expired)
        );
    }

    /// Under `enforce`, the first sign check word for word, its sealed data included, is a
    /// copy: refused once the game is entered, or later than twice the grace before it. Up to
    /// then, before the enter, it is the phone retrying a sign check whose answer was lost
    /// (the write outlasted the grace): answered again, writing nothing. After the end it is
    /// the session's own refusal; with empty data (which repeats by nature), or with the data
    /// not held to account, a reconnect.
    #[test]
    fn under_enforce_a_copy_of_sealed_data_after_the_enter_is_a_replay() {
        let (minted, mut issued) = issue();
        let sealed = || Sealed::Present {
            data: vec![1; 32],
            iv: vec![2; 12],
        };
        let first = presented(&minted, sealed());
        let rules = rules(Reconnect::WhileLive);
        let observe = Rules {
            encrypted_data: EncryptedDataMode::Observe,
            ..self::rules(Reconnect::WhileLive)
        };
        let later = at(T0 + 60_000);
        let verdict =
            |issued: &Issued, check: &SignCheck, rules: &Rules| verify(issued, check, later, rules);

        used(&mut issued, &first, SessionState::Playing);
        assert_eq!(verdict(&issued, &first, &rules), Err(Refusal::Replayed));
        assert_eq!(verdict(&issued, &first, &observe), Ok(Verdict::Reconnect));
        used(&mut issued, &first, SessionState::Verified);
        assert_eq!(verdict(&issued, &first, &rules), Err(Refusal::Replayed));
        let retried = |after_ms| verify(&issued, &first, at(T0 - 60_000 + after_ms), &rules);
        assert_eq!(retried(15_000), Ok(Verdict::Retry), "past the grace (10 s)");
        assert_eq!(retried(20_000), Ok(Verdict::Retry));
        assert_eq!(retried(20_001), Err(Refusal::Replayed));
        used(&mut issued, &first, SessionState::Ended);
        assert_eq!(verdict(&issued, &first, &rules), Err(Refusal::SessionEnded));
        let empty = presented(&minted, Sealed::Absent);
        used(&mut issued, &empty, SessionState::Playing);
        assert_eq!(verdict(&issued, &empty, &rules), Ok(Verdict::Reconnect));
    }

    /// Under `enforce`, a reconnect that leaves the data out after a first use that sealed
    /// some proves nothing of the key: refused (else whoever learnt the ticket gets the key
    /// by leaving the field out). Not held to account (`observe`), it is a reconnect.
    #[test]
    fn under_enforce_a_reconnect_without_data_after_sealed_data_is_refused() {
        let (minted, mut issued) = issue();
        let sealed = Sealed::Present {
            data: vec![1; 32],
            iv: vec![2; 12],
        };
        let first = presented(&minted, sealed);
        let bare = presented(&minted, Sealed::Absent);
        let rules = rules(Reconnect::WhileLive);
        let observe = Rules {
            encrypted_data: EncryptedDataMode::Observe,
            ..self::rules(Reconnect::WhileLive)
        };
        let later = at(T0 + 60_000);
        for state in [SessionState::Verified, SessionState::Playing] {
            used(&mut issued, &first, state);
            assert_eq!(
                verify(&issued, &bare, later, &rules),
                Err(Refusal::EncryptedDataRequired)
            );
            assert_eq!(
                verify(&issued, &bare, later, &observe),
                Ok(Verdict::Reconnect)
            );
        }
    }

    #[test]
    fn the_data_check_sees_ok_failed_and_absent() {
        let (minted, issued) = issue();
        let rules = rules(Reconnect::WhileLive);
        let check = |sealed| rules.check_data(&issued.aes_key, &sealed);
        assert_eq!(check(seal(&minted, b"hello")), Some(DataCheck::Ok));
        let Sealed::Present { mut data, iv } = seal(&minted, b"hello") else {
            unreachable!()
        };
        data[0] ^= 1;
        assert_eq!(check(Sealed::Present { data, iv }), Some(DataCheck::Failed));
        assert_eq!(check(Sealed::Garbled), Some(DataCheck::Failed));
        assert_eq!(check(Sealed::Absent), Some(DataCheck::Absent));
        let off = Rules {
            encrypted_data: EncryptedDataMode::Off,
            ..rules
        };
        assert_eq!(off.check_data(&issued.aes_key, &Sealed::Garbled), None);
    }

    #[test]
    fn only_enforce_refuses_and_absent_data_only_when_required() {
        let with = |encrypted_data, require_encrypted_data| Rules {
            encrypted_data,
            require_encrypted_data,
            ..rules(Reconnect::WhileLive)
        };
        let enforce = with(EncryptedDataMode::Enforce, false);
        assert_eq!(enforce.admit(Some(DataCheck::Ok)), Ok(()));
        assert_eq!(
            enforce.admit(Some(DataCheck::Failed)),
            Err(Refusal::DecryptFailed)
        );
        assert_eq!(enforce.admit(Some(DataCheck::Absent)), Ok(()));
        let strict = with(EncryptedDataMode::Enforce, true);
        assert_eq!(
            strict.admit(Some(DataCheck::Absent)),
            Err(Refusal::EncryptedDataRequired)
        );
        for mode in [EncryptedDataMode::Observe, EncryptedDataMode::Off] {
            let lenient = with(mode, true);
            assert_eq!(lenient.admit(Some(DataCheck::Failed)), Ok(()));
            assert_eq!(lenient.admit(Some(DataCheck::Absent)), Ok(()));
            assert_eq!(lenient.admit(None), Ok(()));
        }
    }

    /// Three sign checks of one ticket decided in a row, as one batch decides them: the
    /// first consumes it, the identical request is a retry (data not checked again), another
    /// is refused under `never`; a failed decryption under `enforce` consumes nothing.
    #[test]
    fn decide_leaves_what_consuming_the_ticket_leaves() {
        let (minted, mut issued) = issue();
        let rules = rules(Reconnect::Never);
        let garbled = presented(&minted, Sealed::Garbled);
        assert_eq!(
            decide(&mut issued, &garbled, at(T0), &rules),
            Decision {
                data: Some(DataCheck::Failed),
                verdict: Err(Refusal::DecryptFailed)
            }
        );
        assert_eq!(issued.state, SessionState::Minted, "refused: not consumed");

        let first = presented(&minted, seal(&minted, b"hello"));
        let first_use = decide(&mut issued, &first, at(T0), &rules);
        assert_eq!(first_use.data, Some(DataCheck::Ok));
        assert_eq!(first_use.verdict, Ok(Verdict::FirstUse));
        assert_eq!(issued.state, SessionState::Verified);
        assert_eq!(issued.verified_at, Some(at(T0)));
        assert_eq!(issued.sign_check_digest.as_deref(), Some(first.digest()));

        let retry = decide(&mut issued, &first, at(T0 + 1), &rules);
        assert_eq!(
            retry,
            Decision {
                data: None,
                verdict: Ok(Verdict::Retry)
            }
        );
        let other = presented(&minted, Sealed::Absent);
        let replay = decide(&mut issued, &other, at(T0 + 1), &rules);
        assert_eq!(replay.verdict, Err(Refusal::Replayed));
    }
}
