//! Applying a batch of enter/quit events set-wise, in one write transaction.
//!
//! Each statement is a round trip (to sqlx's SQLite thread, or over the socket to
//! PostgreSQL), and round trips, not SQL work, were what limited events when each one cost
//! six statements, and then a batch eight (docs/benchmarks.md). Here a batch costs two,
//! whatever its size: one read returns the batch's sessions, their accepted events and the
//! phones together, every delivery is decided in memory in arrival order, and one write
//! stores what changed in every table. Deciding in arrival order against what
//! the earlier deliveries of the batch left keeps the outcomes of one-by-one application,
//! also for several events of one session in one batch (enter and quit, a redelivery, a
//! contradiction).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use sqlx::FromRow;

use super::codec::{SessionRow, StoredEvent};
use super::{Applied, ApplyRules, EventOutcome, ReceivedEvent, StoreError};
use crate::domain::{Session, SessionState, UtcTime};

/// One row of `session_events` to insert.
pub(super) struct EventRow<'a> {
    pub received: &'a ReceivedEvent,
    /// `accepted`, or `conflict` for a delivery contradicting the accepted one.
    pub outcome: &'static str,
    /// Its session's, as stored: the partition key of the event log on PostgreSQL.
    pub session_created_at: UtcTime,
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
    pub created_at: UtcTime,
    pub updated_at: UtcTime,
    /// The session a quit in this batch ended on the phone: the write clears the phone's
    /// `heartbeat_session_id` if it names it, and keeps it as `heartbeat_ended_session_id`
    /// (migration 0023). Not read: the write compares in SQL, against the row as it is.
    #[sqlx(skip)]
    pub ended_session_id: Option<String>,
}

/// A phone to write back. One the read did not find is created by the write, blank but
/// for what the batch did to it, as the upsert of a first event created it.
pub(super) struct PhoneChange {
    pub links: PhoneLinks,
    /// Found (and, on PostgreSQL, locked) by the batch's read.
    pub existed: bool,
}

/// A session to write back, with cphub's time of its last accepted event.
pub(super) struct SessionUpdate<'a> {
    pub session: &'a Session,
    pub updated_at: UtcTime,
}

/// What the batch's one read asks for.
pub(super) struct BatchRead<'a> {
    /// The first event of each session, to create the sessions the book lacks, blank;
    /// empty unless unknown sessions are recorded. Creating before locking makes two
    /// writers' first events of a session wait for each other instead of both starting
    /// from nothing.
    pub firsts: Vec<&'a ReceivedEvent>,
    /// The batch's sessions, in key order.
    pub sessions: Vec<&'a str>,
    /// The phones the batch's events name, in key order (the read adds the sessions' own).
    pub phones: Vec<&'a str>,
}

/// What the read found: the batch's sessions, their accepted events, the phones.
#[derive(Default)]
pub(super) struct BatchRows {
    pub sessions: Vec<Session>,
    pub accepted: Vec<AcceptedEvent>,
    pub phones: Vec<PhoneLinks>,
}

/// What the batch's one write stores.
pub(super) struct BatchWrite<'a> {
    pub events: &'a [EventRow<'a>],
    pub sessions: Vec<SessionUpdate<'a>>,
    pub phones: Vec<PhoneChange>,
}

/// How many rows the write stored: fewer events than asked when another writer accepted
/// one of them first, fewer phones when another writer gave a phone the read did not find
/// a session first.
pub(super) struct Written {
    pub events: u64,
    pub phones: u64,
}

/// A batch costs two statements, one round trip each, in one write transaction of a
/// backend: a read of every row the batch may change and a write of what changed. The read
/// locks the rows on PostgreSQL (replicas share the book): sessions, then phones, each in
/// key order, as every other writer does, so that two writers never wait in a cycle.
#[async_trait]
pub(super) trait BatchTx: Send {
    /// A time as the backend stores it (whole milliseconds on SQLite, microseconds on
    /// PostgreSQL). What one delivery leaves for the next is passed through this, so it
    /// compares as it did when each delivery read it back from the book.
    fn stored(time: UtcTime) -> UtcTime;

