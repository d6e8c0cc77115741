//! `cphub simulate` options: the fleet, the players, and the faults to inject.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::control_plane::{ControlPlaneFaults, LostAnswer, Operation};

#[derive(Debug, Clone, Args)]
pub struct SimOptions {
    /// Number of virtual phones.
    #[arg(long, default_value_t = 8)]
    pub phones: usize,
    /// Where the fake CPH management API listens.
    #[arg(long, default_value = "127.0.0.1:9900")]
    pub cph_listen: SocketAddr,
    /// Credentials the fake control plane accepts (AK/SK signing).
    #[arg(long, default_value = "SIMULATORAK")]
    pub ak: String,
    #[arg(long, default_value = "simulator-secret-key")]
    pub sk: String,
    #[arg(long, default_value = "0a1b2c3d4e5f60718293a4b5c6d7e8f9")]
    pub project_id: String,
    /// Seed of phone ids (the same seed gives the same fleet).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Phones per server (chapter 4.3.1 `server_id`), in order: the first N on the first.
    #[arg(long, default_value_t = 16)]
    pub phones_per_server: usize,

    /// cphub's base URL, where players ask for sessions (POST /api/v1/sessions).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub cphub: String,
    /// Operator token for minting sessions; no players without one.
    #[arg(long, env = "CPHUB_SIM_TOKEN")]
    pub token: Option<String>,
    /// A player asks for a session this often.
    #[arg(long, default_value_t = 1000)]
    pub player_interval_ms: u64,
    /// Sessions to play in all (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub sessions: u64,
    /// Session length range, in seconds.
    #[arg(long, default_value_t = 3)]
    pub session_min_secs: u64,
    #[arg(long, default_value_t = 8)]
    pub session_max_secs: u64,

    /// When the silent and stuck phones break, after the simulator starts.
    #[arg(long, default_value_t = 10)]
    pub faults_after_secs: u64,
    /// Phones that go silent (no heartbeats); a restart revives them.
    #[arg(long, default_value_t = 0)]
    pub silent: usize,
    /// Phones stuck until reset (a restart does not help).
    #[arg(long, default_value_t = 0)]
    pub stuck: usize,
    /// Phones whose restarts fail, so that a reset is needed (from when the faults start).
    #[arg(long, default_value_t = 0)]
    pub restart_fails: usize,
    /// Phones someone else stops (status 8, chapter 4.3.1) when the faults start: silent on
    /// purpose; cphub must neither restart nor allocate them. Next after the stuck ones.
    #[arg(long, default_value_t = 0)]
    pub stopped: usize,
    /// Phones the control plane freezes (6) when the faults start. Next after the stopped.
    #[arg(long, default_value_t = 0)]
    pub frozen: usize,
    /// Phones left stopping (7) when the faults start. Next after the frozen.
    #[arg(long, default_value_t = 0)]
    pub stopping: usize,
    /// Phones someone else restarts (4) when the faults start, a restart that does not end
    /// while the test looks. Next after the stopping.
    #[arg(long, default_value_t = 0)]
    pub restarting_elsewhere: usize,
    /// Servers that go down when the faults start: every phone of the LAST N servers stops
    /// calling back (heartbeats, sessions) while the control plane still lists it running
    /// (2), as for a host it has not noticed is dead. Restarts and resets change nothing;
    /// the phones come back only with their server. The last ones, so that in a small fleet
    /// the silent and stuck phones (the first ones) are on a healthy server.
    #[arg(long, default_value_t = 0)]
    pub dark_servers: usize,
    /// A property every phone carries from the start, set by its operator (appendix A.1),
    /// e.g. `--property ro.horizontal.screen=1`; repeatable. A reset that does not send it
    /// again wipes it, as a real one would (chapter 4.3.5).
    #[arg(long = "property", value_parser = key_value)]
    pub properties: Vec<(String, String)>,
    /// `ID[:SHARE]`: an application deployed on SHARE (0 to 1, default 1) of the phones
    /// (chapter 5.1.2), each app on the phones after the previous app's, wrapping around;
    /// repeatable. Players ask for the apps in turn. Without any: `sim.game` on every phone.
    #[arg(long = "app", value_parser = app_share)]
    pub apps: Vec<(String, f64)>,
    /// Chance that an enter or quit event is delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub duplicate_rate: f64,
    /// Chance that a session's enter is delivered after its quit.
    #[arg(long, default_value_t = 0.0)]
    pub reorder_rate: f64,
    /// Chance that a callback attempt fails before reaching cphub (it is retried).
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Heartbeats come up to this much later than the interval (random per beat).
    #[arg(long, default_value_t = 0)]
    pub heartbeat_jitter_ms: u64,
    /// Delay before every callback.
    #[arg(long, default_value_t = 0)]
    pub callback_delay_ms: u64,
    /// Jobs of the fake control plane run this long.
    #[arg(long, default_value_t = 1000)]
    pub job_delay_ms: u64,
    /// Chance that a restart, reset or application update (5.3.7) job fails.
    #[arg(long, default_value_t = 0.0)]
    pub job_failure_rate: f64,
    /// `OPERATION=N`: the next N calls of the operation (list_phones, show_phone,
    /// update_property, restart, reset, stop, show_job, list_jobs, list_apps, app_phones)
    /// are answered 400 CPS.0003
    /// (chapter 7.2 "System error", nothing done). Repeatable.
    #[arg(long, value_parser = operation_count)]
    pub system_errors: Vec<(Operation, u32)>,
    /// `OPERATION=N`: the next N batch POSTs of the operation (update_property, restart,
    /// reset, stop) are performed, then answered `--lost-answer-status`. Repeatable.
    #[arg(long, value_parser = operation_count)]
    pub lose_answers: Vec<(Operation, u32)>,
    /// 502 or 504 (chapter 7.1.2), for `--lose-answers`.
    #[arg(long, default_value_t = 502, value_parser = lost_answer_status)]
    pub lost_answer_status: u16,
    /// The account is in arrears: every call is answered 400 CPS.0006 (chapter 7.2).
    #[arg(long)]
    pub arrears: bool,

