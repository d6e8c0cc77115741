//! The `cphub` command line. Every subcommand reads the same layered configuration.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}
