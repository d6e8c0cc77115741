//! What the phones tell cphub, after parsing.

use super::{AppId, ErrorMsg, ParseError, PhoneId, SessionId, UtcTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Enter,
    Quit,
}

impl EventKind {
    /// The wire value of `event.status` (chapter 6.2 / 6.3).
    pub fn status(self) -> i16 {
        match self {
            EventKind::Enter => 0,
            EventKind::Quit => 1,
        }
    }

    pub fn from_status(status: i64) -> Option<Self> {
        match status {
            0 => Some(EventKind::Enter),
            1 => Some(EventKind::Quit),
            _ => None,
        }
    }
}

/// An enter or quit event. `run_time` is present exactly for quits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameEvent {
    pub kind: EventKind,
    pub session_id: SessionId,
    pub phone_id: PhoneId,
    pub app_id: AppId,
    pub time: UtcTime,
    /// As reported, unit unverified: the reference says seconds, its example says 41000.
    pub run_time: Option<i64>,
    pub error_msg: Option<ErrorMsg>,
}

impl GameEvent {
    /// Whether `error_msg` was cut to its bound (flagged in the event log, counted).
    pub fn error_msg_truncated(&self) -> bool {
        self.error_msg.as_ref().is_some_and(ErrorMsg::truncated)
    }

    /// The event as received at `received_at`: refused if its time is more than a day ahead
    /// ([`UtcTime::not_far_ahead`]).
    pub fn received(self, received_at: UtcTime) -> Result<Self, ParseError> {
        self.time.not_far_ahead("event.time", received_at)?;
        Ok(self)
    }
}

/// A heartbeat. Blank `session_id`/`app_id` on the wire mean the phone is alive and idle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub phone_id: PhoneId,
    pub time: UtcTime,
    pub session_id: Option<SessionId>,
    pub app_id: Option<AppId>,
    /// cphub's own clock when the heartbeat arrived.
    pub received_at: UtcTime,
}

impl Heartbeat {
    /// Heartbeats may be reordered: of two for one phone keep the one the phone sent last.
    pub fn newer_than(&self, other: &Heartbeat) -> bool {
        (self.time, self.received_at) >= (other.time, other.received_at)
    }
}
