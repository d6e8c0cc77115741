//! `cphub demo`: the whole loop on one machine with no flags. cphub runs on a fresh SQLite
//! file, the simulator runs a fake control plane and phones, the phones' callbacks are
//! configured through the real `configure-callbacks` path, and players start sessions.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use clap::Args;

use super::phones::{self, CliError};
use super::{Outcome, PhonesCommand, Target, Wait};
use crate::config::Settings;
use crate::simulator::{SimOptions, Simulator};
use crate::startup::Application;

#[derive(Debug, Clone, Args)]
pub struct DemoOptions {
    /// Virtual phones.
    #[arg(long, default_value_t = 8)]
    pub phones: usize,
    /// Stop after this long (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub duration_secs: u64,
    /// Also send the demo's webhooks (docs/webhooks.md) to this URL, signed with a secret
    /// made for the run, so the console's webhooks page has an endpoint to show.
    #[arg(long)]
    pub webhook_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("could not start: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Startup(#[from] crate::startup::StartupError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Cli(#[from] CliError),
    #[error("--webhook-url is not a URL: {0}")]
    WebhookUrl(String),
}

pub async fn run(options: DemoOptions) -> Result<Outcome, DemoError> {
    let port = free_port()?;
    let token = hex::encode(rand::random::<[u8; 24]>());
    let simulator = Simulator::start(simulator_options(&options, port, &token)).await?;
    let database = std::env::temp_dir().join(format!("cphub-demo-{}.db", std::process::id()));
    let mut overrides = demo_settings(port, &database, &token, &simulator);
    if let Some(url) = &options.webhook_url {
        overrides.push_str(&webhook_settings(url)?);
    }
    let settings = Settings::with_overrides(&overrides)?;
    let app = Application::build(settings.clone()).await?;
    let server = app.handle();
    let serving = tokio::spawn(app.run_until_stopped());

    println!(
        "cphub listening on http://127.0.0.1:{port} (database {})",
        database.display()
    );
    println!(
        "configuring the phones' callbacks through `cphub phones configure-callbacks --all --wait`:"
    );
    let configure = PhonesCommand::ConfigureCallbacks {
        public_url: None,
        target: Target {
            all: true,
            server_id: None,
            phone_ids: vec![],
        },
        heartbeat_interval: None,
        dry_run: false,
        wait: Wait { wait: true },
        restart_idle: false,
    };
    let mut configured = phones::run(&settings, configure).await?;
    // 4.3.9: the properties take effect at the next restart (the simulator holds them until
    // then). The fleet is fresh, no phone has a session yet, so every phone is restarted;
    // `--restart-idle` would skip them, as cphub has not heard from them.
    println!(
        "restarting the phones so the properties take effect (`cphub phones restart --wait`):"
    );
    let phone_ids = simulator
        .fleet
        .lock()
        .phones
        .iter()
        .map(|p| p.phone_id.clone())
        .collect();
    let restart = PhonesCommand::Restart {
        phone_ids,
        wait: Wait { wait: true },
    };
    if phones::run(&settings, restart).await? == Outcome::SomeFailed {
        configured = Outcome::SomeFailed;
    }
    println!(
        "operator API: curl -H 'Authorization: Bearer {token}' http://127.0.0.1:{port}/api/v1/phones/<phone_id>"
    );
    if let Some((app, version)) = upload_version(&simulator) {
        println!(
            "a new version {version} of {app} is uploaded (5.2.2), on no server yet; roll it out: \
             curl -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \
             -d '{{\"app_id\": \"{app}\", \"app_version_ids\": [\"{version}\"], \"push_first\": true}}' \
             http://127.0.0.1:{port}/api/v1/rollouts"
        );
    }
    println!("sessions start every second; Ctrl-C stops the demo.");
    // Last, so it is what a person sees first: the console shows the fleet live.
    println!("open http://127.0.0.1:{port}/console and sign in with the token {token}");
    watch(&simulator, options.duration_secs).await?;

    simulator.stop().await;
    server.stop(true).await;
    let _ = serving.await;
    Ok(configured)
}

/// A version of the fleet's first game to roll out, as an operator would upload one: so a
/// person (or `tools/browser/screenshots.py`) can watch a rollout in the demo.
fn upload_version(simulator: &Simulator) -> Option<(String, String)> {
    let mut fleet = simulator.fleet.lock();
    let app = fleet.apps.first()?.app_id.clone();
    let version = fleet.new_version(&app)?;
    Some((app, version))
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn simulator_options(options: &DemoOptions, cphub_port: u16, token: &str) -> SimOptions {
    let mut sim = SimOptions::defaults();
    sim.phones = options.phones;
    sim.cph_listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    sim.cphub = format!("http://127.0.0.1:{cphub_port}");
    sim.token = Some(token.to_owned());
    sim.job_delay_ms = 300;
    sim
}

fn demo_settings(
    port: u16,
    database: &std::path::Path,
    token: &str,
    simulator: &Simulator,
) -> String {
    let options = SimOptions::defaults();
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\
         [database]\nurl = \"sqlite://{}\"\n\
         [callbacks]\npublic_url = \"http://127.0.0.1:{port}\"\n\
         [fleet]\nheartbeat_interval_secs = 2\n\
         [[api.tokens]]\nname = \"demo\"\nsha256 = \"{digest}\"\nscopes = [\"admin\"]\n\
         [log]\nlevel = \"warn\"\n\
         [cph]\nendpoint = \"{}\"\nproject_id = \"{}\"\nsync_interval_secs = 5\njob_poll_interval_ms = 100\n\
         [cph.auth]\nak = \"{}\"\nsk = \"{}\"\n",
        database.display(),
        simulator.cph_endpoint(),
        options.project_id,
        options.ak,
        options.sk,
        // A named token, not the deprecated plain list: the console and the audit trail
        // show "demo", and the start logs no deprecation warning.
        digest = hex::encode(crate::config::token_digest(token.as_bytes())),
    )
}

/// One endpoint, `demo`, at `url`; its secret is made for the run and printed nowhere (the
/// receiver of a demo has no use for checking signatures). The URL is parsed first: its
/// serialisation percent-encodes quotes, so it cannot break out of the TOML string.
fn webhook_settings(url: &str) -> Result<String, DemoError> {
    use base64::Engine;
    let url = url::Url::parse(url).map_err(|e| DemoError::WebhookUrl(e.to_string()))?;
    let secret = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>());
    Ok(format!(
        "[webhooks]\nendpoints = [{{ name = \"demo\", url = \"{url}\", secrets = [\"whsec_{secret}\"] }}]\n"
    ))
}

async fn watch(simulator: &Simulator, duration_secs: u64) -> std::io::Result<()> {
    let stop = crate::http::stop::stop_signal()?;
    tokio::pin!(stop);
    let mut ticks = tokio::time::interval(Duration::from_secs(3));
    let stop_at = (duration_secs > 0)
        .then(|| tokio::time::Instant::now() + Duration::from_secs(duration_secs));
    loop {
        tokio::select! {
            _ = ticks.tick() => println!("{}", simulator.stats.summary(&simulator.fleet)),
            _ = &mut stop => break,
        }
        if stop_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
            break;
        }
    }
    println!("{}", simulator.stats.summary(&simulator.fleet));
    Ok(())
}
