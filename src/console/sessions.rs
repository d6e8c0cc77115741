//! Sessions: the live ones (held for a player, or playing) with what they have played so far,
//! a search by session id or user id, and one session with its event log.

use actix_web::{HttpResponse, web};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::Operator;
use super::book::Book;
use super::layout::{self, duration, maybe_when, when};
use super::{ConsoleError, PREFIX};
use crate::domain::{Session, SessionId, SessionState, UserId, UtcTime};
use crate::store::{SessionFilter, Store};

const LIMIT: i64 = 200;

/// The states of a live session, in the order the page lists them.
const LIVE: [SessionState; 3] = [
    SessionState::Playing,
    SessionState::Verified,
    SessionState::Minted,
];

#[derive(Deserialize)]
pub(super) struct Search {
    #[serde(default)]
    q: String,
}

pub(super) async fn page(
    operator: Operator,
    query: web::Query<Search>,
    book: Book,
) -> Result<HttpResponse, ConsoleError> {
    let q = query.q.trim();
    let (heading, sessions) = match q.is_empty() {
        true => ("Live sessions".to_owned(), live(book.store()).await?),
        false => (
            format!("Sessions matching “{q}”"),
            search(book.store(), q).await?,
        ),
    };
    let body = html! {
        h1 { "Sessions" }
        form.filters method="get" action={ (PREFIX) "/sessions" } role="search" {
            div {
                label for="q" { "Session id or user id" }
                input #q name="q" value=(q);
            }
            button type="submit" { "Search" }
        }
        h2 { (heading) " " span.muted { "(" (sessions.len()) ")" } }
        (table(&sessions, book.now))
    };
    Ok(layout::html_ok(layout::page(&operator, "Sessions", body)))
}

async fn live(store: &dyn Store) -> Result<Vec<Session>, ConsoleError> {
    let mut sessions = Vec::new();
    for state in LIVE {
        let filter = SessionFilter {
            state: Some(state),
            ..SessionFilter::default()
        };
        sessions.extend(store.sessions(&filter, LIMIT).await?);
    }
    Ok(sessions)
}

/// The session with that id, else the newest sessions of that user.
async fn search(store: &dyn Store, q: &str) -> Result<Vec<Session>, ConsoleError> {
    if let Ok(id) = SessionId::parse("q", q.to_owned())
        && let Some(session) = store.session(&id).await?
    {
        return Ok(vec![session]);
    }
    let Ok(user) = UserId::parse("q", q.to_owned()) else {
        return Ok(Vec::new());
    };
    let filter = SessionFilter {
        user_id: Some(user),
        ..SessionFilter::default()
    };
    Ok(store.sessions(&filter, LIMIT).await?)
}

/// How long a session has played: measured once it ended, so far while it plays.
fn played(session: &Session, now: UtcTime) -> Option<i64> {
    let so_far = || session.started_at.map(|s| now.seconds_since(s).max(0));
    match session.state {
        SessionState::Playing => so_far(),
        _ => session.duration_seconds,
    }
}

/// Sessions as a table (also the phone page's).
pub(super) fn table(sessions: &[Session], now: UtcTime) -> Markup {
    html! {
        @if sessions.is_empty() { p.muted { "None." } }
        @else {
            div.table-wrap { table {
                thead { tr { th { "Session" } th { "State" } th { "Phone" } th { "App" } th { "User" } th { "Started" } th.num { "Played" } } }
                tbody { @for s in sessions {
                    tr data-session=(s.session_id) {
                        td { a href={ (PREFIX) "/sessions/" (s.session_id) } { (s.session_id) } }
                        td { (s.state.as_str()) }
                        td { a href={ (PREFIX) "/phones/" (s.phone_id) } { (s.phone_id) } }
                        td { (s.app_id) }
                        td { (s.user_id.as_ref().map_or("—", |u| u.as_str())) }
                        td { (maybe_when(s.started_at)) }
                        td.num { (played(s, now).map(duration).unwrap_or_default()) }
                    }
                } }
            } }
        }
    }
}

pub(super) async fn show(
    operator: Operator,
    path: web::Path<String>,
    book: Book,
) -> Result<HttpResponse, ConsoleError> {
    let id = SessionId::parse("session_id", path.into_inner())?;
    let store = book.store();
    let session = store.session(&id).await?;
    let session = session.ok_or(ConsoleError::NotFound("session"))?;
    let events = store.session_events(&session).await?;
    let body = html! {
        h1 { "Session " (session.session_id) }
        (table(std::slice::from_ref(&session), book.now))
        dl.facts {
            dt { "Minted" } dd { (maybe_when(session.minted_at)) }
            dt { "Verified" } dd { (maybe_when(session.verified_at)) }
            dt { "Ended" } dd { (maybe_when(session.ended_at)) }
            dt { "End reason" } dd { (session.end_reason.map_or("—".into(), |r| format!("{r:?}"))) }
            dt { "Reported run_time" } dd { (session.reported_run_time.map_or("—".into(), |s| s.to_string())) }
            dt { "Error" } dd { (session.error_msg.as_deref().unwrap_or("—")) }
        }
        h2 { "Event log" }
        @if events.is_empty() { p.muted { "No event yet." } }
        @else {
            div.table-wrap { table {
                thead { tr { th { "Time" } th { "Event" } th { "Phone" } th.num { "run_time" } th { "Error" } } }
                tbody { @for e in &events {
                    tr { td { (when(e.time)) } td { (e.kind) } td { (e.phone_id) }
                         td.num { (e.run_time.map_or(String::new(), |r| r.to_string())) }
                         td { (e.error_msg.as_deref().unwrap_or("")) } }
                } }
            } }
        }
    };
    Ok(layout::html_ok(layout::page(&operator, "Session", body)))
}
