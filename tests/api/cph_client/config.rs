//! Configuration errors: `CphClient::new` refuses an incomplete `[cph]` section, naming
//! what is missing.

use cphub::config::Settings;
use cphub::cph::{CphClient, CphError};

use super::{AKSK_AUTH, PROJECT};

/// The message of the `CphError::Config` that `CphClient::new` must return for `toml`.
fn config_error(toml: &str) -> String {
    let settings = Settings::with_overrides(toml).expect("valid settings");
    match CphClient::new(&settings.cph) {
        Err(CphError::Config(message)) => message,
        Err(other) => panic!("expected CphError::Config, got {other:?}"),
        Ok(_) => panic!("expected CphError::Config, the client was built"),
    }
}

#[test]
fn a_missing_endpoint_is_a_config_error() {
    let message = config_error(&format!("[cph]\nproject_id = \"{PROJECT}\"\n{AKSK_AUTH}"));

    assert!(message.contains("endpoint"), "{message}");
}

#[test]
fn an_invalid_endpoint_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"not a url\"\nproject_id = \"{PROJECT}\"\n{AKSK_AUTH}"
    ));

    assert!(message.contains("endpoint"), "{message}");
}

#[test]
fn a_missing_project_id_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\n{AKSK_AUTH}"
    ));

    assert!(message.contains("project_id"), "{message}");
}

#[test]
fn an_empty_project_id_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"\"\n{AKSK_AUTH}"
    ));

    assert!(message.contains("project_id"), "{message}");
}

#[test]
fn an_ak_without_sk_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"{PROJECT}\"\n\
         [cph.auth]\nak = \"TESTAK\"\n"
    ));

    assert!(message.contains("sk"), "{message}");
}

#[test]
fn neither_aksk_nor_iam_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"{PROJECT}\"\n"
    ));

    assert!(
        message.contains("ak") && message.contains("iam"),
        "{message}"
    );
}

#[test]
fn an_incomplete_iam_login_is_a_config_error() {
    let message = config_error(&format!(
        "[cph]\nendpoint = \"http://127.0.0.1:9\"\nproject_id = \"{PROJECT}\"\n\
         [cph.auth]\niam_endpoint = \"http://127.0.0.1:9\"\nusername = \"u\"\ndomain = \"d\"\n"
    ));

    assert!(message.contains("password"), "{message}");
}
