//! Applying a batch of enter/quit events set-wise, in one write transaction.
//!
//! Each statement is a round trip (to sqlx's SQLite thread, or over the socket to
//! PostgreSQL), and round trips, not SQL work, were what limited events when each one cost
//! six statements (docs/benchmarks.md). Here a batch costs eight, whatever its size: the
//! batch's sessions, their accepted events and the phones they touch are read with one
//! statement each, every delivery is decided in memory in arrival order, and what changed
//! is written back with one statement per table. Deciding in arrival order against what
//! the earlier deliveries of the batch left keeps the outcomes of one-by-one application,
//! also for several events of one session in one batch (enter and quit, a redelivery, a
//! contradiction).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::codec::StoredEvent;
use super::{Applied, ApplyRules, EventOutcome, ReceivedEvent, StoreError};
use crate::domain::{Session, SessionState, UtcTime};

/// One row of `session_events` to insert.
pub(super) struct EventRow<'a> {
    pub received: &'a ReceivedEvent,
    /// `accepted`, or `conflict` for a delivery contradicting the accepted one.
    pub outcome: &'static str,
}

/// An accepted event already in the book.
#[derive(sqlx::FromRow)]
pub(crate) struct AcceptedEvent {
    pub session_id: String,
    pub status: i16,
    #[sqlx(flatten)]
    pub event: StoredEvent,
}

/// The columns of a phone that events change: read before the batch is decided, written
/// back after.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PhoneLinks {
    pub phone_id: String,
    pub current_session_id: Option<String>,
    pub current_app_id: Option<String>,
    pub current_session_started_at: Option<UtcTime>,
    pub allocated_session_id: Option<String>,
    pub allocated_until: Option<UtcTime>,
    pub updated_at: UtcTime,
}

/// A session to write back, with cphub's time of its last accepted event.
pub(super) struct SessionUpdate<'a> {
    pub session: &'a Session,
    pub updated_at: UtcTime,
}

/// The statements of a batch, run in one write transaction of a backend. The reads of
/// rows the batch changes lock them on PostgreSQL (replicas share the book), in key
/// order, so that two batches never wait for each other in a cycle.
#[async_trait]
pub(super) trait BatchTx: Send {
    /// A time as the backend stores it (whole milliseconds on SQLite, microseconds on
    /// PostgreSQL). What one delivery leaves for the next is passed through this, so it
    /// compares as it did when each delivery read it back from the book.
    fn stored(time: UtcTime) -> UtcTime;

    /// Creates the sessions the book lacks, blank, from their first event: creating before
    /// locking makes two writers' first events of a session wait for each other instead
    /// of both starting from nothing.
    async fn create_sessions(&mut self, firsts: &[&ReceivedEvent]) -> Result<(), StoreError>;

    async fn lock_sessions(&mut self, ids: &[&str]) -> Result<Vec<Session>, StoreError>;

    async fn accepted_events(&mut self, ids: &[&str]) -> Result<Vec<AcceptedEvent>, StoreError>;

