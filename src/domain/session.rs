//! A session as the book keeps it, and how each enter/quit event changes it. Pure logic: the
//! stores load a session, call [`Session::apply`], and save the result in one transaction.

use super::{AppId, EventKind, GameEvent, PhoneId, SessionId, UserId, UtcTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Minted by cphub for a player; the phone is held for it. Waiting for the sign check.
    Minted,
    /// Sign check passed; waiting for the enter event.
    Verified,
    /// Minted but never entered within the hold: the phone was released.
    Expired,
    /// Entered and not yet quit.
    Playing,
    /// Quit received.
    Ended,
    /// Closed by cphub because its phone stopped sending heartbeats.
    Abandoned,
}

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Minted => "minted",
            SessionState::Verified => "verified",
            SessionState::Expired => "expired",
            SessionState::Playing => "playing",
            SessionState::Ended => "ended",
            SessionState::Abandoned => "abandoned",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "minted" => Some(SessionState::Minted),
            "verified" => Some(SessionState::Verified),
            "expired" => Some(SessionState::Expired),
            "playing" => Some(SessionState::Playing),
            "ended" => Some(SessionState::Ended),
            "abandoned" => Some(SessionState::Abandoned),
            _ => None,
        }
    }

    /// Issued by cphub, not yet entered.
    pub fn awaiting_enter(self) -> bool {
        matches!(
            self,
            SessionState::Minted | SessionState::Verified | SessionState::Expired
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EndReason {
    Quit,
    Abandoned,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Quit => "quit",
            EndReason::Abandoned => "abandoned",
        }
    }

    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "quit" => Some(EndReason::Quit),
            "abandoned" => Some(EndReason::Abandoned),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Session {
    pub session_id: SessionId,
    pub phone_id: PhoneId,
    pub app_id: AppId,
    /// The platform's player id; only for sessions cphub minted.
    pub user_id: Option<UserId>,
    /// Minted by cphub (true) or first heard of through an event (direct mode).
    pub issued: bool,
    pub state: SessionState,
    pub minted_at: Option<UtcTime>,
    pub verified_at: Option<UtcTime>,
    /// Enter time as reported by the phone; absent while only the quit has arrived.
    pub started_at: Option<UtcTime>,
    pub ended_at: Option<UtcTime>,
    /// `run_time` of the quit event, stored as reported.
    pub reported_run_time: Option<i64>,
    /// Measured by cphub from enter and quit times; what billing uses.
    pub duration_seconds: Option<i64>,
    /// The reported run_time and the measured duration disagree beyond the tolerance.
    pub run_time_mismatch: bool,
    pub end_reason: Option<EndReason>,
    pub error_msg: Option<String>,
    pub last_heartbeat_at: Option<UtcTime>,
    /// When cphub first recorded the session (its clock): the order of the session list.
    pub created_at: UtcTime,
}

impl Session {
    /// The session after `event`. Order-independent: enter then quit and quit then enter
    /// give the same session.
    pub fn apply(mut self, event: &GameEvent, tolerance_secs: u32) -> Session {
        match event.kind {
            EventKind::Enter => {
                self.started_at = Some(event.time);
                if self.state.awaiting_enter() {
                    self.state = SessionState::Playing;
                }
            }
            EventKind::Quit => {
                self.reported_run_time = event.run_time;
                // An abandoned session keeps its verdict and its end at the last heartbeat
                // (what is billed); a late quit only adds the reported run_time.
                if self.state != SessionState::Abandoned {
                    self.ended_at = Some(event.time);
                    self.state = SessionState::Ended;
                    self.end_reason = Some(EndReason::Quit);
                }
            }
        }
        // Order-independent too: a quit's message (why the game ended) wins over an
        // enter's whichever came first, and an empty one clears nothing. Each event keeps
        // its own in the event log.
        let quit_seen = self.reported_run_time.is_some();
        let recorded = self.error_msg.as_deref().is_some_and(|m| !m.is_empty());
        let kept = event.kind == EventKind::Enter && quit_seen && recorded;
        if let Some(msg) = (event.error_msg.as_ref()).filter(|m| !m.as_str().is_empty() && !kept) {
            self.error_msg = Some(msg.as_str().to_owned());
        }
        self.measure(tolerance_secs);
        self
    }

    /// Closed by cphub because the phone went silent: it ends at its last heartbeat (or at
    /// its start if none came), and is billed until then.
    pub fn abandon(mut self) -> Session {
        self.state = SessionState::Abandoned;
        self.end_reason = Some(EndReason::Abandoned);
        self.ended_at = self.last_heartbeat_at.or(self.started_at);
        self.duration_seconds = match (self.started_at, self.ended_at) {
            (Some(start), Some(end)) => Some(end.seconds_since(start)),
            _ => None,
        };
        self
    }

    /// True while the quit has arrived but the enter has not.
    pub fn missing_start(&self) -> bool {
        self.started_at.is_none() && self.ended_at.is_some()
    }

    fn measure(&mut self, tolerance_secs: u32) {
        let (Some(start), Some(end)) = (self.started_at, self.ended_at) else {
            return;
        };
        let duration = end.seconds_since(start);
        self.duration_seconds = Some(duration);
        self.run_time_mismatch = self
            .reported_run_time
            .is_some_and(|reported| reported.abs_diff(duration) > u64::from(tolerance_secs));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppId, ErrorMsg, PhoneId, SessionId};

    fn event(kind: EventKind, time: &str, run_time: Option<i64>) -> GameEvent {
        GameEvent {
            kind,
            session_id: SessionId::parse("s", "s1".into()).unwrap(),
            phone_id: PhoneId::parse("p", "p1".into()).unwrap(),
            app_id: AppId::parse("a", "a1".into()).unwrap(),
            time: UtcTime::parse("t", time).unwrap(),
            run_time,
            error_msg: None,
        }
    }

    /// A session first heard of through `event`, as the store creates one for a session it
    /// did not mint (enter, or a quit that overtook its enter).
    fn first_heard(event: &GameEvent, tolerance_secs: u32) -> Session {
        let blank = Session {
            session_id: event.session_id.clone(),
            phone_id: event.phone_id.clone(),
            app_id: event.app_id.clone(),
            user_id: None,
            issued: false,
            state: SessionState::Playing,
            minted_at: None,
            verified_at: None,
            started_at: None,
            ended_at: None,
            reported_run_time: None,
            duration_seconds: None,
            run_time_mismatch: false,
            end_reason: None,
            error_msg: None,
            last_heartbeat_at: None,
            created_at: event.time,
        };
        blank.apply(event, tolerance_secs)
    }

    #[test]
    fn enter_then_quit_and_quit_then_enter_agree() {
        let enter = event(EventKind::Enter, "2019-11-14T19:00:00Z", None);
        let quit = event(EventKind::Quit, "2019-11-14T19:10:00Z", Some(600));
        let forward = first_heard(&enter, 60).apply(&quit, 60);
        let mut backward = first_heard(&quit, 60).apply(&enter, 60);
        // created_at is bookkeeping (the store's clock), not a fact of the session.
        backward.created_at = forward.created_at;
        assert_eq!(forward, backward);
        assert_eq!(forward.state, SessionState::Ended);
        assert_eq!(forward.duration_seconds, Some(600));
        assert!(!forward.run_time_mismatch);
    }

    /// 6.2 and 6.3 both carry `error_msg`: the quit's (why the game ended) is kept in
    /// either order, the enter's only without one, and an empty one clears nothing.
    #[test]
    fn the_quits_error_msg_wins_in_either_order_and_an_empty_one_clears_nothing() {
        let with = |mut event: GameEvent, msg: &str| {
            event.error_msg = Some(ErrorMsg::bounded(msg.to_owned()));
            event
        };
        let enter = with(
            event(EventKind::Enter, "2019-11-14T19:00:00Z", None),
            "slow start",
        );
        let quit = with(
            event(EventKind::Quit, "2019-11-14T19:10:00Z", Some(600)),
            "crashed",
        );
        let forward = first_heard(&enter, 60).apply(&quit, 60);
        let backward = first_heard(&quit, 60).apply(&enter, 60);
        assert_eq!(forward.error_msg.as_deref(), Some("crashed"));
        assert_eq!(backward.error_msg.as_deref(), Some("crashed"));

        let quiet_quit = with(
            event(EventKind::Quit, "2019-11-14T19:10:00Z", Some(600)),
            "",
        );
        let kept = first_heard(&enter, 60).apply(&quiet_quit, 60);
        let kept_backward = first_heard(&quiet_quit, 60).apply(&enter, 60);
        assert_eq!(kept.error_msg.as_deref(), Some("slow start"));
        assert_eq!(kept_backward.error_msg.as_deref(), Some("slow start"));
    }

    #[test]
    fn enter_moves_a_minted_session_to_playing() {
        let enter = event(EventKind::Enter, "2019-11-14T19:00:00Z", None);
        for state in [
            SessionState::Minted,
            SessionState::Verified,
            SessionState::Expired,
        ] {
            let mut minted = first_heard(&enter, 60);
            minted.started_at = None;
            minted.state = state;
            assert_eq!(
                minted.apply(&enter, 60).state,
                SessionState::Playing,
                "{state:?}"
            );
        }
    }

    #[test]
    fn quit_first_is_ended_and_missing_its_start() {
        let quit = event(EventKind::Quit, "2019-11-14T19:10:00Z", Some(600));
        let s = first_heard(&quit, 60);
        assert_eq!(s.state, SessionState::Ended);
        assert!(s.missing_start());
        assert_eq!(s.duration_seconds, None);
    }

    #[test]
    fn reported_run_time_far_from_measured_is_flagged() {
        let enter = event(EventKind::Enter, "2019-11-14T19:00:00Z", None);
        let quit = event(EventKind::Quit, "2019-11-14T19:00:41Z", Some(41000));
        let s = first_heard(&enter, 60).apply(&quit, 60);
        assert_eq!(s.duration_seconds, Some(41));
        assert_eq!(s.reported_run_time, Some(41000));
        assert!(s.run_time_mismatch);
    }

    #[test]
    fn an_abandoned_session_ends_at_its_last_heartbeat_even_if_a_quit_comes_late() {
        let enter = event(EventKind::Enter, "2019-11-14T19:00:00Z", None);
        let mut playing = first_heard(&enter, 60);
        playing.last_heartbeat_at = Some(UtcTime::parse("t", "2019-11-14T19:07:00Z").unwrap());
        let abandoned = playing.abandon();
        assert_eq!(abandoned.duration_seconds, Some(420));
        let late_quit = event(EventKind::Quit, "2019-11-14T19:30:00Z", Some(1800));
        let after = abandoned.apply(&late_quit, 60);
        assert_eq!(after.state, SessionState::Abandoned);
        assert_eq!(after.duration_seconds, Some(420));
        assert_eq!(after.reported_run_time, Some(1800));
    }

    #[test]
    fn quit_before_enter_in_time_measures_zero_not_negative() {
        let enter = event(EventKind::Enter, "2019-11-14T19:10:00Z", None);
        let quit = event(EventKind::Quit, "2019-11-14T19:00:00Z", Some(0));
        let s = first_heard(&enter, 60).apply(&quit, 60);
        assert_eq!(s.duration_seconds, Some(0));
    }
}