    /// Print a summary this often.
    #[arg(long, default_value_t = 5)]
    pub summary_secs: u64,
    /// Stop after this long (0: run until Ctrl-C / SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub duration_secs: u64,

    /// How the simulated clients seal a sign check's `encrypted_data` (6.1): as `[access]`
    /// of the configuration `cphub simulate` is given, cphub's defaults otherwise.
    #[arg(skip)]
    pub client: super::ClientSeal,

    /// `--load`: the open-loop load generator instead (it plays `--phones` phones and
    /// their players against `--cphub`; see docs/benchmarks.md).
    #[command(flatten)]
    pub load: super::load::LoadOptions,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.to_owned(), value.to_owned()))
}

/// The app every phone has when no `--app` is given.
pub const DEFAULT_APP: &str = "sim.game";

fn app_share(text: &str) -> Result<(String, f64), String> {
    let (app_id, share) = text.split_once(':').unwrap_or((text, "1"));
    let share: f64 = share
        .parse()
        .map_err(|e| format!("{share:?} is not a share: {e}"))?;
    if app_id.is_empty() || !(0.0..=1.0).contains(&share) {
        return Err(format!(
            "expected ID[:SHARE] with SHARE in 0..1, got {text:?}"
        ));
    }
    Ok((app_id.to_owned(), share))
}

impl SimOptions {
    /// The applications and their shares of the fleet (`--app`, or [`DEFAULT_APP`] on all).
    pub fn deployments(&self) -> Vec<(String, f64)> {
        if self.apps.is_empty() {
            vec![(DEFAULT_APP.to_owned(), 1.0)]
        } else {
            self.apps.clone()
        }
    }