    /// Inserts the rows in order, so their ids follow arrival; returns how many were
    /// inserted (fewer when another writer accepted one of them first).
    async fn insert_events(&mut self, rows: &[EventRow<'_>]) -> Result<u64, StoreError>;

    /// Creates the phones the book lacks, blank, with their first time; as for sessions.
    async fn create_phones(&mut self, firsts: &[(&str, UtcTime)]) -> Result<(), StoreError>;

    async fn lock_phones(&mut self, ids: &[&str]) -> Result<Vec<PhoneLinks>, StoreError>;

    async fn save_sessions(&mut self, sessions: &[SessionUpdate<'_>]) -> Result<(), StoreError>;

    async fn save_phones(&mut self, phones: &[&PhoneLinks]) -> Result<(), StoreError>;
}

/// Applies `events` in arrival order; one result per event. The caller commits.
pub(super) async fn apply<T: BatchTx>(
    tx: &mut T,
    events: &[ReceivedEvent],
    rules: ApplyRules,
) -> Result<Vec<Applied>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids = sorted_unique(events.iter().map(|r| r.event.session_id.as_str()));
    if rules.record_unknown_sessions {
        let firsts = first_of_each(events.iter(), |r| r.event.session_id.as_str());
        tx.create_sessions(&firsts).await?;
    }
    let sessions = tx.lock_sessions(&ids).await?;
    let accepted = tx.accepted_events(&ids).await?;
    let mut book = Book::new(sessions, accepted, T::stored);
    let applied = events
        .iter()
        .map(|received| book.decide(received, rules))
        .collect::<Result<Vec<_>, _>>()?;
    if book.rows.is_empty() {
        return Ok(applied); // duplicates and ignored events only: nothing to write
    }
    let inserted = tx.insert_events(&book.rows).await?;
    if inserted != book.rows.len() as u64 {
        return Err(StoreError::Raced);
    }
    let changes: Vec<_> = events
        .iter()
        .zip(&applied)
        .filter_map(|(received, applied)| applied.session.as_ref().map(|s| (received, s)))
        .collect();
    if changes.is_empty() {
        return Ok(applied); // conflicts only: logged, not applied
    }
    tx.save_sessions(&book.updates()).await?;
    settle_phones(tx, &changes).await?;
    Ok(applied)
}

/// The batch's sessions and accepted events as the deliveries decided so far leave them.
struct Book<'a> {
    sessions: HashMap<String, Session>,
    /// Keyed by session and status: at most one accepted enter and one accepted quit.
    accepted: HashMap<(String, i16), StoredEvent>,
    rows: Vec<EventRow<'a>>,
    /// cphub's time of each changed session's last accepted event.
    changed: HashMap<String, UtcTime>,
    stored: fn(UtcTime) -> UtcTime,
}

impl<'a> Book<'a> {
    fn new(
        sessions: Vec<Session>,
        accepted: Vec<AcceptedEvent>,
        stored: fn(UtcTime) -> UtcTime,
    ) -> Self {
        Book {
            sessions: sessions
                .into_iter()
                .map(|s| (s.session_id.to_string(), s))
                .collect(),
            accepted: accepted
                .into_iter()
                .map(|a| ((a.session_id, a.status), a.event))
                .collect(),
            rows: Vec::new(),
            changed: HashMap::new(),
            stored,
        }
    }

    /// One delivery, as it was decided alone: ignored without a session (unless unknown
    /// sessions are recorded, when it was created above), a duplicate or a conflict when
    /// its session and status were accepted already, else accepted and applied.
    fn decide(
        &mut self,
        received: &'a ReceivedEvent,
        rules: ApplyRules,
    ) -> Result<Applied, StoreError> {
        let event = &received.event;
        let unchanged = |outcome| {
            Ok(Applied {
                outcome,
                session: None,
            })
        };
        let Some(session) = self.sessions.get_mut(event.session_id.as_str()) else {
            if rules.record_unknown_sessions {
                let missing = format!("session {} was not created", event.session_id.as_str());
                return Err(StoreError::Corrupt(missing));
            }
            return unchanged(EventOutcome::Ignored);
        };
        let key = (event.session_id.as_str().to_owned(), event.kind.status());
        if let Some(first) = self.accepted.get(&key) {
            if first.describes(event, self.stored) {
                return unchanged(EventOutcome::Duplicate);
            }
            self.rows.push(EventRow {
                received,
                outcome: "conflict",
            });
            return unchanged(EventOutcome::Conflict);
        }
        let first = StoredEvent {
            phone_id: event.phone_id.as_str().to_owned(),
            app_id: event.app_id.as_str().to_owned(),
            event_time: (self.stored)(event.time),
            run_time: event.run_time,
        };
        self.accepted.insert(key, first);
        self.rows.push(EventRow {
            received,
            outcome: "accepted",
        });
        let after = session.clone().apply(event, rules.run_time_tolerance_secs);
        *session = Session {
            started_at: after.started_at.map(self.stored),
            ended_at: after.ended_at.map(self.stored),
            ..after.clone()
        };
        self.changed
            .insert(session.session_id.to_string(), received.received_at);
        Ok(Applied {
            outcome: EventOutcome::Accepted,
            session: Some(after),
        })
    }

    fn updates(&self) -> Vec<SessionUpdate<'_>> {
        self.changed
            .iter()
            .map(|(id, at)| SessionUpdate {
                session: &self.sessions[id],
                updated_at: *at,
            })
            .collect()
    }
}

/// Moves the phones as the accepted deliveries say, in arrival order, and writes back
/// those that changed.
async fn settle_phones<T: BatchTx>(
    tx: &mut T,
    changes: &[(&ReceivedEvent, &Session)],
) -> Result<(), StoreError> {
    // The phone an event names gets a row, as an upsert gave it (the session's own phone,
    // whose hold is cleared, is only updated if it has one).
    let firsts: Vec<_> = first_of_each(changes.iter(), |(r, _)| r.event.phone_id.as_str())
        .into_iter()
        .map(|(r, _)| (r.event.phone_id.as_str(), r.received_at))
        .collect();
    tx.create_phones(&firsts).await?;
    let named = changes.iter().map(|(r, _)| r.event.phone_id.as_str());
    let held = changes.iter().map(|(_, s)| s.phone_id.as_str());
    let ids = sorted_unique(named.chain(held));
    let mut phones: HashMap<String, (PhoneLinks, bool)> = tx
        .lock_phones(&ids)
        .await?
        .into_iter()
        .map(|p| (p.phone_id.clone(), (p, false)))
        .collect();
    for (received, session) in changes {
        settle_phone::<T>(&mut phones, received, session);
    }
    let changed: Vec<_> = phones
        .values()
        .filter(|(_, changed)| *changed)
        .map(|(p, _)| p)
        .collect();
    if !changed.is_empty() {
        tx.save_phones(&changed).await?;
    }
    Ok(())
}

/// What one accepted delivery does to the phones. A playing session becomes the current
/// one of the phone the event names unless that phone runs a later-started session (a
/// late enter loses); an ended one stops being current. Either way the hold minting took
/// on the session's own phone has served its purpose.
fn settle_phone<T: BatchTx>(
    phones: &mut HashMap<String, (PhoneLinks, bool)>,
    received: &ReceivedEvent,
    s: &Session,
) {
    let now = received.received_at;
    if let Some((p, changed)) = phones.get_mut(received.event.phone_id.as_str()) {
        if s.state == SessionState::Playing {
            // As SQL compares: nothing is later than an unknown start.
            let started = s.started_at.map(T::stored);
            let later = match (p.current_session_started_at, started) {
                (None, _) => true,
                (Some(current), Some(started)) => current <= started,
                (Some(_), None) => false,
            };
            if later {
                p.current_session_id = Some(s.session_id.to_string());
                p.current_app_id = Some(s.app_id.to_string());
                p.current_session_started_at = started;
                (p.updated_at, *changed) = (now, true);
            }
        } else if p.current_session_id.as_deref() == Some(s.session_id.as_str()) {
            p.current_session_id = None;
            p.current_app_id = None;
            p.current_session_started_at = None;
            (p.updated_at, *changed) = (now, true);
        }
    }
    if let Some((p, changed)) = phones.get_mut(s.phone_id.as_str())
        && p.allocated_session_id.as_deref() == Some(s.session_id.as_str())
    {
        p.allocated_session_id = None;
        p.allocated_until = None;
        (p.updated_at, *changed) = (now, true);
    }
}

fn sorted_unique<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut ids: Vec<_> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// The first item for each key, in arrival order.
fn first_of_each<'a, I: Copy>(
    items: impl Iterator<Item = I>,
    key: impl Fn(I) -> &'a str,
) -> Vec<I> {
    let mut seen = HashSet::new();
    items.filter(|&item| seen.insert(key(item))).collect()
}
