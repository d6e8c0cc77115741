//! `cphub simulate` options: the fleet, the players, and the faults to inject.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

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
    /// Phones whose restarts fail, so that a reset is needed.
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
    /// A property every phone carries from the start, set by its operator (appendix A.1),
    /// e.g. `--property ro.horizontal.screen=1`; repeatable. A reset that does not send it
    /// again wipes it, as a real one would (chapter 4.3.5).
    #[arg(long = "property", value_parser = key_value)]
    pub properties: Vec<(String, String)>,
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
    /// Chance that a restart or reset job fails.
    #[arg(long, default_value_t = 0.0)]
    pub job_failure_rate: f64,

    /// Print a summary this often.
    #[arg(long, default_value_t = 5)]
    pub summary_secs: u64,
    /// Stop after this long (0: run until Ctrl-C / SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub duration_secs: u64,
}

fn key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    Ok((key.to_owned(), value.to_owned()))
}

impl SimOptions {
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

    pub fn session_range(&self) -> (Duration, Duration) {
        let min = self.session_min_secs.max(1);
        (
            Duration::from_secs(min),
            Duration::from_secs(self.session_max_secs.max(min)),
        )
    }
}
