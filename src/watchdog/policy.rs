//! What to do about one unhealthy phone, as a pure function of what the book knows: its
//! health, its recent recoveries, the time and the budgets. Restart first; reset when the
//! restart failed or did not bring the phone back; broken when it keeps failing. A restart
//! that ended in an error (refused "try again later", the control plane unreachable, its
//! job not followed to its end) is no evidence against the phone: after the grace it is
//! tried again, never answered with a reset, which restores factory settings (4.3.5).

use std::time::Duration;

use crate::cph::model::status;
use crate::domain::UtcTime;

pub use crate::domain::{Action, Outcome, Reason};

/// What the control plane's status (chapter 4.3.1) makes of a phone, for the watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Running (2): recovered when it falls silent.
    Running,
    /// Abnormal (-7), restart failed (-6), reset failed (-5): recovered, silent or not.
    Failed(Reason),
    /// Creating (0, 1), resetting (3), restarting (4), stopping (7), or a status the
    /// reference does not list: something is under way (perhaps someone else's restart);
    /// wait for it, never act.
    Transitional,
    /// Frozen (6), stopped (8), creation failed (-8), stopping failed (-9): out of service on
    /// purpose or beyond a restart. Never recovered: a restart would start a phone someone
    /// stopped (chapter 4.3.6 "restart … or start cloud phones").
    OutOfService,
}

impl Standing {
    pub fn of(cph_status: i32) -> Standing {
        match cph_status {
            status::RUNNING => Standing::Running,
            status::ABNORMAL => Standing::Failed(Reason::Abnormal),
            status::RESTART_FAILED => Standing::Failed(Reason::RestartFailed),
            status::RESET_FAILED => Standing::Failed(Reason::ResetFailed),
            status::FROZEN
            | status::STOPPED
            | status::CREATION_FAILED
            | status::STOPPING_FAILED => Standing::OutOfService,
            _ => Standing::Transitional,
        }
    }
}

/// Why a phone is a recovery candidate, or None when it must be left alone. `cph_status`
/// is the control plane's (None: not reported yet — the watchdog re-reads the phone before
/// acting, and that status decides); `silent`: it missed its heartbeats.
pub fn candidate(cph_status: Option<i32>, silent: bool) -> Option<Reason> {
    match cph_status.map(Standing::of) {
        None | Some(Standing::Running) => silent.then_some(Reason::Stale),
        Some(Standing::Failed(reason)) => Some(reason),
        Some(Standing::Transitional | Standing::OutOfService) => None,
    }
}

/// One earlier recovery of the phone, as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Past {
    pub action: Action,
    pub outcome: Outcome,
    pub started_at: UtcTime,
    pub ended_at: Option<UtcTime>,
    /// Refused for the account, not the phone (7.2 CPS.0006/0007/0008): recorded as an
    /// `error`, but like a skip it neither escalates nor counts against the cap.
    pub account_blocked: bool,
    /// The control plane took the request and started a job (4.4): whatever came of it, it
    /// reached the phone, even when it ended in an error (not followed to its end).
    pub job_started: bool,
}

impl Past {
    /// Did something to the phone, or was meant to: a skip, an account refusal or a hold
    /// (a server incident) did not.
    fn counts(&self) -> bool {
        self.outcome != Outcome::Skipped && !self.account_blocked && self.action != Action::Hold
    }

