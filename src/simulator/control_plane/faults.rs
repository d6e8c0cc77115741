//! Faults on demand, for tests of how cphub copes with the control plane's documented
//! failures (docs/simulator.md). All off by default; a test (or `cphub simulate`) turns them
//! on through the [`ControlPlaneFaults`] handle it shares with the running control plane:
//!
//! * the next N calls of an operation answered 400 CPS.0003 (7.2 "System error … Try again
//!   later"): nothing is done;
//! * the next N calls of an operation answered 400 CPS.0200 (7.2 "Invalid parameters"):
//!   refused for good as far as the caller can tell, nothing done;
//! * the next N batch POSTs of an operation answered 201 with every phone refused in its
//!   entry with CPS.0003: nothing is done. The reference shows batch answers refusing a
//!   phone in its entry (the 4.3.5 and 4.3.6 examples, CPS.0004) and is silent on which
//!   other 7.2 codes an entry may carry; CPS.0003 is the one that says nothing of the phone;
//! * the next N batch POSTs of an operation performed, then answered 502 or 504 (7.1.2): the
//!   jobs exist, the answer is lost. The error body and `X-Request-Id` name the request, as
//!   every answer of the fake does (7.1.1), so 4.4.2 can find its jobs;
//! * the account in arrears: every authenticated call answered 400 CPS.0006 (7.2);
//! * synchronous commands (4.7.5) that fail on every phone (status -1, `CPS.0191` "Run
//!   command failed.", as the reference's example fails one), or whose answer does not come
//!   for a while (a control plane that hangs: the reference only bounds the call at 30 s);
//! * batch POSTs of an operation answered only after a while, nothing done until then (a
//!   slow control plane or network: the reference bounds no such call);
//! * the next N batch POSTs of an operation answered 504 at once (7.1.2 "the gateway times
//!   out") and performed only a while later, their jobs appearing to 4.4.2 then: a gateway
//!   that gave up on a request its backend had queued (the reference is silent on when a
//!   job may appear; this is the hardest case for reconciling a lost answer).
//!
//! And one way of answering the reference shows but the simulator does not use by default:
//! 5.3.1 and 5.3.6 with `""` for every version field (`app_version_id`, `version_code`,
//! `version_name`), exactly as their examples answer. The tables call the field "the
//! application version ID"; whether a real service leaves it blank the reference does not
//! say, so by default the simulator fills it in.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// The operations of the management API, named as cphub's metrics name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    ListPhones,
    ShowPhone,
    UpdateProperty,
    Restart,
    Reset,
    Stop,
    ShowJob,
    ListJobs,
    ListApps,
    AppPhones,
    ServerApps,
    PushAppVersion,
    PhoneApps,
    UpdateAppVersion,
    ListEncodeServers,
    RestartEncodeServers,
    RunSyncCommand,
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        Ok(match name {
            "list_phones" => Operation::ListPhones,
            "show_phone" => Operation::ShowPhone,
            "update_property" => Operation::UpdateProperty,
            "restart" => Operation::Restart,
            "reset" => Operation::Reset,
            "stop" => Operation::Stop,
            "show_job" => Operation::ShowJob,
            "list_jobs" => Operation::ListJobs,
            "list_apps" => Operation::ListApps,
            "app_phones" => Operation::AppPhones,
            "server_apps" => Operation::ServerApps,
            "push_app_version" => Operation::PushAppVersion,
            "phone_apps" => Operation::PhoneApps,
            "update_app_version" => Operation::UpdateAppVersion,
            "list_encode_servers" => Operation::ListEncodeServers,
            "restart_encode_servers" => Operation::RestartEncodeServers,
            "run_sync_command" => Operation::RunSyncCommand,
            other => {
                return Err(format!(
                    "unknown operation {other:?} (list_phones, show_phone, update_property, \
                     restart, reset, stop, show_job, list_jobs, list_apps, app_phones, server_apps, \
                     push_app_version, phone_apps, update_app_version, list_encode_servers, \
                     restart_encode_servers, run_sync_command)"
                ));
            }
        })
    }
}

/// How a performed POST's answer is lost (7.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAnswer {
    /// 502 Bad Gateway: "the server has received an invalid response".
    BadGateway,
    /// 504 Gateway Timeout.
    GatewayTimeout,
}

impl LostAnswer {
    pub fn status(self) -> u16 {
        match self {
            LostAnswer::BadGateway => 502,
            LostAnswer::GatewayTimeout => 504,
        }
    }
}

/// Shared with the running control plane: a change applies to the next request.
#[derive(Debug, Clone, Default)]
pub struct ControlPlaneFaults(Arc<Mutex<FaultState>>);

#[derive(Debug, Default)]
struct FaultState {
    system_errors: HashMap<Operation, u32>,
    invalid_requests: HashMap<Operation, (u32, ())>,
    item_errors: HashMap<Operation, (u32, ())>,
    lost_answers: HashMap<Operation, (u32, LostAnswer)>,
    arrears: bool,
    commands_fail: bool,
    commands_hang: Option<Duration>,
    slow_answers: HashMap<Operation, Duration>,
    late_starts: HashMap<Operation, (u32, Duration)>,
    blank_versions: bool,
}

impl ControlPlaneFaults {
    /// The next `calls` calls of `operation` are answered 400 CPS.0003, doing nothing.
    pub fn system_errors(&self, operation: Operation, calls: u32) {
        self.state().system_errors.insert(operation, calls);
    }

