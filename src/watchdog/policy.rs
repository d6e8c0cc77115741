//! What to do about one unhealthy phone, as a pure function of what the book knows: its
//! health, its recent recoveries, the time and the budgets. Restart first; reset when the
//! restart failed or did not bring the phone back; broken when it keeps failing.

use std::time::Duration;

use crate::cph::model::status;
use crate::domain::UtcTime;

pub use crate::domain::{Action, Outcome, Reason};

impl Reason {
    /// From the control plane's status; stale when it reports nothing wrong.
    pub fn from_status(cph_status: Option<i32>) -> Reason {
        match cph_status {
            Some(status::ABNORMAL) => Reason::Abnormal,
            Some(status::RESTART_FAILED) => Reason::RestartFailed,
            Some(status::RESET_FAILED) => Reason::ResetFailed,
            _ => Reason::Stale,
        }
    }
}

/// One earlier recovery of the phone, as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Past {
    pub action: Action,
    pub outcome: Outcome,
    pub started_at: UtcTime,
    pub ended_at: Option<UtcTime>,
}

#[derive(Debug, Clone)]
pub struct Budgets {
    /// After a recovery ended well, how long the phone gets to come back before it counts
    /// as still stale.
    pub grace_after_recovery: Duration,
    /// After a reset (the last resort), how long before the next incident is acted on.
    pub cooldown: Duration,
    /// Most restart/reset actions per phone in an hour; one more marks it broken.
    pub hourly_cap: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Act(Action),
    /// Nothing to do now, and why (logged at debug, not recorded).
    Wait(&'static str),
}

/// `history`: the phone's recoveries of the last hour, newest first.
pub fn decide(reason: Reason, history: &[Past], now: UtcTime, budgets: &Budgets) -> Decision {
    let acted = history
        .iter()
        .filter(|p| p.action != Action::MarkBroken)
        .count();
    let Some(last) = history.first() else {
        return Decision::Act(first_action(reason));
    };
    if last.outcome == Outcome::Pending {
        return Decision::Wait("a recovery is in progress");
    }
    if acted as u32 >= budgets.hourly_cap {
        return Decision::Act(Action::MarkBroken);
    }
    let ended = last.ended_at.unwrap_or(last.started_at);
    let went_well = matches!(last.outcome, Outcome::Succeeded | Outcome::DryRun);
    if went_well && now < ended.plus(budgets.grace_after_recovery) {
        return Decision::Wait("giving the phone time to come back");
    }
    match last.action {
        // The restart failed, or it ended well and the phone is still unhealthy: escalate.
        Action::Restart => Decision::Act(Action::Reset),
        Action::Reset if now < last.started_at.plus(budgets.cooldown) => {
            Decision::Wait("cooldown after a reset")
        }
        Action::Reset | Action::MarkBroken => Decision::Act(first_action(reason)),
    }
}

/// A restart, unless the control plane says the last restart failed: then a reset.
fn first_action(reason: Reason) -> Action {
    match reason {
        Reason::RestartFailed | Reason::ResetFailed => Action::Reset,
        _ => Action::Restart,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_324_000_000;

    fn at(secs: i64) -> UtcTime {
        UtcTime::from_epoch_millis(T0 + secs * 1000).unwrap()
    }

    fn budgets() -> Budgets {
        Budgets {
            grace_after_recovery: Duration::from_secs(120),
            cooldown: Duration::from_secs(600),
            hourly_cap: 3,
        }
    }

    fn past(action: Action, outcome: Outcome, started: i64, ended: Option<i64>) -> Past {
        Past {
            action,
            outcome,
            started_at: at(started),
            ended_at: ended.map(at),
        }
    }

    #[test]
    fn first_a_restart_or_a_reset_when_restarts_already_fail() {
        assert_eq!(
            decide(Reason::Stale, &[], at(0), &budgets()),
            Decision::Act(Action::Restart)
        );
        assert_eq!(
            decide(Reason::Abnormal, &[], at(0), &budgets()),
            Decision::Act(Action::Restart)
        );
        assert_eq!(
            decide(Reason::RestartFailed, &[], at(0), &budgets()),
            Decision::Act(Action::Reset)
        );
    }

    #[test]
    fn a_failed_restart_is_followed_by_a_reset_at_once() {
        let history = [past(Action::Restart, Outcome::Failed, 0, Some(10))];
        assert_eq!(
            decide(Reason::Stale, &history, at(11), &budgets()),
            Decision::Act(Action::Reset)
        );
    }

    #[test]
    fn a_good_restart_gets_its_grace_then_a_reset() {
        let history = [past(Action::Restart, Outcome::Succeeded, 0, Some(10))];
        assert!(matches!(
            decide(Reason::Stale, &history, at(100), &budgets()),
            Decision::Wait(_)
        ));
        assert_eq!(
            decide(Reason::Stale, &history, at(131), &budgets()),
            Decision::Act(Action::Reset)
        );
    }

    #[test]
    fn nothing_happens_while_a_recovery_is_pending() {
        let history = [past(Action::Restart, Outcome::Pending, 0, None)];
        assert!(matches!(
            decide(Reason::Stale, &history, at(3000), &budgets()),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn after_a_reset_the_cooldown_holds_then_the_cycle_restarts() {
        let history = [
            past(Action::Reset, Outcome::Failed, 200, Some(210)),
            past(Action::Restart, Outcome::Failed, 0, Some(10)),
        ];
        assert!(matches!(
            decide(Reason::Stale, &history, at(500), &budgets()),
            Decision::Wait(_)
        ));
        assert_eq!(
            decide(Reason::Stale, &history, at(801), &budgets()),
            Decision::Act(Action::Restart)
        );
    }

    #[test]
    fn a_phone_that_keeps_failing_is_marked_broken() {
        let history = [
            past(Action::Restart, Outcome::Failed, 900, Some(910)),
            past(Action::Reset, Outcome::Failed, 200, Some(210)),
            past(Action::Restart, Outcome::Failed, 0, Some(10)),
        ];
        assert_eq!(
            decide(Reason::Stale, &history, at(911), &budgets()),
            Decision::Act(Action::MarkBroken)
        );
    }
}
