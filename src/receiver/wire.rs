//! The callback bodies of chapter 6 exactly as they arrive, and their parsing into domain
//! types. serde checks shape and types; `TryFrom` checks meaning and names the bad field.
//! Unknown fields are ignored: the engine may add some, and the `ticket` of events is
//! deliberately not read (it is a secret and events do not need it). None of these structs
//! derives `Debug`: the sign-check body carries the ticket.

use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use crate::access::{self, Sealed, SignCheck, Ticket};
use crate::config::{AccessSettings, EncryptedDataMode};
use crate::domain::{
    AppId, ErrorMsg, EventKind, GameEvent, Heartbeat, ParseError, PhoneId, Problem, SessionId,
    UtcTime,
};

/// `POST {base_path}/events` (chapter 6.2 enter, 6.3 quit).
#[derive(Deserialize, ToSchema)]
pub struct EventEnvelope {
    /// `app`.
    #[schema(pattern = "^app$")]
    event_type: String,
    #[schema(value_type = GameEventDoc)]
    event: WireGameEvent,
}

/// What the events route parses; [`GameEventDoc`] tells clients the same more exactly.
#[derive(Deserialize)]
struct WireGameEvent {
    #[serde(deserialize_with = "integer")]
    status: i64,
    phone_id: String,
    app_id: String,
    session_id: String,
    time: String,
    /// Read only for a quit (6.3): 6.2 has no `run_time`, so whatever an enter carries in
    /// it (an engine sending one shape for both, `"0"`) is ignored, not refused.
    #[serde(default)]
    run_time: Option<serde_json::Value>,
    #[serde(default)]
    error_msg: Option<String>,
}

/// Chapter 6.2 or 6.3, told apart by `status`.
// The `*Doc` types only describe the body in the OpenAPI document; `Serialize` is derived
// for utoipa to read `untagged`.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum GameEventDoc {
    Enter(EnterEventDoc),
    Quit(QuitEventDoc),
}

/// Chapter 6.2. A `run_time` here is ignored.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
struct EnterEventDoc {
    /// 0: enter.
    #[schema(minimum = 0, maximum = 0)]
    status: i64,
    #[serde(flatten)]
    about: EventAboutDoc,
}

/// Chapter 6.3.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
struct QuitEventDoc {
    /// 1: quit.
    #[schema(minimum = 1, maximum = 1)]
    status: i64,
    /// Seconds in the game as the phone counted them; stored as reported (billing uses the
    /// measured duration).
    #[schema(minimum = 0)]
    run_time: i64,
    #[serde(flatten)]
    about: EventAboutDoc,
}

/// What enter and quit both carry.
#[derive(serde::Serialize, ToSchema)]
#[allow(dead_code)]
struct EventAboutDoc {
    phone_id: PhoneId,
    app_id: AppId,
    session_id: SessionId,
    /// RFC 3339, e.g. `2019-11-14T19:38:49Z`, or the same without a zone, read as UTC
    /// (chapter 6: "The value is a UTC time"); years 1970 to 9999.
    #[schema(
        pattern = "^\\s*(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?\\s*$"
    )]
    time: String,
    error_msg: Option<ErrorMsg>,
}

/// `POST {base_path}/heartbeat` (chapter 6.4).
#[derive(Deserialize, ToSchema)]
pub struct HeartbeatEnvelope {
    /// `heartbeat` or `app`.
    #[schema(pattern = "^(heartbeat|app)$")]
    event_type: String,
    event: WireHeartbeat,
}

#[derive(Deserialize, ToSchema)]
struct WireHeartbeat {
    #[schema(value_type = PhoneId)]
    phone_id: String,
    /// RFC 3339, e.g. `2019-11-14T19:38:49Z`, or the same without a zone, read as UTC
    /// (chapter 6: "The value is a UTC time"); years 1970 to 9999.
    #[schema(
        pattern = "^\\s*(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?\\s*$"
    )]
    time: String,
    /// Blank while no game runs; missing or null is read the same way.
    #[serde(default, deserialize_with = "blank_as_none")]
    #[schema(pattern = "^([A-Za-z0-9_.:-]*|\\s*)$", max_length = 128)]
    app_id: Option<String>,
    /// Blank while no game runs.
    #[serde(default, deserialize_with = "blank_as_none")]
    #[schema(pattern = "^([A-Za-z0-9_.:-]*|\\s*)$", max_length = 64)]
    session_id: Option<String>,
}

/// JSON has one number type: `41000.0` is the integer 41000 (JSON Schema agrees), and an
/// engine that writes it so is not refused. A fraction or an out-of-range value is.
fn integer<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_i64()
        .or_else(|| {
            let f = n.as_f64()?;
            // `i64::MAX as f64` rounds up to 2^63, itself out of range: hence `<`.
            let whole = f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64;
            whole.then_some(f as i64)
        })
        .ok_or_else(|| serde::de::Error::custom(format!("invalid value: {n}, expected an integer")))
}