    /// The next `calls` calls of `operation` are answered 400 CPS.0200, doing nothing.
    pub fn invalid_requests(&self, operation: Operation, calls: u32) {
        self.state().invalid_requests.insert(operation, (calls, ()));
    }

    /// The next `calls` batch POSTs of `operation` refuse each phone in its entry with
    /// CPS.0003, doing nothing. Of 5.3.7 (`UpdateAppVersion`), the first version is refused
    /// in its entry and the others' jobs started.
    pub fn item_errors(&self, operation: Operation, calls: u32) {
        self.state().item_errors.insert(operation, (calls, ()));
    }

    /// The next `calls` batch POSTs of `operation` are performed, then answered `how`.
    pub fn lose_answers(&self, operation: Operation, calls: u32, how: LostAnswer) {
        self.state().lost_answers.insert(operation, (calls, how));
    }

    /// The next `calls` batch POSTs of `operation` (or 5.3.7 updates) are answered 504 at
    /// once and performed `after` that.
    pub fn late_starts(&self, operation: Operation, calls: u32, after: Duration) {
        self.state().late_starts.insert(operation, (calls, after));
    }

    /// While on, 5.3.1 and 5.3.6 answer `""` for every version field, as their examples do.
    pub fn set_blank_versions(&self, on: bool) {
        self.state().blank_versions = on;
    }

    pub(super) fn blank_versions(&self) -> bool {
        self.state().blank_versions
    }

    /// While on, every authenticated call is answered 400 CPS.0006 (arrears).
    pub fn set_arrears(&self, on: bool) {
        self.state().arrears = on;
    }

    /// While on, every synchronous command (4.7.5) fails on every phone.
    pub fn fail_commands(&self, on: bool) {
        self.state().commands_fail = on;
    }

    /// While set, every synchronous command (4.7.5) is answered only after `delay`.
    pub fn hang_commands(&self, delay: Option<Duration>) {
        self.state().commands_hang = delay;
    }

    /// While set, each batch POST of `operation` waits `delay` before it is performed and
    /// answered.
    pub fn slow_answers(&self, operation: Operation, delay: Option<Duration>) {
        let mut state = self.state();
        match delay {
            Some(delay) => state.slow_answers.insert(operation, delay),
            None => state.slow_answers.remove(&operation),
        };
    }

    /// Waits out the slowness set for `operation`, if any.
    pub(super) async fn slow_answer(&self, operation: Operation) {
        let delay = self.state().slow_answers.get(&operation).copied();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
    }

    pub(super) fn commands_fail(&self) -> bool {
        self.state().commands_fail
    }

    pub(super) fn commands_hang(&self) -> Option<Duration> {
        self.state().commands_hang
    }

    pub(super) fn in_arrears(&self) -> bool {
        self.state().arrears
    }

    /// Uses up one of the operation's system errors, if any is left.
    pub(super) fn take_system_error(&self, operation: Operation) -> bool {
        let mut state = self.state();
        match state.system_errors.get_mut(&operation) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Uses up one of the operation's CPS.0200 refusals, if any is left.
    pub(super) fn take_invalid_request(&self, operation: Operation) -> bool {
        take_one(&mut self.state().invalid_requests, operation).is_some()
    }

    /// Uses up one of the operation's refusals of every entry, if any is left.
    pub(super) fn take_item_errors(&self, operation: Operation) -> bool {
        take_one(&mut self.state().item_errors, operation).is_some()
    }

    /// Uses up one of the operation's lost answers, if any is left.
    pub(super) fn take_lost_answer(&self, operation: Operation) -> Option<LostAnswer> {
        take_one(&mut self.state().lost_answers, operation)
    }

    /// Uses up one of the operation's late starts, if any is left: how late it starts.
    pub(super) fn take_late_start(&self, operation: Operation) -> Option<Duration> {
        take_one(&mut self.state().late_starts, operation)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One of the `(calls left, how)` of `operation`, used up.
fn take_one<T: Copy>(faults: &mut HashMap<Operation, (u32, T)>, operation: Operation) -> Option<T> {
    match faults.get_mut(&operation) {
        Some((left, how)) if *left > 0 => {
            *left -= 1;
            Some(*how)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_off_by_default_and_used_up_one_call_at_a_time() {
        let faults = ControlPlaneFaults::default();
        assert!(!faults.in_arrears());
        assert!(!faults.take_system_error(Operation::Restart));
        assert_eq!(faults.take_lost_answer(Operation::Restart), None);
        faults.system_errors(Operation::Restart, 2);
        faults.lose_answers(Operation::Reset, 1, LostAnswer::GatewayTimeout);
        assert!(faults.take_system_error(Operation::Restart));
        assert!(!faults.take_system_error(Operation::Reset));
        assert!(faults.take_system_error(Operation::Restart));
        assert!(!faults.take_system_error(Operation::Restart));
        assert_eq!(
            faults.take_lost_answer(Operation::Reset),
            Some(LostAnswer::GatewayTimeout)
        );
        assert_eq!(faults.take_lost_answer(Operation::Reset), None);
        faults.item_errors(Operation::Restart, 1);
        assert!(faults.take_item_errors(Operation::Restart));
        assert!(!faults.take_item_errors(Operation::Restart));
        assert_eq!("list_jobs".parse(), Ok(Operation::ListJobs));
        assert!("nope".parse::<Operation>().is_err());
    }
}
