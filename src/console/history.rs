//! A phone's history: what it went through, merged from the facts the book records — its
//! sessions (allocated, occupied, idle again), its recoveries (recovering, then back or
//! broken), its rollout steps (draining, updating, verifying, updated), the times it was
//! learned out of service and the account's pauses — newest first, each with its reason.
//! The book keeps no log of the phone's derived state (it is computed from its row and the
//! heartbeats), so these facts are its changes of state.

use maud::{Markup, html};

use super::layout::when;
use crate::domain::{Action, Outcome, PhoneStep, Session, SessionState, UtcTime};
use crate::store::{PhoneMarks, Recovery, RolloutPhone};

/// How many lines the page shows at most.
pub(super) const LINES: usize = 50;

/// One change: when, what the phone became, and why.
#[derive(Debug, PartialEq)]
pub(super) struct Line {
    pub(super) at: UtcTime,
    pub(super) became: &'static str,
    pub(super) why: String,
    /// Where it sorts: `at`, or later when an earlier stage of the same fact was recorded
    /// later (a session's enter carries the phone's clock, its mint cphub's).
    order: UtcTime,
}

fn line(at: UtcTime, became: &'static str, why: String) -> Line {
    Line {
        at,
        became,
        why,
        order: at,
    }
}

/// The stages of one fact, in the order they happen, kept in that order whatever clocks
/// their times came from.
fn in_order(mut stages: Vec<Line>) -> Vec<Line> {
    for i in 1..stages.len() {
        stages[i].order = stages[i].order.max(stages[i - 1].order);
    }
    stages
}

/// The newest [`LINES`] changes of the facts given (each kind read newest first).
pub(super) fn lines(sessions: &[Session], recoveries: &[Recovery], marks: &PhoneMarks) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    sessions.iter().for_each(|s| lines.extend(session(s)));
    recoveries.iter().for_each(|r| lines.extend(recovery(r)));
    marks.rollout_steps.iter().for_each(|s| lines.extend(rollout_step(s)));
    for mark in &marks.out_of_service {
        lines.push(line(mark.at, "out_of_service", mark.detail.clone()));
    }
    for pause in &marks.account_pauses {
        let why = format!("the control plane refused the account ({}): no recovery until it is served again (7.2)", pause.code);
        lines.push(line(pause.started_at, "paused", why));
        let served = "the account is served again: recoveries resume".to_owned();
        lines.extend(pause.ended_at.map(|at| line(at, "resumed", served)));
    }
    // Oldest first, a stable sort keeping each fact's stages in their order at one
    // moment; then newest first.
    lines.sort_by_key(|l| l.order);
    lines.reverse();
    lines.truncate(LINES);
    lines
}

fn session(s: &Session) -> Vec<Line> {
    let id = s.session_id.as_str();
    let user = s.user_id.as_ref().map_or("—", |u| u.as_str());
    let mut lines = Vec::new();
    if let Some(at) = s.minted_at {
        lines.push(line(at, "allocated", format!("session {id} minted for {user} ({})", s.app_id)));
    }
    if let Some(at) = s.started_at {
        lines.push(line(at, "occupied", format!("session {id} entered (6.2)")));
    }
    if let Some(at) = s.ended_at {
        lines.push(ended(s, at));
    }
    in_order(lines)
}

fn ended(s: &Session, at: UtcTime) -> Line {
    let id = s.session_id.as_str();
    match s.state {
        SessionState::Abandoned => line(at, "stale", format!("session {id} abandoned: the phone fell silent")),
        SessionState::Expired => line(at, "idle", format!("session {id} expired: its hold lapsed unused")),
        _ => line(at, "idle", format!("session {id} quit (6.3)")),
    }
}

fn recovery(r: &Recovery) -> Vec<Line> {
    let dry = if r.dry_run { " (dry run)" } else { "" };
    let job = r.job_id.as_deref().map_or(String::new(), |j| format!(", job {j}"));
    match r.action {
        // A server incident's row names the server, not a phone: it never reaches here.
        Action::Hold => Vec::new(),
        Action::MarkBroken => vec![line(r.started_at, "broken", format!("given up on ({}){dry}", r.reason))],
        action => {
            let start = line(r.started_at, "recovering", format!("{action} because {}{dry}{job}", r.reason));
            let end = r.ended_at.map(|at| recovery_end(r, at));
            in_order(std::iter::once(start).chain(end).collect())
        }
    }
}

