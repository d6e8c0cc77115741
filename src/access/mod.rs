//! Access verification (docs/api.md "Access verification"): what cphub mints for a session,
//! and the rules a sign check must pass before the phone gets the session's AES key. Pure:
//! no I/O; the store records what is minted, the receiver asks [`verify`] for a verdict.

mod cipher;
mod encoding;
mod secrets;
mod verify;

pub use cipher::{decrypts, encrypt};
pub use encoding::{decode, encode};
pub use secrets::{AesKey, MintedAccess, Ticket};
pub use verify::{
    DataCheck, Decision, Issued, Refusal, Rules, Sealed, SignCheck, Verdict, decide, verify,
};

impl From<&crate::config::AccessSettings> for Rules {
    fn from(settings: &crate::config::AccessSettings) -> Self {
        Rules {
            clock_skew: settings.clock_skew(),
            replay_grace: settings.replay_grace(),
            require_encrypted_data: settings.require_encrypted_data,
            reconnect: settings.reconnect,
            encrypted_data: settings.encrypted_data,
            cipher: settings.cipher,
        }
    }
}