    /// The documented defaults, as `cphub simulate` with no flags would use.
    pub fn defaults() -> SimOptions {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            options: SimOptions,
        }
        Wrapper::parse_from(["simulate"]).options
    }

    /// The control-plane faults these options ask for (none by default).
    pub fn control_plane_faults(&self) -> ControlPlaneFaults {
        let faults = ControlPlaneFaults::default();
        for (operation, calls) in &self.system_errors {
            faults.system_errors(*operation, *calls);
        }
        let how = match self.lost_answer_status {
            504 => LostAnswer::GatewayTimeout,
            _ => LostAnswer::BadGateway,
        };
        for (operation, calls) in &self.lose_answers {
            faults.lose_answers(*operation, *calls, how);
        }
        faults.set_arrears(self.arrears);
        faults
    }

    /// Whether any phone-side fault is asked for (they all start at `faults_after_secs`).
    pub fn has_faults(&self) -> bool {
        let externally: usize = self.external_statuses().iter().map(|(n, _)| n).sum();
        self.silent + self.stuck + self.restart_fails + externally + self.dark_servers > 0
            || self.job_failure_rate > 0.0
    }

    /// The phones put out of running by someone else when the faults start, in order after
    /// the silent and stuck ones: how many, and the status (chapter 4.3.1) each gets.
    pub fn external_statuses(&self) -> [(usize, i32); 4] {
        use crate::cph::model::status;
        [
            (self.stopped, status::STOPPED),
            (self.frozen, status::FROZEN),
            (self.stopping, status::STOPPING),
            (self.restarting_elsewhere, status::RESTARTING),
        ]
    }

    /// Where and what the load generator plays: `--phones` phones of `--seed`, the first
    /// app, sessions minted with `--token`.
    pub fn load_target(&self) -> super::load::Target {
        super::load::Target {
            cphub: self.cphub.clone(),
            token: self.token.clone(),
            app_id: self.deployments()[0].0.clone(),
            phones: self.phones,
            seed: self.seed,
            client: self.client,
        }
    }

    pub fn session_range(&self) -> (Duration, Duration) {
        let min = self.session_min_secs.max(1);
        (
            Duration::from_secs(min),
            Duration::from_secs(self.session_max_secs.max(min)),
        )
    }
}

/// `restart=3` → (restart, 3).
fn operation_count(text: &str) -> Result<(Operation, u32), String> {
    let (operation, count) = text
        .split_once('=')
        .ok_or_else(|| format!("expected OPERATION=N, got {text:?}"))?;
    let count = count
        .parse()
        .map_err(|e| format!("{count:?} is not a count: {e}"))?;
    Ok((operation.parse()?, count))
}

fn lost_answer_status(text: &str) -> Result<u16, String> {
    match text {
        "502" => Ok(502),
        "504" => Ok(504),
        other => Err(format!("{other:?}: 502 or 504")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_faults_are_off_by_default_and_parsed_from_flags() {
        let defaults = SimOptions::defaults();
        assert!(defaults.system_errors.is_empty() && defaults.lose_answers.is_empty());
        assert!(!defaults.arrears);
        assert_eq!((defaults.dark_servers, defaults.phones_per_server), (0, 16));

        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            options: SimOptions,
        }
        let options = Wrapper::try_parse_from([
            "simulate",
            "--system-errors",
            "restart=2",
            "--system-errors",
            "show_job=1",
            "--lose-answers",
            "reset=1",
            "--lost-answer-status",
            "504",
            "--arrears",
            "--dark-servers",
            "1",
            "--phones-per-server",
            "4",
        ])
        .unwrap()
        .options;
        assert_eq!(
            options.system_errors,
            [(Operation::Restart, 2), (Operation::ShowJob, 1)]
        );
        assert_eq!(options.lose_answers, [(Operation::Reset, 1)]);
        assert_eq!(options.lost_answer_status, 504);
        assert!(options.arrears);
        assert_eq!(defaults.deployments(), [(DEFAULT_APP.to_owned(), 1.0)]);
        let apps = Wrapper::try_parse_from(["simulate", "--app", "game.a:0.5", "--app", "lobby"])
            .unwrap()
            .options;
        assert_eq!(
            apps.deployments(),
            [("game.a".to_owned(), 0.5), ("lobby".to_owned(), 1.0)]
        );
        assert_eq!((options.dark_servers, options.phones_per_server), (1, 4));
        for bad in [
            &["simulate", "--app", "game.a:1.5"][..],
            &["simulate", "--app", ":0.5"],
            &["simulate", "--app", "game.a:half"],
            &["simulate", "--system-errors", "reboot=1"],
            &["simulate", "--system-errors", "restart"],
            &["simulate", "--lost-answer-status", "500"],
        ] {
            assert!(Wrapper::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