/// As [`integer`], for an optional field (the operator API's `priority` too).
pub(crate) fn optional_integer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct Integer(#[serde(deserialize_with = "integer")] i64);
    Ok(Option::<Integer>::deserialize(d)?.map(|Integer(n)| n))
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
        let run_time = match kind {
            EventKind::Enter => Ok(None),
            EventKind::Quit => optional_integer(e.run_time.unwrap_or_default()),
        };
        let not_seconds = |_| {
            let problem = Problem::Invalid("expected an integer number of seconds");
            ParseError::new("event.run_time", problem)
        };
        let run_time = match (kind, run_time.map_err(not_seconds)?) {
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
            time: UtcTime::parse_callback("event.time", &e.time)?,
            run_time,
            error_msg: e.error_msg.map(ErrorMsg::bounded),
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
            time: UtcTime::parse_callback("event.time", &e.time)?
                .not_far_ahead("event.time", received_at)?,
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

/// `POST {base_path}/sign-check` (chapter 6.1). The reference spells `encrypted_data`; the
/// misspelling `encypted_data` is read too (the reference is silent on it: an engine that
/// misspells the field would otherwise have its data read as absent). Both at once is a 400.
#[derive(Deserialize, ToSchema)]
pub struct SignCheckBody {
    #[schema(value_type = SessionId)]
    session_id: String,
    ticket: String,
    /// Epoch milliseconds as minted, as a string (a JSON integer is read the same way).
    #[serde(deserialize_with = "string_or_integer")]
    #[schema(pattern = "^[0-9]{1,19}$")]
    auth_ts: String,
    /// In `access.data_encoding`, under `access.cipher` (by default AES-256-GCM: ciphertext
    /// followed by the 16-byte tag). Also read as `encypted_data` (not the reference's).
    #[serde(default, alias = "encypted_data")]
    encrypted_data: Option<String>,
    /// `access.cipher.iv_bytes` (12 by default) in `access.iv_encoding`; required with
    /// `encrypted_data`.
    #[serde(default)]
    aes_iv: Option<String>,
}

/// `auth_ts` is a string in the reference; a JSON integer is read the same way.
fn string_or_integer<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum StringOrInteger {
        String(String),
        Integer(u64),
    }
    Ok(match StringOrInteger::deserialize(d)? {
        StringOrInteger::String(s) => s,
        StringOrInteger::Integer(n) => n.to_string(),
    })
}

impl SignCheckBody {
    pub fn parse(self, settings: &AccessSettings) -> Result<(SessionId, SignCheck), ParseError> {
        let session_id = SessionId::parse("session_id", self.session_id)?;
        let ticket = Ticket::presented(self.ticket).ok_or(ParseError::new(
            "ticket",
            Problem::Invalid("must be 1 to 256 characters"),
        ))?;
        let auth_ts = parse_epoch_millis(&self.auth_ts)?;
        let (data, iv) = (
            self.encrypted_data.unwrap_or_default(),
            self.aes_iv.unwrap_or_default(),
        );
        let sealed = match settings.encrypted_data {
            _ if data.is_empty() => Sealed::Absent,
            EncryptedDataMode::Off => Sealed::Absent,
            EncryptedDataMode::Enforce => decode_sealed(&data, &iv, settings)?,
            // Observe never refuses: what does not decode is counted as failed.
            EncryptedDataMode::Observe => {
                decode_sealed(&data, &iv, settings).unwrap_or(Sealed::Garbled)
            }
        };
        let sign_check = SignCheck::new(ticket, auth_ts, sealed, [&data, &iv]);
        Ok((session_id, sign_check))
    }
}

fn parse_epoch_millis(raw: &str) -> Result<i64, ParseError> {
    let invalid = || {
        ParseError::new(
            "auth_ts",
            Problem::Invalid("expected epoch milliseconds as decimal digits"),
        )
    };
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    raw.parse().map_err(|_| invalid())
}

/// `encrypted_data` and `aes_iv` in their encodings, the IV of the configured cipher's
/// length, the data at least as long as the cipher's smallest output.
fn decode_sealed(data: &str, iv: &str, settings: &AccessSettings) -> Result<Sealed, ParseError> {
    const DATA: &str = "encrypted_data";
    let not_encoded =
        |field| ParseError::new(field, Problem::Invalid("not in the configured encoding"));
    if iv.is_empty() {
        return Err(ParseError::new(
            "aes_iv",
            Problem::Invalid("required with encrypted_data"),
        ));
    }
    let iv = access::decode(settings.iv_encoding, iv).ok_or(not_encoded("aes_iv"))?;
    if iv.len() != settings.cipher.iv_bytes() {
        let length = match settings.cipher.iv_bytes() {
            12 => "must be 12 bytes (access.cipher.iv_bytes)",
            _ => "must be 16 bytes (access.cipher.iv_bytes)",
        };
        return Err(ParseError::new("aes_iv", Problem::Invalid(length)));
    }
    if data.len() > 8192 {
        return Err(ParseError::new(DATA, Problem::TooLong(8192)));
    }
    let data = access::decode(settings.data_encoding, data).ok_or(not_encoded(DATA))?;
    // A GCM tag, or one CBC block, is 16 bytes.
    if data.len() < 16 {
        return Err(ParseError::new(
            DATA,
            Problem::Invalid("shorter than 16 bytes (a GCM tag or a CBC block)"),
        ));
    }
    Ok(Sealed::Present { data, iv })
}