fn recovery_end(r: &Recovery, at: UtcTime) -> Line {
    let error = r.error.as_deref().map_or(String::new(), |e| format!(": {e}"));
    let became = match r.outcome {
        Outcome::Succeeded => "back",
        Outcome::Skipped => "skipped",
        Outcome::DryRun => "dry_run",
        _ => "failed",
    };
    line(at, became, format!("{} {}{error}", r.action, r.outcome))
}

fn rollout_step(s: &RolloutPhone) -> Vec<Line> {
    let of = format!("rollout {}", s.rollout_id);
    let batch = s.batch.map_or(String::new(), |b| format!(", batch {b}"));
    let job = s.job_id.as_deref().unwrap_or("—");
    let stages = [
        (s.drained_at, "draining", format!("{of}{batch}: no new session, the current one plays to its end")),
        (s.submitted_at, "updating", format!("{of}: update sent (5.3.7), job {job}")),
        (s.job_ended_at, "verifying", format!("{of}: job {job} ended; waiting for a heartbeat and 5.3.6")),
        (s.finished_at, finished(s.state), finished_why(s, &of)),
    ];
    in_order(
        (stages.into_iter())
            .filter_map(|(at, became, why)| at.map(|at| line(at, became, why)))
            .collect(),
    )
}

fn finished(step: PhoneStep) -> &'static str {
    match step {
        PhoneStep::Done => "updated",
        PhoneStep::Failed => "failed",
        _ => "skipped",
    }
}

fn finished_why(s: &RolloutPhone, of: &str) -> String {
    match s.state {
        PhoneStep::Done => format!("{of}: runs the new version, back in the pool"),
        PhoneStep::Failed => {
            let error = s.error.as_deref().unwrap_or("failed");
            format!("{of}: {error}; back in the pool on its old version")
        }
        _ => format!("{of}: its session outlived the drain deadline; taken again later"),
    }
}

pub(super) fn render(lines: &[Line]) -> Markup {
    html! {
        @if lines.is_empty() { p.muted { "Nothing yet." } }
        ol.history { @for l in lines {
            li data-became=(l.became) {
                (when(l.at)) " — " b { (l.became.replace('_', " ")) } " — " (l.why)
            }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OutOfServiceMark, PausePeriod};

    fn at(seconds: i64) -> UtcTime {
        UtcTime::from_epoch_millis(1_800_000_000_000 + seconds * 1000).unwrap()
    }

    /// The account's pause (7.2) and an out-of-service mark (4.3.1) merge by time with each
    /// other, newest first; an open pause has no end line.
    #[test]
    fn pauses_and_out_of_service_marks_merge_newest_first_7_2() {
        let marks = PhoneMarks {
            out_of_service: vec![OutOfServiceMark {
                at: at(20),
                detail: "status 8 (stopped)".into(),
            }],
            account_pauses: vec![
                PausePeriod {
                    code: "CPS.0007".into(),
                    started_at: at(30),
                    ended_at: None,
                },
                PausePeriod {
                    code: "CPS.0006".into(),
                    started_at: at(10),
                    ended_at: Some(at(25)),
                },
            ],
            ..PhoneMarks::default()
        };

        let lines = lines(&[], &[], &marks);

        let became: Vec<&str> = lines.iter().map(|l| l.became).collect();
        assert_eq!(became, ["paused", "resumed", "out_of_service", "paused"]);
        assert!(lines[0].why.contains("CPS.0007"), "{lines:?}");
        assert!(lines[2].why.contains("status 8 (stopped)"), "{lines:?}");
    }

    /// The bound keeps the newest lines.
    #[test]
    fn the_history_keeps_its_newest_lines() {
        let out_of_service = (0..LINES as i64 + 5)
            .map(|i| OutOfServiceMark {
                at: at(i),
                detail: i.to_string(),
            })
            .collect();
        let marks = PhoneMarks {
            out_of_service,
            ..PhoneMarks::default()
        };

        let lines = lines(&[], &[], &marks);

        assert_eq!(lines.len(), LINES);
        assert_eq!(lines[0].at, at(LINES as i64 + 4));
        assert_eq!(lines[LINES - 1].at, at(5));
    }
}
