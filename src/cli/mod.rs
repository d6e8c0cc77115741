//! The `cphub` command line. Every subcommand reads the same layered configuration.

pub mod audit;
mod configure;
pub mod demo;
pub mod encode;
pub mod jobs;
pub mod phones;
pub mod queue;
pub mod recoveries;
mod reset;
pub mod rollout;
pub mod sessions;
pub mod token;
pub mod usage;
pub mod webhooks;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cphub",
    version,
    about = "Callbacks, sessions and fleet care for Huawei Cloud Phone gaming"
)]
pub struct Cli {
    /// A TOML file layered over config/default.toml and config/$CPHUB_ENV.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the callback receiver and operator API (applies migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Phones, through the CPH management API (needs the [cph] settings).
    #[command(subcommand)]
    Phones(PhonesCommand),
    /// Asynchronous CPH jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Encoding servers, through the CPH management API (chapter 4.6.1).
    #[command(subcommand)]
    EncodeServers(EncodeServersCommand),
    /// The watchdog's recovery log (read from the database).
    #[command(subcommand)]
    Recoveries(RecoveriesCommand),
    /// The session book (read from the database).
    #[command(subcommand)]
    Sessions(sessions::SessionsCommand),
    /// The wait queue (read from the database).
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Usage for billing over a window, grouped (read from the database).
    Usage(usage::UsageCommand),
    /// Game version rollouts: start (needs the [cph] settings), status, pause, resume,
    /// abort (in the database; a running `serve` updates the phones).
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Webhook deliveries: list, show, retry, replay (in the database).
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Operator API tokens: `token new` makes one and prints its [[api.tokens]] entry.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// The audit trail of operator calls (read from the database).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run a fake CPH control plane and a fleet of virtual phones.
    Simulate(Box<crate::simulator::SimOptions>),
    /// cphub on a fresh SQLite file plus the simulator, wired together: sessions flow.
    Demo(demo::DemoOptions),
}

#[derive(Debug, Subcommand)]
pub enum PhonesCommand {
    /// List phones as the control plane knows them.
    List {
        #[arg(long)]
        server_id: Option<String>,
        /// Control-plane status, e.g. 2 (running), -7 (abnormal).
        #[arg(long, allow_hyphen_values = true)]
        status: Option<i32>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Point phones' callback properties at this cphub.
    ConfigureCallbacks {
        /// Where phones reach cphub (default: callbacks.public_url).
        #[arg(long)]
        public_url: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Seconds between heartbeats (default: fleet.heartbeat_interval_secs).
        #[arg(long)]
        heartbeat_interval: Option<u64>,
        /// Show what would be written and call nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --wait, each phone is read back and reported applied, waiting for a restart
        /// or failed.
        #[command(flatten)]
        wait: Wait,
        /// Restart, with the properties, the phones still waiting for a restart that are
        /// idle in cphub's book (never one with a session), watchdog.max_in_flight at a time.
        #[arg(long, requires = "wait")]
        restart_idle: bool,
    },
    /// Restart phones.
    Restart {
        #[arg(required = true)]
        phone_ids: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Reset phones to factory settings, re-applying each phone's own properties and the
    /// callback properties in the same call (as the watchdog does; recorded in the recovery
    /// log, within the watchdog's budgets; needs the database).
    Reset {
        #[arg(required = true)]
        phone_ids: Vec<String>,
        /// Where phones reach cphub (default: callbacks.public_url).
        #[arg(long)]
        public_url: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Stop phones.
    Stop {
        #[arg(required = true)]
        phone_ids: Vec<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Run one ADB shell command on a phone and print its output (synchronous command API,
    /// chapter 4.7.5: at most 1,024 bytes of letters, digits, spaces and _ . / : -, checked
    /// before the call). `cphub phones exec PHONE -- getprop sys.boot_completed`
    Exec {
        phone_id: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum EncodeServersCommand {
    /// Every encoding server with its state.
    List {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Which phones a command acts on.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Every phone of the project.
    #[arg(long)]
    pub all: bool,
    /// Every phone of one cloud phone server.
    #[arg(long)]
    pub server_id: Option<String>,
    /// These phones (repeatable).
    #[arg(long = "phone-id")]
    pub phone_ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct Wait {
    /// Follow the started jobs until they end (cph.job_deadline_secs at most).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One job.
    Show {
        job_id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// The jobs one batch request started.
    List {
        #[arg(long)]
        request_id: String,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecoveriesCommand {
    /// Newest first.
    List {
        #[arg(long)]
        phone_id: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// What a finished command reports: success, or that some phone or job failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    AllSucceeded,
    SomeFailed,
}
