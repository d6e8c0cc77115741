#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use cphub::cli::{Cli, Command};
use cphub::config::{Settings, default_config_dir};
use cphub::startup::Application;
use cphub::telemetry::{self, ErrorChain};

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
    telemetry::init(&settings.log, std::io::stdout);
    let result = match cli.command {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