    /// Creates the missing sessions, then reads the sessions, their accepted events, and
    /// the phones the events name and the sessions hold.
    async fn read(&mut self, read: &BatchRead<'_>) -> Result<BatchRows, StoreError>;

    /// Inserts the event rows in order (so their ids follow arrival), saves the sessions
    /// and creates or saves the phones.
    async fn write(&mut self, write: &BatchWrite<'_>) -> Result<Written, StoreError>;
}

/// Applies `events` in arrival order; one result per event. The caller commits.
pub(super) async fn apply<T: BatchTx>(
    tx: &mut T,
    events: &[&ReceivedEvent],
    rules: ApplyRules,
) -> Result<Vec<Applied>, StoreError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let rows = read(tx, events, rules).await?;
    let mut book = Book::new(rows.sessions, rows.accepted, T::stored)?;
    let applied = events
        .iter()
        .map(|received| book.decide(received, rules))
        .collect::<Result<Vec<_>, _>>()?;
    if book.rows.is_empty() {
        return Ok(applied); // duplicates and ignored events only: nothing to write
    }
    let changes: Vec<_> = events
        .iter()
        .copied()
        .zip(&applied)
        .filter_map(|(received, applied)| applied.session.as_ref().map(|s| (received, s)))
        .collect();
    let write = BatchWrite {
        events: &book.rows,
        sessions: book.updates(),
        phones: settle_phones::<T>(rows.phones, &changes),
    };
    let written = tx.write(&write).await?;
    if written.events != write.events.len() as u64 || written.phones != write.phones.len() as u64 {
        return Err(StoreError::Raced);
    }
    Ok(applied)
}

/// The batch's read. On PostgreSQL the statement's snapshot predates its own inserts and
/// its waits: a session another writer created after the snapshot, while our insert waited
/// for it, is neither created nor found. A second read, a new statement, sees it.
async fn read<T: BatchTx>(
    tx: &mut T,
    events: &[&ReceivedEvent],
    rules: ApplyRules,
) -> Result<BatchRows, StoreError> {
    let read = BatchRead {
        firsts: match rules.record_unknown_sessions {
            true => first_of_each(events.iter().copied(), |r| r.event.session_id.as_str()),
            false => Vec::new(),
        },
        sessions: sorted_unique(events.iter().map(|r| r.event.session_id.as_str())),
        phones: sorted_unique(events.iter().map(|r| r.event.phone_id.as_str())),
    };
    let rows = tx.read(&read).await?;
    if rules.record_unknown_sessions && rows.sessions.len() < read.sessions.len() {
        return tx.read(&read).await;
    }
    Ok(rows)
}

/// The batch's sessions and accepted events as the deliveries decided so far leave them.
struct Book<'a> {
    /// Keyed by session id: the one key per session, made once by the read, so deciding a
    /// delivery allocates no key of its own.
    sessions: HashMap<String, Entry>,
    rows: Vec<EventRow<'a>>,
    stored: fn(UtcTime) -> UtcTime,
}

/// One session of the batch.
struct Entry {
    session: Session,
    /// Its accepted enter and quit (at most one each), by [`slot`].
    accepted: [Option<StoredEvent>; 2],
    /// cphub's time of its last accepted event, once one changed it.
    changed: Option<UtcTime>,
}

/// Where an event of `status` (0 enter, 1 quit) is kept in [`Entry::accepted`].
fn slot(status: i16) -> Result<usize, StoreError> {
    match status {
        0 | 1 => Ok(status as usize),
        _ => Err(StoreError::Corrupt(format!(
            "accepted event of status {status}"
        ))),
    }
}

impl<'a> Book<'a> {
    fn new(
        sessions: Vec<Session>,
        accepted: Vec<AcceptedEvent>,
        stored: fn(UtcTime) -> UtcTime,
    ) -> Result<Self, StoreError> {
        let mut entries: HashMap<String, Entry> = sessions
            .into_iter()
            .map(|session| {
                let entry = Entry {
                    session,
                    accepted: [None, None],
                    changed: None,
                };
                (entry.session.session_id.to_string(), entry)
            })
            .collect();
        for a in accepted {
            if let Some(entry) = entries.get_mut(a.session_id.as_str()) {
                entry.accepted[slot(a.status)?] = Some(a.event);
            }
        }
        Ok(Book {
            sessions: entries,
            rows: Vec::new(),
            stored,
        })
    }

    /// One delivery, as it was decided alone: ignored without a session (unless unknown
    /// sessions are recorded, when it was created above), a duplicate or a conflict when
    /// its session and status were accepted already, else accepted and applied. The entry
    /// is taken out of the map and put back with its own key, so the session moves into
    /// `Session::apply` and is copied once, for the answer.
    fn decide(
        &mut self,
        received: &'a ReceivedEvent,
        rules: ApplyRules,
    ) -> Result<Applied, StoreError> {
        let event = &received.event;
        let Some((id, entry)) = self.sessions.remove_entry(event.session_id.as_str()) else {
            if rules.record_unknown_sessions {
                let missing = format!("session {} was not created", event.session_id.as_str());
                return Err(StoreError::Corrupt(missing));
            }
            return Ok(unchanged(EventOutcome::Ignored));
        };
        let (entry, applied) = self.decide_for(entry, received, rules)?;
        self.sessions.insert(id, entry);
        Ok(applied)
    }

