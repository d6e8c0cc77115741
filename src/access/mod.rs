//! Access verification (docs/api.md): what cphub mints for a session,
//! and the rules a sign check must pass before the phone gets the session's AES key.

mod encoding;
mod holds;
mod secrets;
mod verify;

pub use encoding::{decode, encode};
pub use holds::HoldSweeper;
pub use secrets::{AesKey, MintedAccess, Ticket};
pub use verify::{Issued, Refusal, Rules, SignCheck, Verdict, verify};

impl From<&crate::config::AccessSettings> for Rules {
    fn from(settings: &crate::config::AccessSettings) -> Self {
        Rules {
            clock_skew: settings.clock_skew(),
            replay_grace: settings.replay_grace(),
            require_encrypted_data: settings.require_encrypted_data,
        }
    }
}
