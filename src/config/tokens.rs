//! `api.tokens`: who may call the operator API, and what each caller may do.
//!
//! An entry names its caller, gives the token's SHA-256 (`sha256`, so neither the file nor
//! the environment holds a usable secret) or the environment variable holding the token
//! (`token_env`), and lists its [`Scope`]s. The older form, a plain list of tokens (or the
//! comma-separated environment string), still loads: each becomes an `admin` token named
//! `legacy-N`, and start-up logs a deprecation warning.

use std::fmt;

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

/// What a token may do. Each operator route requires exactly one; `admin` grants all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Scope {
    #[serde(rename = "sessions:mint")]
    SessionsMint,
    #[serde(rename = "sessions:read")]
    SessionsRead,
    #[serde(rename = "usage:read")]
    UsageRead,
    #[serde(rename = "phones:read")]
    PhonesRead,
    #[serde(rename = "phones:operate")]
    PhonesOperate,
    #[serde(rename = "rollouts:write")]
    RolloutsWrite,
    #[serde(rename = "webhooks:read")]
    WebhooksRead,
    #[serde(rename = "webhooks:write")]
    WebhooksWrite,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 10] = [
        Scope::SessionsMint,
        Scope::SessionsRead,
        Scope::UsageRead,
        Scope::PhonesRead,
        Scope::PhonesOperate,
        Scope::RolloutsWrite,
        Scope::WebhooksRead,
        Scope::WebhooksWrite,
        Scope::AuditRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::SessionsMint => "sessions:mint",
            Scope::SessionsRead => "sessions:read",
            Scope::UsageRead => "usage:read",
            Scope::PhonesRead => "phones:read",
            Scope::PhonesOperate => "phones:operate",
            Scope::RolloutsWrite => "rollouts:write",
            Scope::WebhooksRead => "webhooks:read",
            Scope::WebhooksWrite => "webhooks:write",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One accepted token, resolved: the token itself is never kept, only its SHA-256.
#[derive(Clone)]
pub struct ApiToken {
    pub name: String,
    pub sha256: [u8; 32],
    pub scopes: Vec<Scope>,
    /// From the deprecated plain list.
    pub legacy: bool,
}

impl ApiToken {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes
            .iter()
            .any(|s| *s == scope || *s == Scope::Admin)
    }
}

// The digest of a weak environment token could be brute-forced: kept out of logs too.
impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("name", &self.name)
            .field("sha256", &"[redacted]")
            .field("scopes", &self.scopes)
            .field("legacy", &self.legacy)
            .finish()
    }
}

/// A name fit for the logs and the audit trail: 1 to 64 characters, none a control one.
pub fn is_token_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && !name.chars().any(char::is_control)
}

/// The SHA-256 of a token as presented, what [`ApiToken::sha256`] is compared with.
pub fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: Option<String>,
    token_env: Option<String>,
    scopes: Vec<Scope>,
}

// Items are read as values first: an untagged enum of string-or-entry would hide the
// entry's own error (an unknown scope, a missing name) behind "did not match any variant".
#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrString {
    List(Vec<figment::value::Value>),
    String(String),
}

enum Item {
    Plain(String),
    Entry(figment::value::Value),
}

/// `api.tokens` in any of its forms, resolved and checked: a bad entry stops start-up
/// naming it.
pub(super) fn api_tokens<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ApiToken>, D::Error> {
    let items: Vec<Item> = match ListOrString::deserialize(d)? {
        ListOrString::List(values) => values.into_iter().map(Item::from).collect(),
        ListOrString::String(s) => s.split(',').map(|t| Item::Plain(t.into())).collect(),
    };
    let mut tokens = Vec::new();
    for item in items {
        let token = match item {
            Item::Plain(text) if text.trim().is_empty() => continue,
            Item::Plain(text) => legacy(tokens.len() + 1, text.trim()),
            // Neither a token nor a table: said without the value, which may be a token
            // written as a number (start-up errors reach the journal).
            Item::Entry(value) if value.as_dict().is_none() => {
                return Err(serde::de::Error::custom(
                    "an entry is neither a token (a string) nor a table",
                ));
            }
            Item::Entry(value) => {
                let entry: TokenEntry = value.deserialize().map_err(serde::de::Error::custom)?;
                resolve(entry).map_err(serde::de::Error::custom)?
            }
        };
        if tokens.iter().any(|t: &ApiToken| t.name == token.name) {
            let name = &token.name;
            return Err(serde::de::Error::custom(format!(
                "two tokens named {name:?}"
            )));
        }
        tokens.push(token);
    }
    Ok(tokens)
}

impl From<figment::value::Value> for Item {
    fn from(value: figment::value::Value) -> Self {
        match value.as_str() {
            Some(text) => Item::Plain(text.to_owned()),
            None => Item::Entry(value),
        }
    }
}

