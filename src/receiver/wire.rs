//! The callback bodies of chapter 6 exactly as they arrive, and their parsing into domain
//! types. serde checks shape and types; `TryFrom` checks meaning and names the bad field.
//! Unknown fields are ignored: the engine may add some, and `ticket` is deliberately not
//! read here (it is a secret and events do not need it).

use serde::{Deserialize, Deserializer};

use crate::domain::{
    AppId, ErrorMsg, EventKind, GameEvent, Heartbeat, ParseError, PhoneId, Problem, SessionId,
    UtcTime,
};

/// `POST {base_path}/events` (chapter 6.2 enter, 6.3 quit).
#[derive(Deserialize)]
pub struct EventEnvelope {
    event_type: String,
    event: WireGameEvent,
}

#[derive(Deserialize)]
struct WireGameEvent {
    status: i64,
    phone_id: String,
    app_id: String,
    session_id: String,
    time: String,
    #[serde(default)]
    run_time: Option<i64>,
    #[serde(default)]
    error_msg: Option<String>,
}

/// `POST {base_path}/heartbeat` (chapter 6.4).
#[derive(Deserialize)]
pub struct HeartbeatEnvelope {
    event_type: String,
    event: WireHeartbeat,
}

#[derive(Deserialize)]
struct WireHeartbeat {
    phone_id: String,
    time: String,
    // Blank while no game runs; missing or null is read the same way.
    #[serde(default, deserialize_with = "blank_as_none")]
    app_id: Option<String>,
    #[serde(default, deserialize_with = "blank_as_none")]
    session_id: Option<String>,
}

fn blank_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.trim().is_empty()))
}

impl TryFrom<EventEnvelope> for GameEvent {
    type Error = ParseError;

    fn try_from(wire: EventEnvelope) -> Result<Self, Self::Error> {
        if wire.event_type != "app" {
            return Err(ParseError::new(
                "event_type",
                Problem::UnknownEventType(wire.event_type),
            ));
        }
        let e = wire.event;
        let kind = EventKind::from_status(e.status)
            .ok_or_else(|| ParseError::new("event.status", Problem::UnknownStatus(e.status)))?;
        let run_time = match (kind, e.run_time) {
            (EventKind::Enter, _) => None,
            (EventKind::Quit, None) => {
                return Err(ParseError::new("event.run_time", Problem::Required));
            }
            (EventKind::Quit, Some(t)) if t < 0 => {
                return Err(ParseError::new("event.run_time", Problem::Negative));
            }
            (EventKind::Quit, Some(t)) => Some(t),
        };
        Ok(GameEvent {
            kind,
            session_id: SessionId::parse("event.session_id", e.session_id)?,
            phone_id: PhoneId::parse("event.phone_id", e.phone_id)?,
            app_id: AppId::parse("event.app_id", e.app_id)?,
            time: UtcTime::parse("event.time", &e.time)?,
            run_time,
            error_msg: e
                .error_msg
                .map(|m| ErrorMsg::parse("event.error_msg", m))
                .transpose()?,
        })
    }
}

impl HeartbeatEnvelope {
    /// The reference's table says `event_type` "app", its example says "heartbeat": both mean
    /// a heartbeat on this route.
    pub fn parse(self, received_at: UtcTime) -> Result<Heartbeat, ParseError> {
        if !matches!(self.event_type.as_str(), "heartbeat" | "app") {
            return Err(ParseError::new(
                "event_type",
                Problem::UnknownEventType(self.event_type),
            ));
        }
        let e = self.event;
        Ok(Heartbeat {
            phone_id: PhoneId::parse("event.phone_id", e.phone_id)?,
            time: UtcTime::parse("event.time", &e.time)?,
            session_id: e
                .session_id
                .map(|s| SessionId::parse("event.session_id", s))
                .transpose()?,
            app_id: e
                .app_id
                .map(|a| AppId::parse("event.app_id", a))
                .transpose()?,
            received_at,
        })
    }
}
