#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use cphub::cli::{self, Cli, Command, Outcome};
use cphub::config::{Settings, default_config_dir};
use cphub::startup::Application;
use cphub::telemetry::{self, ErrorChain};

// glibc's malloc was the largest user-space cost at 280,000 phones (16 % of the CPU): each
// request allocates and frees many small blocks, and a block freed on another thread than
// the one that allocated it goes back through a locked arena. jemalloc's per-thread caches
// take them without a lock. docs/benchmarks.md has the before/after and the memory it costs.
// It is the process's `malloc` too (Cargo.toml's `unprefixed_malloc_on_supported_platforms`):
// the bundled SQLite allocates through `malloc`, and on glibc's that was 7 % of the writer
// thread's time.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&default_config_dir(), cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("cphub: {}", ErrorChain(&error));
            return ExitCode::from(2);
        }
    };
    // Commands print their results on stdout; their logs must not mix in.
    let mut traces = None;
    match cli.command {
        Command::Serve => {
            match telemetry::init_with_traces(&settings.log, &settings.telemetry, std::io::stdout) {
                Ok(pipeline) => traces = Some(pipeline),
                Err(error) => {
                    eprintln!("cphub: {}", ErrorChain(&error));
                    return ExitCode::from(2);
                }
            }
        }
        // The demo's own output is the point; only warnings and errors join it.
        Command::Demo(_) => {
            let quiet = cphub::config::LogSettings {
                level: "warn".into(),
                ..settings.log.clone()
            };
            telemetry::init(&quiet, std::io::stderr)
        }
        _ => telemetry::init(&settings.log, std::io::stderr),
    }
    // Serve and migrate take the settings; the audit line needs only the database.
    let audited = cli::audit::Audited::of(&cli.command).map(|a| (a, settings.database.clone()));
    let result = match cli.command {
        Command::Serve => serve(settings).await.map(|()| Outcome::AllSucceeded),
        Command::Migrate => migrate(settings).await.map(|()| Outcome::AllSucceeded),
        Command::Phones(command) => cli::phones::run(&settings, command)
            .await
            .map_err(Into::into),
        Command::Jobs(command) => cli::jobs::run(&settings, command).await.map_err(Into::into),
        Command::EncodeServers(cli::EncodeServersCommand::List { format }) => {
            cli::encode::list(&settings, format)
                .await
                .map_err(Into::into)
        }
        Command::Recoveries(command) => cli::recoveries::run(&settings, command)
            .await
            .map_err(Into::into),
        Command::Sessions(command) => cli::sessions::run(&settings, command)
            .await
            .map_err(Into::into),
        Command::Queue(command) => cli::queue::run(&settings, command)
            .await
            .map_err(Into::into),
        Command::Usage(command) => cli::usage::run(&settings, command)
            .await
            .map_err(Into::into),
        Command::Rollout(command) => cli::rollout::run(&settings, command)
            .await
            .map_err(Into::into),
        Command::Webhooks(command) => cli::webhooks::run(&settings, command)
            .await
            .map_err(Into::into),
        Command::Simulate(mut options) => {
            // The simulated clients seal as the cphub they play against is configured to
            // check: the same configuration file and environment.
            options.client = cphub::simulator::ClientSeal::from(&settings.access);
            cphub::simulator::run(*options).await
        }
        .map(|()| Outcome::AllSucceeded)
        .map_err(Into::into),
        Command::Demo(options) => cli::demo::run(options).await.map_err(Into::into),
        Command::Token(command) => cli::token::run(command).map_err(Into::into),
        Command::Audit(command) => cli::audit::run(&settings, command)
            .await
            .map_err(Into::into),
    };
    if let Some((audited, database)) = audited {
        let succeeded = matches!(result, Ok(Outcome::AllSucceeded));
        audited.record(&database, succeeded).await;
    }
    // The last spans (the shutdown's own included) are still in the exporter's batch.
    if let Some(traces) = traces {
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    match result {
        Ok(Outcome::AllSucceeded) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::FAILURE,
        Err(error) => {
            tracing::error!(error = %ErrorChain(error.as_ref()), "cphub failed");
            eprintln!("cphub: {}", ErrorChain(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve(settings: Settings) -> Result<(), BoxError> {
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}

async fn migrate(settings: Settings) -> Result<(), BoxError> {
    let store = cphub::store::connect(&settings.database).await?;
    store.migrate().await?;
    tracing::info!("migrations applied");
    Ok(())
}
