//! `cphub sessions list|show`: the session book, straight from the database, with the same
//! filters as `GET /api/v1/sessions`.

use clap::Subcommand;

use super::{Format, Outcome};
use crate::config::Settings;
use crate::domain::{ParseError, Session, SessionId};
use crate::store::{self, SessionFilterArgs, StoreError};

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Sessions newest first (by when cphub recorded them).
    List {
        #[command(flatten)]
        filter: SessionFilterArgs,
        /// At most this many sessions.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One session with its event log, as JSON.
    Show { session_id: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SessionsError {
    #[error(transparent)]
    Invalid(#[from] ParseError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no session {0}")]
    NotFound(String),
    #[error("could not write JSON")]
    Json(#[from] serde_json::Error),
}

/// Sessions are fetched in pages of this many, continuing after the last one.
const PAGE: usize = 1000;

pub async fn run(settings: &Settings, command: SessionsCommand) -> Result<Outcome, SessionsError> {
    let store = store::connect(&settings.database).await?;
    match command {
        SessionsCommand::List {
            filter,
            limit,
            format,
        } => {
            let mut filter = filter.parse()?;
            let mut sessions: Vec<Session> = Vec::new();
            while sessions.len() < limit {
                let want = PAGE.min(limit - sessions.len());
                let page = store.sessions(&filter, want as i64).await?;
                let full = page.len() == want;
                sessions.extend(page);
                match sessions.last() {
                    Some(last) if full => {
                        filter.before = Some((last.created_at, last.session_id.clone()))
                    }
                    _ => break,
                }
            }
            print_sessions(&sessions, format)?;
        }
        SessionsCommand::Show { session_id } => {
            let id = SessionId::parse("session_id", session_id)?;
            let session = store
                .session(&id)
                .await?
                .ok_or_else(|| SessionsError::NotFound(id.to_string()))?;
            let events = store.session_events(&session).await?;
            // As `GET /api/v1/sessions/{id}` answers it (docs/api.md: the two print the
            // same), `missing_start` included.
            let missing_start = session.missing_start();
            let mut view = serde_json::to_value(&session)?;
            view["missing_start"] = missing_start.into();
            view["events"] = serde_json::to_value(events)?;
            println!("{}", serde_json::to_string_pretty(&view)?);
        }
    }
    Ok(Outcome::AllSucceeded)
}

fn print_sessions(sessions: &[Session], format: Format) -> Result<(), serde_json::Error> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(sessions)?);
        return Ok(());
    }
    println!(
        "{:<34} {:<10} {:<26} {:<34} {:<16} {:<22} {:>9}",
        "SESSION_ID", "STATE", "APP_ID", "PHONE_ID", "USER_ID", "STARTED", "SECONDS"
    );
    for s in sessions {
        let started = serde_json::to_value(s.started_at)?;
        println!(
            "{:<34} {:<10} {:<26} {:<34} {:<16} {:<22} {:>9}",
            s.session_id,
            s.state.as_str(),
            s.app_id,
            s.phone_id,
            s.user_id.as_ref().map_or("-", |u| u.as_str()),
            started.as_str().unwrap_or("-"),
            s.duration_seconds.map_or("-".to_owned(), |d| d.to_string())
        );
    }
    Ok(())
}
