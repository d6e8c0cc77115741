//! `cphub token new`: a fresh operator token and the `[[api.tokens]]` table to paste. The
//! table holds the token's SHA-256 only; the token is printed once, for the caller.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Subcommand;
use rand::TryRng;

use super::Outcome;
use crate::config::{Scope, is_token_name, token_digest};

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token and the configuration entry (with its SHA-256) to paste.
    New {
        /// The caller's name, shown in the logs and the audit trail.
        #[arg(long)]
        name: String,
        /// A scope the token grants (repeatable): sessions:mint, sessions:read, usage:read,
        /// phones:read, phones:operate, rollouts:write, webhooks:read, webhooks:write,
        /// audit:read, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown scope {0:?}; the scopes are: {all}", all = all_scopes())]
    UnknownScope(String),
    #[error("--name: 1 to 64 printable characters")]
    BadName,
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

fn all_scopes() -> String {
    Scope::ALL.map(Scope::as_str).join(", ")
}

pub fn run(command: TokenCommand) -> Result<Outcome, TokenError> {
    let TokenCommand::New { name, scopes } = command;
    if !is_token_name(&name) {
        return Err(TokenError::BadName);
    }
    let scopes = (scopes.iter())
        .map(|s| Scope::parse(s).ok_or_else(|| TokenError::UnknownScope(s.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let token = new_token()?;
    println!("# The token, shown this once: give it to the caller, keep it out of files.");
    println!("{token}");
    println!("# Paste into the configuration (it holds only the token's SHA-256):");
    print!("{}", entry(&name, &token, &scopes));
    Ok(Outcome::AllSucceeded)
}

/// 32 bytes from the operating system's generator, URL-safe base64 (43 characters).
fn new_token() -> Result<String, TokenError> {
    let mut bytes = [0u8; 32];
    (rand::rngs::SysRng.try_fill_bytes(&mut bytes))
        .map_err(|e| TokenError::Random(e.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The `[[api.tokens]]` table; JSON strings are valid TOML basic strings.
fn entry(name: &str, token: &str, scopes: &[Scope]) -> String {
    let quote = |s: &str| serde_json::Value::from(s).to_string();
    let scopes: Vec<String> = scopes.iter().map(|s| quote(s.as_str())).collect();
    format!(
        "[[api.tokens]]\nname = {}\nsha256 = \"{}\"\nscopes = [{}]\n",
        quote(name),
        hex::encode(token_digest(token.as_bytes())),
        scopes.join(", ")
    )
}
