//! Domain types. Wire input is parsed into these once, at the edge; everything behind the
//! handlers only ever sees valid values.

mod connect;
mod encode_server;
mod event;
mod ids;
mod queue;
mod recovery;
mod rollout;
mod session;
mod shell;
mod time;
mod webhook;

pub use connect::{AccessInfo, Connect};
pub use encode_server::EncodeServerState;
pub use event::{EventKind, GameEvent, Heartbeat};
pub use ids::{
    AppId, ErrorMsg, IdempotencyKey, PhoneId, QueueId, SessionId, UserId, WebhookEventId,
};
pub use queue::{Priority, WaitSecs};
pub use recovery::{Action, Outcome, Reason, RecoveryMark};
pub use rollout::{
    MAX_PLAN_COUNT, PAUSED_BY_CPHUB, PhoneStep, RolloutPlan, RolloutState, RolloutTarget,
    RolloutTransition, pause_reason, rollout_versions,
};
pub use session::{EndReason, Session, SessionState};
pub use shell::{
    CommandOutcome, CommandRun, MAX_COMMAND_BYTES, MAX_OUTPUT_BYTES, ShellCommand,
    ShellCommandError, truncate_bytes,
};
pub use time::UtcTime;
pub use webhook::{DeliveryState, WebhookEventType};

/// Why a wire value was refused. `field` is the JSON path, so the caller can fix its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ParseError {
    pub field: &'static str,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {0} characters")]
    TooLong(usize),
    #[error("only letters, digits and _.:- are allowed")]
    BadCharacters,
    #[error("expected an RFC 3339 time such as 2019-11-14T19:38:49Z")]
    BadTime,
    #[error("time out of range (years 1970 to 9999)")]
    TimeOutOfRange,
    #[error("more than a day ahead of cphub's clock: the phone's clock is wrong")]
    TimeAhead,
    #[error("unknown event_type {0:?}")]
    UnknownEventType(String),
    #[error("unknown status {0} (0 = enter, 1 = quit)")]
    UnknownStatus(i64),
    #[error("required when event.status is 1 (quit)")]
    Required,
    #[error("must not be negative")]
    Negative,
    #[error("{0}")]
    Invalid(&'static str),
}

impl ParseError {
    pub fn new(field: &'static str, problem: Problem) -> Self {
        ParseError { field, problem }
    }
}
