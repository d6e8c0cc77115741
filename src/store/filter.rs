//! Which sessions to list: typed by the operator (query string or command line), parsed
//! once into the filter the store runs.

use crate::domain::{
    AppId, ParseError, PhoneId, Problem, SessionId, SessionState, UserId, UtcTime,
};

/// Filters of the session list; `before` is the keyset cursor (created_at, session_id).
#[derive(Debug, Clone, Default)]
pub struct SessionFilter {
    pub app_id: Option<AppId>,
    pub phone_id: Option<PhoneId>,
    pub user_id: Option<UserId>,
    pub state: Option<SessionState>,
    pub from: Option<UtcTime>,
    pub to: Option<UtcTime>,
    pub before: Option<(UtcTime, SessionId)>,
}

/// The filter as typed, shared by `GET /api/v1/sessions` and `cphub sessions list`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SessionFilterArgs {
    #[arg(long)]
    pub app_id: Option<String>,
    #[arg(long)]
    pub phone_id: Option<String>,
    #[arg(long)]
    pub user_id: Option<String>,
    /// minted, verified, expired, playing, ended or abandoned.
    #[arg(long)]
    pub state: Option<String>,
    /// Sessions recorded at or after (RFC 3339).
    #[arg(long)]
    pub from: Option<String>,
    /// Sessions recorded before (RFC 3339).
    #[arg(long)]
    pub to: Option<String>,
}

impl SessionFilterArgs {
    pub fn parse(self) -> Result<SessionFilter, ParseError> {
        let time = |field, raw: Option<String>| raw.map(|t| UtcTime::parse(field, &t)).transpose();
        Ok(SessionFilter {
            app_id: self.app_id.map(|a| AppId::parse("app_id", a)).transpose()?,
            phone_id: self
                .phone_id
                .map(|p| PhoneId::parse("phone_id", p))
                .transpose()?,
            user_id: self
                .user_id
                .map(|u| UserId::parse("user_id", u))
                .transpose()?,
            state: self.state.map(parse_state).transpose()?,
            from: time("from", self.from)?,
            to: time("to", self.to)?,
            before: None,
        })
    }
}

fn parse_state(state: String) -> Result<SessionState, ParseError> {
    SessionState::from_db(&state).ok_or(ParseError::new(
        "state",
        Problem::Invalid("one of minted, verified, expired, playing, ended, abandoned"),
    ))
}