    fn decide_for(
        &mut self,
        mut entry: Entry,
        received: &'a ReceivedEvent,
        rules: ApplyRules,
    ) -> Result<(Entry, Applied), StoreError> {
        let event = &received.event;
        let session_created_at = entry.session.created_at;
        let slot = slot(event.kind.status())?;
        if let Some(first) = &entry.accepted[slot] {
            let outcome = match first.describes(event, self.stored) {
                true => EventOutcome::Duplicate,
                false => {
                    let row = EventRow {
                        received,
                        outcome: "conflict",
                        session_created_at,
                    };
                    self.rows.push(row);
                    EventOutcome::Conflict
                }
            };
            return Ok((entry, unchanged(outcome)));
        }
        entry.accepted[slot] = Some(StoredEvent {
            phone_id: event.phone_id.as_str().to_owned(),
            app_id: event.app_id.as_str().to_owned(),
            event_time: (self.stored)(event.time),
            run_time: event.run_time,
        });
        let row = EventRow {
            received,
            outcome: "accepted",
            session_created_at,
        };
        self.rows.push(row);
        let after = entry.session.apply(event, rules.run_time_tolerance_secs);
        entry.session = Session {
            started_at: after.started_at.map(self.stored),
            ended_at: after.ended_at.map(self.stored),
            ..after.clone()
        };
        entry.changed = Some(received.received_at);
        let applied = Applied {
            outcome: EventOutcome::Accepted,
            session: Some(after),
        };
        Ok((entry, applied))
    }

    /// In key order: PostgreSQL's row triggers record the outbox's session facts in the
    /// order the write updates the rows (migration 0024), so a batch's facts keep the
    /// subject order its statement triggers gave them.
    fn updates(&self) -> Vec<SessionUpdate<'_>> {
        let mut updates: Vec<_> = self
            .sessions
            .values()
            .filter_map(|entry| {
                entry.changed.map(|at| SessionUpdate {
                    session: &entry.session,
                    updated_at: at,
                })
            })
            .collect();
        updates.sort_unstable_by(|a, b| a.session.session_id.cmp(&b.session.session_id));
        updates
    }
}

/// A delivery that changes nothing.
fn unchanged(outcome: EventOutcome) -> Applied {
    Applied {
        outcome,
        session: None,
    }
}

/// Moves the phones as the accepted deliveries say, in arrival order: those that changed,
/// to write back.
fn settle_phones<T: BatchTx>(
    found: Vec<PhoneLinks>,
    changes: &[(&ReceivedEvent, &Session)],
) -> Vec<PhoneChange> {
    let mut phones: HashMap<String, (PhoneChange, bool)> = found
        .into_iter()
        .map(|links| {
            let phone = PhoneChange {
                links,
                existed: true,
            };
            (phone.links.phone_id.clone(), (phone, false))
        })
        .collect();
    for (received, session) in changes {
        settle_phone::<T>(&mut phones, received, session);
    }
    let mut changed: Vec<_> = phones
        .into_values()
        .filter_map(|(phone, changed)| changed.then_some(phone))
        .collect();
    changed.sort_unstable_by(|a, b| a.links.phone_id.cmp(&b.links.phone_id));
    changed
}

/// The phone an accepted event names gets a row, as an upsert gave it (the session's own
/// phone, whose hold is cleared, is only updated if it has one): blank, from the time the
/// first change naming it was received.
fn blank_phone(received: &ReceivedEvent) -> (PhoneChange, bool) {
    let links = PhoneLinks {
        phone_id: received.event.phone_id.as_str().to_owned(),
        current_session_id: None,
        current_app_id: None,
        current_session_started_at: None,
        allocated_session_id: None,
        allocated_until: None,
        created_at: received.received_at,
        updated_at: received.received_at,
        ended_session_id: None,
    };
    let phone = PhoneChange {
        links,
        existed: false,
    };
    (phone, true)
}

