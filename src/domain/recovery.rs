//! The vocabulary of the recovery log: why a phone needed attention, what was done, how it
//! ended, and the mark it leaves on the phone. Each maps to its column text in one place
//! (`as_str` to store, `TryFrom<String>` to read back).

use serde::Serialize;
use utoipa::ToSchema;

/// Defines a closed set of values stored as text: `as_str`, reading back (an unknown text
/// is a corrupt row, reported as such), JSON and the OpenAPI schema as the same text.
macro_rules! column_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        // Every text is the variant's name in snake_case (the test below checks), which is
        // what JSON and the OpenAPI document then show.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;

            fn try_from(text: String) -> Result<Self, String> {
                match text.as_str() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!("unknown {} {text:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}
pub(super) use column_enum;

column_enum!(
    /// Why a phone needed attention.
    Reason {
        /// No heartbeat for longer than the stale threshold.
        Stale = "stale",
        /// The control plane reports it abnormal (-7, chapter 4.3.1).
        Abnormal = "abnormal",
        RestartFailed = "restart_failed",
        ResetFailed = "reset_failed",
        /// An operator asked (`POST /api/v1/phones/{id}/restart|reset`).
        Manual = "manual",
        /// Most phones of one server fell silent together: the server, not each phone, is
        /// the fault (the row's `phone_id` is the server id).
        ServerIncident = "server_incident",
        /// An encoding server reported abnormal (status 2, chapter 4.6.1): restarted with
        /// 4.6.2 (action `restart`; the row's `phone_id` is the encoding server id).
        EncodeServerAbnormal = "encode_server_abnormal",
    }
);

column_enum!(
    /// What was done about it.
    Action {
        Restart = "restart",
        Reset = "reset",
        /// Given up on: recoveries kept failing.
        MarkBroken = "mark_broken",
        /// A server incident: its phones are left alone (no restart, no reset) while it
        /// lasts. Nothing is sent to the control plane.
        Hold = "hold",
    }
);

column_enum!(
    /// How a recovery ended (or that it has not yet).
    Outcome {
        Pending = "pending",
        Succeeded = "succeeded",
        Failed = "failed",
        Error = "error",
        DryRun = "dry_run",
        /// Not done after all: re-read right before acting (chapter 4.3.2), the phone was
        /// no longer a candidate (its status had changed since the last phone sync).
        Skipped = "skipped",
        /// A server incident that still lasts.
        Open = "open",
        /// A server incident that ended: enough of its phones heartbeat again.
        Closed = "closed",
    }
);

column_enum!(
    /// The mark a recovery leaves on its phone until it heartbeats and runs again.
    RecoveryMark {
        Recovering = "recovering",
        Broken = "broken",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_reads_back_from_its_column_text() {
        for r in Reason::ALL {
            assert_eq!(Reason::try_from(r.as_str().to_owned()), Ok(*r));
        }
        for a in Action::ALL {
            assert_eq!(Action::try_from(a.as_str().to_owned()), Ok(*a));
        }
        for o in Outcome::ALL {
            assert_eq!(Outcome::try_from(o.as_str().to_owned()), Ok(*o));
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        for r in Reason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        for a in Action::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for m in RecoveryMark::ALL {
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert!(Outcome::try_from("exploded".to_owned()).is_err());
    }
}