    /// Reached the phone, as far as anyone knows: anything but an error, or an error of a
    /// job the control plane started (4.4). An error before any job (7.2 `CPS.0003`, 5xx,
    /// unreachable) did not; the hourly caps do not hold it against the phone or server.
    pub fn reached(&self) -> bool {
        self.outcome != Outcome::Error || self.job_started
    }
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
    /// `watchdog.dry_run`: nothing is sent, nor is a phone marked.
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Act(Action),
    /// Nothing to do now, and why (logged at debug, not recorded).
    Wait(&'static str),
}

/// `history`: the phone's recoveries of the last hour, newest first.
/// A skipped decision (the phone was re-read and left alone) did nothing to the phone: it
/// neither counts against the budgets nor starts a restart-then-reset escalation.
pub fn decide(reason: Reason, history: &[Past], now: UtcTime, budgets: &Budgets) -> Decision {
    let acted = acted(history);
    let errors = errors_in_a_row(history);
    let mut history = history.iter().filter(|p| p.counts());
    let Some(last) = history.next() else {
        return Decision::Act(first_action(reason));
    };
    if last.outcome == Outcome::Pending {
        return Decision::Wait("a recovery is in progress");
    }
    // In dry run nothing marks the phone, so it stays a candidate: marked (on paper) once,
    // not again every pass (the log would fill with it and push the real decisions out).
    // Live again, it is marked for real.
    if budgets.dry_run && last.action == Action::MarkBroken && last.outcome == Outcome::DryRun {
        return Decision::Wait("marked broken in dry run");
    }
    if acted as u32 >= budgets.hourly_cap {
        return Decision::Act(Action::MarkBroken);
    }
    let ended = last.ended_at.unwrap_or(last.started_at);
    let went_well = matches!(last.outcome, Outcome::Succeeded | Outcome::DryRun);
    let errored = last.outcome == Outcome::Error;
    if went_well && now < ended.plus(budgets.grace_after_recovery) {
        return Decision::Wait("giving the phone time to come back");
    }
    if errored && now < ended.plus(error_backoff(errors, budgets)) {
        return Decision::Wait("the last recovery did not go through; trying again later");
    }
    match last.action {
        // Not known to have reached the phone (no job started): the gentle action again,
        // unless the control plane says restarts fail on it (4.3.1 -6, -5).
        Action::Restart if !last.reached() && first_action(reason) == Action::Restart => {
            Decision::Act(Action::Restart)
        }
        // The restart failed, or it ran (ended well, or its job was not followed to its end)
        // and the phone is still unhealthy: escalate.
        Action::Restart => Decision::Act(Action::Reset),
        Action::Reset if now < last.started_at.plus(budgets.cooldown) => {
            Decision::Wait("cooldown after a reset")
        }
        Action::Reset | Action::MarkBroken | Action::Hold => Decision::Act(first_action(reason)),
    }
}

/// Restarts and resets in `history` that reached (or, in dry run, would have reached) the
/// phone: what the hourly cap counts. One that ended in an error before any job started is
/// not known to have (7.2 `CPS.0003` "try again later", the control plane unreachable or
/// answering 5xx): it backs off instead ([`error_backoff`]), so that a control-plane outage
/// does not mark every silent phone `broken`, to be left alone once it is over. One whose
/// job started and was not followed to its end did reach the phone, and counts.
pub fn acted(history: &[Past]) -> usize {
    history
        .iter()
        .filter(|p| p.action != Action::MarkBroken && p.counts() && p.reached())
        .count()
}

/// The recoveries at the head of `history` (newest first) that ended in an error, skips and
/// account refusals passed over.
fn errors_in_a_row(history: &[Past]) -> u32 {
    let errors = (history.iter().filter(|p| p.counts())).take_while(|p| p.outcome == Outcome::Error);
    u32::try_from(errors.count()).unwrap_or(u32::MAX)
}

/// How long after the last of `errors` errors in a row the recovery is tried again: the
/// grace, doubled for each error before it, at most the hour the history covers. A long
/// control-plane outage so costs a silent phone a handful of attempts an hour, not one per
/// grace; once it is over, the next attempt comes within the hour.
fn error_backoff(errors: u32, budgets: &Budgets) -> Duration {
    let doublings = errors.saturating_sub(1).min(16);
    let backoff = budgets.grace_after_recovery.saturating_mul(1 << doublings);
    backoff.min(Duration::from_secs(3600))
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
            dry_run: false,
        }
    }

    fn past(action: Action, outcome: Outcome, started: i64, ended: Option<i64>) -> Past {
        Past {
            action,
            outcome,
            started_at: at(started),
            ended_at: ended.map(at),
            account_blocked: false,
            job_started: false,
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

    /// Dry run: the phone at its cap is marked broken on paper once, then left; once the
    /// watchdog is live again, it is marked for real.
    #[test]
    fn in_dry_run_a_phone_is_marked_broken_once() {
        let restarts = [
            past(Action::Restart, Outcome::DryRun, 20, Some(20)),
            past(Action::Restart, Outcome::DryRun, 10, Some(10)),
            past(Action::Restart, Outcome::DryRun, 0, Some(0)),
        ];
        assert_eq!(
            decide(Reason::Stale, &restarts, at(500), &budgets()),
            Decision::Act(Action::MarkBroken)
        );
        let marked = past(Action::MarkBroken, Outcome::DryRun, 500, Some(500));
        let history: Vec<Past> = std::iter::once(marked).chain(restarts).collect();
        let dry_run = Budgets {
            dry_run: true,
            ..budgets()
        };
        assert_eq!(
            decide(Reason::Stale, &history, at(501), &dry_run),
            Decision::Wait("marked broken in dry run")
        );
        assert_eq!(
            decide(Reason::Stale, &history, at(501), &budgets()),
            Decision::Act(Action::MarkBroken),
            "live again: marked for real"
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

    /// 7.2 CPS.0003 "Try again later", an unreachable control plane, a job not followed
    /// to its end: the restart is tried again after the grace, and a reset (4.3.5: factory
    /// settings) waits for a restart that failed or did not help.
    #[test]
    fn a_restart_that_errored_is_tried_again_after_the_grace_not_escalated() {
        let history = [past(Action::Restart, Outcome::Error, 0, Some(10))];
        assert!(matches!(
            decide(Reason::Stale, &history, at(100), &budgets()),
            Decision::Wait(_)
        ));
        assert_eq!(
            decide(Reason::Stale, &history, at(131), &budgets()),
            Decision::Act(Action::Restart)
        );
        assert_eq!(
            decide(Reason::RestartFailed, &history, at(131), &budgets()),
            Decision::Act(Action::Reset),
            "4.3.1 -6: the control plane says the restart failed"
        );
        let then_failed = [
            past(Action::Restart, Outcome::Failed, 200, Some(210)),
            past(Action::Restart, Outcome::Error, 0, Some(10)),
        ];
        assert_eq!(
            decide(Reason::Stale, &then_failed, at(211), &budgets()),
            Decision::Act(Action::Reset)
        );
    }

    /// A control-plane outage (every restart ends in an error) never marks the phone
    /// broken: the attempts back off, twice the grace after two errors in a row, four
    /// times after three, and a restart is tried again after each wait.
    #[test]
    fn errors_in_a_row_back_off_and_never_count_against_the_cap() {
        let errored = |started| past(Action::Restart, Outcome::Error, started, Some(started));
        let history = [errored(400), errored(200), errored(0), errored(-200)];
        assert_eq!(acted(&history), 0);
        assert!(matches!(
            decide(Reason::Stale, &history, at(400 + 959), &budgets()),
            Decision::Wait(_)
        ));
        assert_eq!(
            decide(Reason::Stale, &history, at(400 + 960), &budgets()),
            Decision::Act(Action::Restart),
            "four errors in a row: 120 s × 8"
        );
        let two = [errored(200), errored(0)];
        assert!(matches!(
            decide(Reason::Stale, &two, at(200 + 239), &budgets()),
            Decision::Wait(_)
        ));
        assert_eq!(
            decide(Reason::Stale, &two, at(200 + 240), &budgets()),
            Decision::Act(Action::Restart)
        );
        let after_a_failure = [errored(200), past(Action::Restart, Outcome::Failed, 0, Some(10))];
        assert_eq!(
            decide(Reason::Stale, &after_a_failure, at(200 + 120), &budgets()),
            Decision::Act(Action::Restart),
            "one error in a row: the grace alone"
        );
        let many: Vec<Past> = (0..20).map(|i| errored(3000 - i * 100)).collect();
        assert_eq!(
            decide(Reason::Stale, &many, at(3000 + 3600), &budgets()),
            Decision::Act(Action::Restart),
            "never more than the hour"
        );
    }

    /// A job the control plane started and cphub could not follow to its end (its deadline,
    /// 4.4.1) reached the phone: such errors count, and a phone whose resets keep ending so
    /// is marked broken rather than reset again and again.
    #[test]
    fn errors_of_jobs_that_started_count_against_the_cap() {
        let reset = |started| Past {
            job_started: true,
            ..past(Action::Reset, Outcome::Error, started, Some(started + 600))
        };
        let history = [reset(3000), reset(2000), reset(1000), reset(0)];
        assert_eq!(acted(&history), 4);
        assert_eq!(
            decide(Reason::RestartFailed, &history, at(3601), &budgets()),
            Decision::Act(Action::MarkBroken)
        );
        // A restart that ran but was not followed to its end, the phone still silent: the
        // next step is the reset, not the same restart again.
        let restarted = [Past {
            job_started: true,
            ..past(Action::Restart, Outcome::Error, 0, Some(600))
        }];
        assert_eq!(
            decide(Reason::Stale, &restarted, at(721), &budgets()),
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

    /// Chapter 4.3.1: only running (when silent) and the three failed statuses are
    /// candidates; every other status is waited out or left alone.
    #[test]
    fn status_4_3_1_only_running_or_failed_phones_are_candidates() {
        assert_eq!(candidate(Some(2), true), Some(Reason::Stale));
        assert_eq!(candidate(Some(2), false), None);
        assert_eq!(candidate(None, true), Some(Reason::Stale));
        assert_eq!(candidate(Some(-7), false), Some(Reason::Abnormal));
        assert_eq!(candidate(Some(-6), true), Some(Reason::RestartFailed));
        assert_eq!(candidate(Some(-5), false), Some(Reason::ResetFailed));
        for transitional in [0, 1, 3, 4, 7, 5, 42] {
            assert_eq!(Standing::of(transitional), Standing::Transitional);
            assert_eq!(candidate(Some(transitional), true), None, "{transitional}");
        }
        for out in [6, 8, -8, -9] {
            assert_eq!(Standing::of(out), Standing::OutOfService);
            assert_eq!(candidate(Some(out), true), None, "{out}");
        }
    }

    #[test]
    fn skipped_decisions_neither_escalate_nor_count_against_the_cap() {
        let history = [
            past(Action::Reset, Outcome::Skipped, 30, Some(30)),
            past(Action::Restart, Outcome::Skipped, 20, Some(20)),
            past(Action::Restart, Outcome::Skipped, 10, Some(10)),
        ];
        assert_eq!(acted(&history), 0);
        assert_eq!(
            decide(Reason::Stale, &history, at(31), &budgets()),
            Decision::Act(Action::Restart)
        );
    }

    /// 7.2 CPS.0006/0007/0008: a recovery refused for the account says nothing about the
    /// phone, so it neither escalates to a reset nor brings the phone nearer to broken.
    #[test]
    fn account_refusals_7_2_neither_escalate_nor_count_against_the_cap() {
        let blocked = |started| Past {
            account_blocked: true,
            ..past(Action::Restart, Outcome::Error, started, Some(started))
        };
        let history = [blocked(30), blocked(20), blocked(10)];
        assert_eq!(acted(&history), 0);
        assert_eq!(
            decide(Reason::Stale, &history, at(31), &budgets()),
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
