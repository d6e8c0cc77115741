//! An encoding server's state, from its control-plane status (chapter 4.6.1).

use serde::Serialize;
use utoipa::ToSchema;

/// What an encoding server's `status` (chapter 4.6.1) says. The reference's two tables
/// disagree on 4 and 5: the query parameter (Table 4-54) lists 4 frozen and 5 stopped, the
/// answer's field (Table 4-55) "0, 4, or 5: being created". The query table is the more
/// specific, so it is followed; creating is 0, 100 and 1014 (Table 4-54). Any other value is
/// `unknown`: never acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EncodeServerState {
    Running,
    /// Status 2: it breaks the stream of every phone it serves while they keep heartbeating.
    Abnormal,
    Restarting,
    Frozen,
    Stopped,
    Creating,
    Unknown,
}

impl EncodeServerState {
    pub const ALL: &[EncodeServerState] = &[
        EncodeServerState::Running,
        EncodeServerState::Abnormal,
        EncodeServerState::Restarting,
        EncodeServerState::Frozen,
        EncodeServerState::Stopped,
        EncodeServerState::Creating,
        EncodeServerState::Unknown,
    ];

    pub fn of(status: i32) -> EncodeServerState {
        match status {
            1 => EncodeServerState::Running,
            2 => EncodeServerState::Abnormal,
            3 => EncodeServerState::Restarting,
            4 => EncodeServerState::Frozen,
            5 => EncodeServerState::Stopped,
            0 | 100 | 1014 => EncodeServerState::Creating,
            _ => EncodeServerState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EncodeServerState::Running => "running",
            EncodeServerState::Abnormal => "abnormal",
            EncodeServerState::Restarting => "restarting",
            EncodeServerState::Frozen => "frozen",
            EncodeServerState::Stopped => "stopped",
            EncodeServerState::Creating => "creating",
            EncodeServerState::Unknown => "unknown",
        }
    }
}

impl From<i32> for EncodeServerState {
    fn from(status: i32) -> Self {
        EncodeServerState::of(status)
    }
}

impl std::fmt::Display for EncodeServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables 4-54 and 4-55: 2 is abnormal; 0, 100 and 1014 creating; 4 and 5 as the query
    /// table names them.
    #[test]
    fn statuses_of_4_6_1_map_to_states() {
        assert_eq!(EncodeServerState::of(1), EncodeServerState::Running);
        assert_eq!(EncodeServerState::of(2), EncodeServerState::Abnormal);
        assert_eq!(EncodeServerState::of(3), EncodeServerState::Restarting);
        assert_eq!(EncodeServerState::of(4), EncodeServerState::Frozen);
        assert_eq!(EncodeServerState::of(5), EncodeServerState::Stopped);
        for creating in [0, 100, 1014] {
            assert_eq!(EncodeServerState::of(creating), EncodeServerState::Creating);
        }
        assert_eq!(EncodeServerState::of(-1), EncodeServerState::Unknown);
        for state in EncodeServerState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }
}
