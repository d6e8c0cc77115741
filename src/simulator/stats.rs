//! What the simulator has seen: counters for the summary line, and the sessions it played
//! (so a test can compare them with cphub's records).

use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};

use super::fleet::SharedFleet;

/// A session as the simulated phone and player played it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayedSession {
    pub session_id: String,
    pub phone_id: String,
    /// Measured between the `time`s of the enter and quit events sent.
    pub duration_secs: i64,
}

/// What cphub answered 2xx: acknowledged, so the book must hold it whatever happens to the
/// replica that answered (a test compares the two).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acked {
    /// `POST /api/v1/sessions` answered 201.
    Mint,
    /// The sign check (6.1) answered 200 with the session's key.
    SignCheck,
    /// The enter event (6.2) answered 200.
    Enter,
    /// The quit event (6.3) answered 200.
    Quit,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    pub what: Acked,
    pub session_id: String,
    pub phone_id: String,
}

#[derive(Default)]
pub struct Stats {
    pub heartbeats: AtomicU64,
    pub sessions_started: AtomicU64,
    pub no_free_phone: AtomicU64,
    pub sign_checks_refused: AtomicU64,
    pub callback_errors: AtomicU64,
    /// Enter or quit events never acknowledged: refused, or given up on (`phone.rs`).
    pub events_undelivered: AtomicU64,
    played: Mutex<Vec<PlayedSession>>,
    acknowledged: Mutex<Vec<Acknowledged>>,
}

impl Stats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_played(&self, session: PlayedSession) {
        self.played
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(session);
    }

    pub fn record_acknowledged(&self, what: Acked, session_id: &str, phone_id: &str) {
        self.acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Acknowledged {
                what,
                session_id: session_id.to_owned(),
                phone_id: phone_id.to_owned(),
            });
    }

    pub fn acknowledged(&self) -> Vec<Acknowledged> {
        self.acknowledged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn played(&self) -> Vec<PlayedSession> {
        self.played
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `phones: 8 running, 2 silent, 1 restarting | sessions: 12 played, 1 playing | …`
    pub fn summary(&self, fleet: &SharedFleet) -> String {
        let (mut alive, mut down, mut configured) = (0, 0, 0);
        for phone in &fleet.lock().phones {
            if phone.is_alive() {
                alive += 1
            } else {
                down += 1
            }
            if phone
                .properties
                .contains_key(crate::cph::properties::HEARTBEAT_URL)
            {
                configured += 1;
            }
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let played = self
            .played
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len() as u64;
        format!(
            "phones: {alive} alive, {down} down, {configured} configured | sessions: {played} played, \
             {} playing, {} refused (no free phone) | heartbeats: {} | sign checks refused: {} | \
             events undelivered: {} | callback errors: {}",
            load(&self.sessions_started).saturating_sub(played),
            load(&self.no_free_phone),
            load(&self.heartbeats),
            load(&self.sign_checks_refused),
            load(&self.events_undelivered),
            load(&self.callback_errors),
        )
    }
}