fn legacy(position: usize, token: &str) -> ApiToken {
    ApiToken {
        name: format!("legacy-{position}"),
        sha256: token_digest(token.as_bytes()),
        scopes: vec![Scope::Admin],
        legacy: true,
    }
}

fn resolve(entry: TokenEntry) -> Result<ApiToken, String> {
    let name = entry.name;
    if !is_token_name(&name) {
        return Err(format!("token name {name:?}: 1 to 64 printable characters"));
    }
    if entry.scopes.is_empty() {
        return Err(format!("token {name:?}: scopes is empty"));
    }
    let sha256 = match (entry.sha256, entry.token_env) {
        (Some(hex), None) => parse_digest(&hex)
            .ok_or_else(|| format!("token {name:?}: sha256 must be 64 hexadecimal digits"))?,
        (None, Some(var)) => env_token_digest(&name, &var)?,
        _ => {
            return Err(format!(
                "token {name:?}: give exactly one of sha256 and token_env"
            ));
        }
    };
    Ok(ApiToken {
        name,
        sha256,
        scopes: entry.scopes,
        legacy: false,
    })
}

/// The digest of the token in `var`. A secret mounted from a file usually ends in a newline
/// no `Authorization` header can carry: the value is trimmed, and one with whitespace or a
/// control character left inside (which no client could send either) is refused, naming
/// the variable, rather than loaded as a token that can never match.
fn env_token_digest(name: &str, var: &str) -> Result<[u8; 32], String> {
    let value = std::env::var(var).unwrap_or_default();
    let token = value.trim();
    if token.is_empty() {
        return Err(format!(
            "token {name:?}: environment variable {var} is not set"
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "token {name:?}: environment variable {var} holds whitespace or a control character \
             inside the token"
        ));
    }
    Ok(token_digest(token.as_bytes()))
}

fn parse_digest(text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(text.trim()).ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Api {
        #[serde(deserialize_with = "api_tokens")]
        tokens: Vec<ApiToken>,
    }

    fn parse(toml_text: &str) -> Result<Vec<ApiToken>, String> {
        use figment::providers::Format;
        let figment = figment::Figment::from(figment::providers::Toml::string(toml_text));
        figment
            .extract::<Api>()
            .map(|api| api.tokens)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_scope_round_trips_its_name() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
    }

    #[test]
    fn an_unknown_scope_is_named() {
        let error =
            parse("[[tokens]]\nname = \"x\"\nsha256 = \"00\"\nscopes = [\"phones:destroy\"]")
                .unwrap_err();
        assert!(error.contains("phones:destroy"), "{error}");
    }

    #[test]
    fn a_sha256_entry_keeps_its_digest_and_scopes() {
        let digest = hex::encode(token_digest(b"secret"));
        let text = format!(
            "[[tokens]]\nname = \"billing\"\nsha256 = \"{digest}\"\nscopes = [\"usage:read\"]"
        );
        let tokens = parse(&text).unwrap();
        assert_eq!(tokens[0].name, "billing");
        assert_eq!(tokens[0].sha256, token_digest(b"secret"));
        assert!(tokens[0].allows(Scope::UsageRead));
        assert!(!tokens[0].allows(Scope::PhonesOperate));
        assert!(!format!("{tokens:?}").contains(&digest));
    }

    #[test]
    fn the_plain_list_becomes_admin_tokens() {
        let tokens = parse("tokens = [\"a\", \"b\"]").unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(
            tokens
                .iter()
                .all(|t| t.legacy && t.allows(Scope::PhonesOperate))
        );
        assert_eq!(tokens[1].name, "legacy-2");
    }

    #[test]
    fn refuses_entries_that_cannot_authenticate() {
        let both =
            "[[tokens]]\nname = \"x\"\nsha256 = \"00\"\ntoken_env = \"A\"\nscopes = [\"admin\"]";
        assert!(parse(both).unwrap_err().contains("exactly one"));
        let short = "[[tokens]]\nname = \"x\"\nsha256 = \"00\"\nscopes = [\"admin\"]";
        assert!(parse(short).unwrap_err().contains("64 hexadecimal"));
        let unset = "[[tokens]]\nname = \"x\"\ntoken_env = \"CPHUB_TEST_UNSET_TOKEN_VAR\"\nscopes = [\"admin\"]";
        assert!(
            parse(unset)
                .unwrap_err()
                .contains("CPHUB_TEST_UNSET_TOKEN_VAR")
        );
        let none = "[[tokens]]\nname = \"x\"\nsha256 = \"00\"\nscopes = []";
        assert!(parse(none).unwrap_err().contains("scopes is empty"));
    }
}