/// What one accepted delivery does to the phones. A playing session becomes the current
/// one of the phone the event names unless that phone runs a later-started session (a
/// late enter loses); an ended one stops being current. Either way the hold minting took
/// on the session's own phone has served its purpose.
fn settle_phone<T: BatchTx>(
    phones: &mut HashMap<String, (PhoneChange, bool)>,
    received: &ReceivedEvent,
    s: &Session,
) {
    let now = received.received_at;
    let named = received.event.phone_id.as_str();
    if !phones.contains_key(named) {
        phones.insert(named.to_owned(), blank_phone(received));
    }
    if let Some((PhoneChange { links: p, .. }, changed)) = phones.get_mut(named) {
        if s.state == SessionState::Playing {
            // As SQL compares: nothing is later than an unknown start.
            let started = s.started_at.map(T::stored);
            let later = match (p.current_session_started_at, started) {
                (None, _) => true,
                (Some(current), Some(started)) => current <= started,
                (Some(_), None) => false,
            };
            // A phone held for a newer session (given out after this one's hold lapsed,
            // its enter late) stays that session's: this one is recorded playing but takes
            // no phone cphub has promised to another player (docs/api.md).
            let held_for_other = (p.allocated_session_id.as_deref())
                .is_some_and(|a| a != s.session_id.as_str())
                && p.allocated_until.is_some_and(|until| until > now);
            if later && !held_for_other {
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
        if s.state == SessionState::Ended {
            // The game has exited: the phone's heartbeats name no session from now on
            // (chapter 6.4), so the last one that named this session no longer holds it.
            p.ended_session_id = Some(s.session_id.to_string());
            (p.updated_at, *changed) = (now, true);
        }
    }
    if let Some((PhoneChange { links: p, .. }, changed)) = phones.get_mut(s.phone_id.as_str())
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

/// The read's rows, decoded by their `kind`: the three row shapes come back as one result,
/// padded to the same columns, so that the read is one statement on either backend.
pub(super) fn sort_rows<R: sqlx::Row>(rows: &[R]) -> Result<BatchRows, StoreError>
where
    for<'r> SessionRow: sqlx::FromRow<'r, R>,
    for<'r> AcceptedEvent: sqlx::FromRow<'r, R>,
    for<'r> PhoneLinks: sqlx::FromRow<'r, R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    &'static str: sqlx::ColumnIndex<R>,
{
    let mut sorted = BatchRows::default();
    for row in rows {
        let kind: String = row.try_get("kind")?;
        match kind.as_str() {
            "s" => sorted
                .sessions
                .push(Session::try_from(SessionRow::from_row(row)?)?),
            "e" => sorted.accepted.push(AcceptedEvent::from_row(row)?),
            _ => sorted.phones.push(PhoneLinks::from_row(row)?),
        }
    }
    Ok(sorted)
}

/// The end of the read on both backends: the rows of the CTEs `batch_sessions`,
/// `batch_events` and `batch_phones` as one result, each padded with NULLs to the others'
/// columns (the casts type the columns whose first two parts are both NULL on PostgreSQL).
macro_rules! batch_read_rows {
    () => {
        "SELECT 's' AS kind, session_id, phone_id, app_id, user_id, issued, state, minted_at, \
           verified_at, started_at, ended_at, reported_run_time, duration_seconds, \
           run_time_mismatch, end_reason, error_msg, last_heartbeat_at, created_at, \
           NULL AS status, NULL AS event_time, NULL AS run_time, \
           CAST(NULL AS text) AS current_session_id, CAST(NULL AS text) AS current_app_id, \
           CAST(NULL AS timestamptz) AS current_session_started_at, \
           CAST(NULL AS text) AS allocated_session_id, \
           CAST(NULL AS timestamptz) AS allocated_until, CAST(NULL AS timestamptz) AS updated_at \
         FROM batch_sessions \
         UNION ALL SELECT 'e', session_id, phone_id, app_id, NULL, NULL, NULL, NULL, NULL, \
           NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, status, event_time, run_time, \
           NULL, NULL, NULL, NULL, NULL, NULL \
         FROM batch_events \
         UNION ALL SELECT 'p', NULL, phone_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
           NULL, NULL, NULL, NULL, NULL, NULL, created_at, NULL, NULL, NULL, \
           current_session_id, current_app_id, current_session_started_at, \
           allocated_session_id, allocated_until, updated_at \
         FROM batch_phones"
    };
}
pub(super) use batch_read_rows;

/// The columns of a phone the batch reads.
macro_rules! phone_link_columns {
    () => {
        "phone_id, current_session_id, current_app_id, current_session_started_at, \
         allocated_session_id, allocated_until, created_at, updated_at"
    };
}
pub(super) use phone_link_columns;

/// The `SET` items of a phone's write that clear the heartbeat's session once a quit ended
/// it (`$ended`: the session id, or NULL when the batch ended none on the phone). Compared
/// against the row as it is when written, not as the batch read it: a heartbeat flush may
/// have written it since (SQLite between batches, PostgreSQL never while the batch holds the
/// row). Kept as `heartbeat_ended_session_id`, which the heartbeat upsert reads.
macro_rules! ended_session_clear {
    ($ended:literal) => {
        concat!(
            "heartbeat_session_id = CASE WHEN phones.heartbeat_session_id = ", $ended,
            " THEN NULL ELSE phones.heartbeat_session_id END, \
             heartbeat_app_id = CASE WHEN phones.heartbeat_session_id = ", $ended,
            " THEN NULL ELSE phones.heartbeat_app_id END, \
             heartbeat_ended_session_id = COALESCE(", $ended,
            ", phones.heartbeat_ended_session_id)"
        )
    };
}
pub(super) use ended_session_clear;
