//! Layered, validated configuration (docs/configuration.md lists every key).
//!
//! Every value is parsed into its final type here, so a bad setting stops start-up with a
//! message naming its key instead of surfacing later as a runtime error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::ShellCommand;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

// Sections whose types live with the module they configure (lower layers than this one).
pub use crate::telemetry::{LogFormat, LogSettings, TelemetrySettings};
pub use crate::usage::UsageSettings;
pub use tokens::{ApiToken, Scope, is_token_name, token_digest};
pub use webhooks::{WebhookEndpoint, WebhookSecret, WebhookSettings};

mod tokens;
mod webhooks;

/// The defaults, built into the binary so that `cphub serve` works from any directory.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The figment error is the whole message (it names the key); not repeated as a source.
    #[error("invalid configuration: {0}")]
    Invalid(Box<figment::Error>),
    /// A value that is well-formed alone but not with the others (checked after parsing).
    #[error("invalid configuration: {key}: {reason}")]
    Inconsistent { key: &'static str, reason: String },
}

/// Keys whose values are secret wherever they sit: the CPH key pair and IAM password, the
/// webhook signing secrets, the API tokens.
const SECRET_KEYS: [&str; 5] = ["ak", "sk", "password", "secrets", "tokens"];

/// `error` with the value it found hidden where the key is secret. A value of the wrong
/// type is quoted in figment's message ("found string \"whsec_…\", expected a
/// sequence"), which goes to stderr and from there to the journal or the container log.
fn hide_secret_values(error: figment::Error) -> figment::Error {
    use figment::error::{Actual, Kind};
    let hidden = |found: &Actual| {
        let kind = match found {
            Actual::Str(_) | Actual::Char(_) | Actual::Bytes(_) => "string",
            Actual::Unsigned(_) | Actual::Signed(_) | Actual::Float(_) => "number",
            Actual::Bool(_) => "bool",
            other => return other.clone(),
        };
        Actual::Other(format!("a {kind} (not shown: the key is secret)"))
    };
    let errors = error.into_iter().map(|mut error| {
        let secret =
            (error.path.iter()).any(|key| SECRET_KEYS.iter().any(|s| key.eq_ignore_ascii_case(s)));
        match &mut error.kind {
            Kind::InvalidType(found, _)
            | Kind::InvalidValue(found, _)
            | Kind::Unsupported(found)
                if secret =>
            {
                *found = hidden(found);
            }
            _ => {}
        }
        error
    });
    // Chained back in the order read: the first error read is the one displayed.
    let errors: Vec<figment::Error> = errors.collect();
    (errors.into_iter().rev())
        .reduce(|earlier, error| earlier.chain(error))
        .expect("an error holds at least itself")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub callbacks: CallbackSettings,
    pub heartbeats: HeartbeatSettings,
    pub access: AccessSettings,
    pub fleet: FleetSettings,
    pub cph: CphSettings,
    pub watchdog: WatchdogSettings,
    pub api: ApiSettings,
    pub usage: UsageSettings,
    pub book: BookSettings,
    pub metrics: MetricsSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
    pub webhooks: WebhookSettings,
    pub console: ConsoleSettings,
}

/// `[book]`: how long the session book keeps closed sessions (docs/scaling.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BookSettings {
    /// 0: keep forever.
    pub retention_days: u64,
    #[serde(deserialize_with = "positive")]
    pub retention_interval_secs: u64,
    #[serde(deserialize_with = "positive")]
    pub retention_batch: u64,
}

impl BookSettings {
    pub fn retention_interval(&self) -> Duration {
        Duration::from_secs(self.retention_interval_secs)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    pub listen: Option<SocketAddr>,
    pub per_app_labels: bool,
}

/// `[console]`: the web console under `/console` (docs/console.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    pub enabled: bool,
    /// Serve the console only on this address instead of on `server.listen`.
    pub listen: Option<SocketAddr>,
    /// Mark the sign-in cookie `Secure` even when the request did not come over https (a TLS
    /// proxy that does not say `X-Forwarded-Proto: https`).
    pub secure_cookie: bool,
    /// How often the live parts (the fleet grid) ask for fresh figures.
    #[serde(deserialize_with = "positive")]
    pub refresh_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub workers: usize,
    pub shutdown_timeout_secs: u64,
    /// Proxies whose `X-Forwarded-For` is believed (`http::source`).
    pub trusted_proxies: Networks,
}

/// A list of CIDR networks (`10.0.0.0/8`, `2001:db8::/32`; a bare address is its own /32 or
/// /128). A bad entry fails the configuration, naming it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Networks(Vec<ipnet::IpNet>);

impl Networks {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, addr: std::net::IpAddr) -> bool {
        // An IPv4 client reached over an IPv6 socket shows as ::ffff:a.b.c.d.
        let addr = addr.to_canonical();
        self.0.iter().any(|net| net.contains(&addr))
    }
}

impl TryFrom<Vec<String>> for Networks {
    type Error = String;

    fn try_from(entries: Vec<String>) -> Result<Self, String> {
        let parse = |entry: &String| {
            let entry = entry.trim();
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("{entry:?} is not a CIDR network such as 10.0.0.0/8"))
        };
        entries
            .iter()
            .map(parse)
            .collect::<Result<_, _>>()
            .map(Networks)
    }
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Networks::try_from(Vec::<String>::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    pub max_connections: u32,
    #[serde(deserialize_with = "positive")]
    pub acquire_timeout_ms: u64,
    #[serde(deserialize_with = "positive")]
    pub write_timeout_ms: u64,
    #[serde(deserialize_with = "positive")]
    pub write_queue_timeout_ms: u64,
    pub sqlite_synchronous: SqliteSynchronous,
    /// How often SQLite's log is checkpointed off the writer; 0 leaves it to the writer
    /// (`store::sqlite::Checkpointer`).
    pub sqlite_checkpoint_interval_ms: u64,
    /// How often PostgreSQL's tables are looked at for growth the planner has not counted;
    /// 0: never (`store::postgres_analyze`).
    pub postgres_analyze_interval_ms: u64,
    pub migrate_on_start: bool,
    /// Group-commit writers on PostgreSQL ([`DatabaseSettings::writer_count`]).
    #[serde(deserialize_with = "writer_count")]
    pub writers: usize,
    /// How many jobs may wait for one writer before the next takes new sessions
    /// (`store::Writers`).
    #[serde(deserialize_with = "positive")]
    pub writer_room: usize,
}

impl DatabaseSettings {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    pub fn write_queue_timeout(&self) -> Duration {
        Duration::from_millis(self.write_queue_timeout_ms)
    }

    pub fn postgres_analyze_interval(&self) -> Duration {
        Duration::from_millis(self.postgres_analyze_interval_ms)
    }

    /// How many group-commit writers commit the durable writes (`store::Writers`). SQLite
    /// has one write connection: a second writer would only wait for it, and the point of
    /// the one writer is that every kind of write shares its round's fsync. PostgreSQL
    /// commits on its pool at once and shares WAL flushes between concurrent commits, so up
    /// to `database.writers` rounds are in flight together, the writers filled one after
    /// another (`database.writer_room`).
    pub fn writer_count(&self) -> usize {
        match self.url {
            DatabaseUrl::Sqlite(_) => 1,
            DatabaseUrl::Postgres(_) => self.writers,
        }
    }

    /// Whether mints share the callbacks' writers (`store::Minter`) or have one of their
    /// own. SQLite: they share its one writer, so a round's mints, sign checks and events
    /// share one fsync. PostgreSQL: a writer of their own. A round there locks its sessions
    /// before their phones, as every writer does, but a mint picks its phone before the
    /// session it creates exists; in a round with callbacks that order could cross another
    /// writer's. Alone, a mint batch takes lapsed sessions, then phones (the chosen ones
    /// with `SKIP LOCKED`, never waiting), so it keeps the one order.
    pub fn mints_share_the_writers(&self) -> bool {
        matches!(self.url, DatabaseUrl::Sqlite(_))
    }
}

/// Which backend a `database.url` selects; the scheme decides.
#[derive(Clone)]
pub enum DatabaseUrl {
    Sqlite(String),
    Postgres(SecretString),
}

// The PostgreSQL URL usually carries a password: never print it.
impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseUrl::Sqlite(url) => write!(f, "Sqlite({url:?})"),
            DatabaseUrl::Postgres(_) => f.write_str("Postgres([REDACTED])"),
        }
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, Self::Error> {
        if url.starts_with("sqlite:") {
            Ok(DatabaseUrl::Sqlite(url))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(url.into()))
        } else {
            Err("expected a sqlite://PATH or postgres://… URL".into())
        }
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        DatabaseUrl::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqliteSynchronous {
    Normal,
    Full,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackSettings {
    pub base_path: BasePath,
    pub public_url: Option<String>,
    #[serde(deserialize_with = "positive")]
    pub events_body_limit: usize,
    #[serde(deserialize_with = "positive")]
    pub heartbeat_body_limit: usize,
    #[serde(deserialize_with = "positive")]
    pub sign_check_body_limit: usize,
    pub event_batch_max: usize,
    pub run_time_tolerance_secs: u32,
    pub record_unknown_sessions: bool,
    /// Where callbacks may come from; empty: anywhere (`http::source`).
    pub allowed_networks: Networks,
}

/// `callbacks.base_path`: it ends up inside phone property URLs, so it obeys their character
/// rules (letters, digits and `_.,/:-`) and must start with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasePath(String);

impl BasePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for BasePath {
    type Error = String;

    fn try_from(path: String) -> Result<Self, Self::Error> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_.,/:-".contains(c);
        if !path.starts_with('/') || path.len() < 2 || path.ends_with('/') {
            return Err("must start with '/', not end with '/', and not be '/' alone".into());
        }
        if path.len() > 128 || !path.chars().all(allowed) {
            return Err("at most 128 characters, letters, digits and _.,/:- only".into());
        }
        Ok(BasePath(path))
    }
}

impl<'de> Deserialize<'de> for BasePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BasePath::try_from(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatSettings {
    #[serde(deserialize_with = "positive")]
    pub flush_interval_ms: u64,
    #[serde(deserialize_with = "positive")]
    pub flush_chunk: u64,
}

impl HeartbeatSettings {
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms.max(1))
    }

    pub fn flush_chunk(&self) -> usize {
        usize::try_from(self.flush_chunk).unwrap_or(usize::MAX)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSettings {
    /// 0 would mint tickets already expired (with no clock skew allowed).
    #[serde(deserialize_with = "positive")]
    pub ticket_ttl_secs: u64,
    /// 0 would end a first use's hold at once: the sweeper would free the phone while its
    /// player connects, and the next mint would put a second player on it.
    #[serde(deserialize_with = "positive")]
    pub enter_timeout_secs: u64,
    pub clock_skew_secs: u64,
    pub replay_grace_secs: u64,
    pub require_encrypted_data: bool,
    pub key_encoding: Encoding,
    pub iv_encoding: Encoding,
    pub data_encoding: Encoding,
    #[serde(deserialize_with = "positive")]
    pub sweep_interval_ms: u64,
    /// Mint only on a phone that has the requested app (needs `cph.endpoint`).
    pub match_app: bool,
    /// How long an `Idempotency-Key` of `POST /api/v1/sessions` is remembered.
    #[serde(deserialize_with = "positive")]
    pub idempotency_ttl_secs: u64,
    #[serde(deserialize_with = "positive")]
    pub queue_ttl_secs: u64,
    #[serde(deserialize_with = "positive")]
    pub queue_assign_interval_ms: u64,
    pub reconnect: Reconnect,
    pub encrypted_data: EncryptedDataMode,
    pub cipher: Cipher,
}

impl AccessSettings {
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_ttl_secs)
    }
    pub fn ticket_ttl(&self) -> Duration {
        Duration::from_secs(self.ticket_ttl_secs)
    }
    pub fn enter_timeout(&self) -> Duration {
        Duration::from_secs(self.enter_timeout_secs)
    }
    pub fn clock_skew(&self) -> Duration {
        Duration::from_secs(self.clock_skew_secs)
    }
    pub fn replay_grace(&self) -> Duration {
        Duration::from_secs(self.replay_grace_secs)
    }
    pub fn queue_ttl(&self) -> Duration {
        Duration::from_secs(self.queue_ttl_secs)
    }
    pub fn queue_assign_interval(&self) -> Duration {
        Duration::from_millis(self.queue_assign_interval_ms)
    }
}

/// Whether a ticket already used may be presented again (`access.reconnect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconnect {
    /// The same ticket and `auth_ts` admit the player again until the session ends: the
    /// client SDK reconnecting after a network drop makes the phone verify again.
    WhileLive,
    /// Single use: only an identical retry within `replay_grace_secs` is answered again.
    Never,
}

/// What the sign check does with `encrypted_data` (`access.encrypted_data`). Huawei does not
/// publish the SDK's cipher (6.1), so an operator can watch before refusing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncryptedDataMode {
    /// Refuse what does not decrypt (and, with `require_encrypted_data`, what is absent).
    Enforce,
    /// Decrypt and count the result, never refuse.
    Observe,
    /// Do not even decode it.
    Off,
}

/// The cipher of `encrypted_data` and the size of the minted key (`[access.cipher]`),
/// parsed from `algorithm` and `iv_bytes` so no other layout can exist past start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "CipherTable")]
pub enum Cipher {
    /// AES-GCM: the tag authenticates the data under the key.
    Gcm { key: KeySize, iv: GcmIv },
    /// AES-CBC with PKCS#7 padding and a 16-byte IV: a weaker check, which proves only that
    /// the padding decodes.
    Cbc { key: KeySize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySize {
    Aes128,
    Aes256,
}

/// The IV (nonce) lengths AES-GCM is accepted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcmIv {
    Twelve,
    Sixteen,
}

impl Cipher {
    pub fn key_bytes(self) -> usize {
        match self {
            Cipher::Gcm { key, .. } | Cipher::Cbc { key } => match key {
                KeySize::Aes128 => 16,
                KeySize::Aes256 => 32,
            },
        }
    }

    pub fn iv_bytes(self) -> usize {
        match self {
            Cipher::Gcm {
                iv: GcmIv::Twelve, ..
            } => 12,
            Cipher::Gcm { .. } | Cipher::Cbc { .. } => 16,
        }
    }
}

/// `[access.cipher]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CipherTable {
    algorithm: String,
    iv_bytes: u8,
}

impl TryFrom<CipherTable> for Cipher {
    type Error = String;

    fn try_from(table: CipherTable) -> Result<Self, Self::Error> {
        let (gcm, key) = match table.algorithm.as_str() {
            "aes-128-gcm" => (true, KeySize::Aes128),
            "aes-256-gcm" => (true, KeySize::Aes256),
            "aes-128-cbc" => (false, KeySize::Aes128),
            "aes-256-cbc" => (false, KeySize::Aes256),
            other => {
                return Err(format!(
                    "access.cipher.algorithm: expected aes-128-gcm, aes-256-gcm, aes-128-cbc \
                     or aes-256-cbc, not {other:?}"
                ));
            }
        };
        match (gcm, table.iv_bytes) {
            (true, 12) => Ok(Cipher::Gcm {
                key,
                iv: GcmIv::Twelve,
            }),
            (true, 16) => Ok(Cipher::Gcm {
                key,
                iv: GcmIv::Sixteen,
            }),
            (false, 16) => Ok(Cipher::Cbc { key }),
            (true, n) => Err(format!(
                "access.cipher.iv_bytes: AES-GCM takes a 12- or 16-byte IV, not {n}"
            )),
            (false, n) => Err(format!(
                "access.cipher.iv_bytes: AES-CBC takes a 16-byte IV, not {n}"
            )),
        }
    }
}

/// How a binary value (key, IV, ciphertext) is written as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    Hex,
    Base64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetSettings {
    #[serde(deserialize_with = "positive")]
    pub heartbeat_interval_secs: u64,
    pub miss_threshold: u32,
}

impl FleetSettings {
    /// Silence longer than this makes a phone stale.
    pub fn stale_after(&self) -> Duration {
        Duration::from_secs(self.heartbeat_interval_secs * u64::from(self.miss_threshold.max(1)))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CphSettings {
    pub endpoint: Option<String>,
    pub project_id: Option<String>,
    pub region: Option<String>,
    #[serde(deserialize_with = "positive")]
    pub connect_timeout_ms: u64,
    #[serde(deserialize_with = "positive")]
    pub request_timeout_ms: u64,
    pub max_attempts: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub breaker_failures: u32,
    pub breaker_open_secs: u64,
    #[serde(deserialize_with = "page_size")]
    pub page_limit: u32,
    #[serde(deserialize_with = "positive")]
    pub job_poll_interval_ms: u64,
    pub job_deadline_secs: u64,
    #[serde(deserialize_with = "positive")]
    pub sync_interval_secs: u64,
    /// At most this many phone details (4.3.2) read per sync, for their access information.
    pub detail_reads_per_sync: usize,
    pub auth: CphAuthSettings,
}

impl CphSettings {
    /// The management API is used only when an endpoint is configured.
    pub fn is_configured(&self) -> bool {
        self.endpoint.is_some()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CphAuthSettings {
    pub ak: Option<String>,
    pub sk: Option<SecretString>,
    pub iam_endpoint: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub domain: Option<String>,
    pub token_refresh_margin_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSettings {
    pub enabled: bool,
    pub dry_run: bool,
    #[serde(deserialize_with = "positive")]
    pub interval_ms: u64,
    pub startup_grace_secs: u64,
    pub grace_after_recovery_secs: u64,
    pub cooldown_secs: u64,
    pub hourly_cap: u32,
    /// 0 would leave a rollout's drained phones out of allocation for good, never updated
    /// (its budget of updates is this); `enabled = false` or `dry_run` stop the watchdog.
    #[serde(deserialize_with = "positive")]
    pub max_in_flight: usize,
    #[serde(deserialize_with = "plain_list_or_comma_separated")]
    pub exclude: Vec<String>,
    /// Share of a server's phones that, silent together, make one server incident (0, 1].
    pub server_incident_share: f64,
    /// Servers with fewer phones than this never make an incident (at least 1).
    pub server_incident_min_phones: usize,
    #[serde(deserialize_with = "positive")]
    pub encode_server_interval_secs: u64,
    pub encode_server_cooldown_secs: u64,
    pub encode_server_hourly_cap: u32,
    /// Commands run before a reset (chapter 4.7.5), checked against its limits on load.
    #[serde(deserialize_with = "shell_commands")]
    pub diagnostics: Vec<ShellCommand>,
    #[serde(deserialize_with = "positive")]
    pub diagnostics_timeout_ms: u64,
}

impl WatchdogSettings {
    /// The server-incident rule must be able to fire and must not fire on nothing: a share of
    /// 0 would hold every server for good, above 1 it could never apply.
    fn check_server_incident(&self) -> Result<(), ConfigError> {
        let share = self.server_incident_share;
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::Inconsistent {
                key: "watchdog.server_incident_share",
                reason: format!("{share} is not a share: give a number above 0 and at most 1"),
            });
        }
        if self.server_incident_min_phones == 0 {
            return Err(ConfigError::Inconsistent {
                key: "watchdog.server_incident_min_phones",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// Commands within 4.7.5's limits; one beyond them fails the load, naming it.
fn shell_commands<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ShellCommand>, D::Error> {
    (plain_list_or_comma_separated(d)?.iter())
        .map(|text| {
            ShellCommand::parse(text)
                .map_err(|e| serde::de::Error::custom(format!("diagnostic {text:?}: {e}")))
        })
        .collect()
}

fn plain_list_or_comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    use secrecy::ExposeSecret;
    Ok(list_or_comma_separated(d)?
        .iter()
        .map(|s| s.expose_secret().to_owned())
        .collect())
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    #[serde(deserialize_with = "tokens::api_tokens")]
    pub tokens: Vec<ApiToken>,
    #[serde(deserialize_with = "positive")]
    pub body_limit: usize,
    /// Requests per second each token may make (0: no limit); mints are not counted.
    pub rate_limit_per_second: u32,
    /// Requests a token may make at once before the rate applies.
    pub rate_limit_burst: u32,
    /// Wrong tokens a client address may present in a minute before every authentication
    /// from it is refused for the rest of the minute (0: not counted).
    pub auth_failures_per_minute: u32,
}

/// Environment variables carry lists as `a,b,c`; files carry real arrays. Accept both.
fn list_or_comma_separated<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    let items = match ListOrString::deserialize(d)? {
        ListOrString::List(items) => items,
        ListOrString::String(s) => s.split(',').map(str::to_owned).collect(),
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(SecretString::from)
        .collect())
}

/// Intervals and timeouts: 0 would be a loop that never rests or a deadline already past
/// (every write a 503), so it is refused at start, naming the key. Counts alike
/// (`database.writer_room`: 0 would leave no job room to wait).
fn positive<'de, D, N>(d: D) -> Result<N, D::Error>
where
    D: serde::Deserializer<'de>,
    N: Deserialize<'de> + Default + PartialEq,
{
    let n = N::deserialize(d)?;
    if n == N::default() {
        return Err(serde::de::Error::custom("must be at least 1"));
    }
    Ok(n)
}

/// `database.writers`: at least one, or nothing would commit; at most 64, as each writer
/// holds a pool connection while it commits and more than a pool's worth only queue for one.
fn writer_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    between(
        usize::deserialize(d)?,
        1..=64,
        "group-commit writers on PostgreSQL",
    )
}

/// `n` when `range` holds it; else an error naming the range and what it bounds.
fn between<N, E>(n: N, range: std::ops::RangeInclusive<N>, what: &str) -> Result<N, E>
where
    N: PartialOrd + std::fmt::Display,
    E: serde::de::Error,
{
    match range.contains(&n) {
        true => Ok(n),
        false => Err(E::custom(format!(
            "must be between {} and {} ({what}), not {n}",
            range.start(),
            range.end()
        ))),
    }
}

/// `cph.page_limit`: the reference's lists take 1 to 100 a page (4.3.1, 5.1.2, 5.1.3; 4.4.2
/// by Huawei's SDK). 0 would also never end a listing: every page would look full.
fn page_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    between(
        u32::deserialize(d)?,
        1..=100,
        "the control plane's page sizes",
    )
}

impl Settings {
    /// Whether a mint takes only a phone with the requested app: `access.match_app`, and a
    /// control plane to learn from which apps are where (without one, matching would find no
    /// phone at all). Every way of minting asks this.
    pub fn matches_apps(&self) -> bool {
        self.access.match_app && self.cph.is_configured()
    }

    /// The access settings as every minting path uses them: `match_app` is the effective
    /// rule ([`Settings::matches_apps`]), so a mint and a queue assignment pick alike.
    pub fn effective_access(&self) -> AccessSettings {
        AccessSettings {
            match_app: self.matches_apps(),
            ..self.access.clone()
        }
    }

    /// Loads the layers in the documented order. `config_dir` holds `$CPHUB_ENV.toml`.
    pub fn load(config_dir: &Path, extra_file: Option<&Path>) -> Result<Settings, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Ok(env) = std::env::var("CPHUB_ENV") {
            figment = figment.merge(Toml::file(config_dir.join(format!("{env}.toml"))));
        }
        if let Some(file) = extra_file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment
            .merge(
                Env::raw()
                    .only(&["DATABASE_URL"])
                    .map(|_| "database.url".into()),
            )
            .merge(Env::prefixed("CPHUB__").split("__"));
        Self::from_figment(figment)
    }

    /// The built-in defaults with `overrides` (TOML) on top: what tests and the simulator use.
    pub fn with_overrides(overrides: &str) -> Result<Settings, ConfigError> {
        let figment = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(overrides));
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Settings, ConfigError> {
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Invalid(Box::new(hide_secret_values(e))))?;
        settings.check_callback_urls()?;
        settings.watchdog.check_server_incident()?;
        settings.webhooks.check()?;
        Ok(settings)
    }

    /// The three callback URLs built from `callbacks.public_url` and `base_path` must be
    /// valid phone property URLs: otherwise `configure-callbacks` and the watchdog's resets
    /// would fail much later, far from the mistake.
    fn check_callback_urls(&self) -> Result<(), ConfigError> {
        let Some(public_url) = &self.callbacks.public_url else {
            return Ok(());
        };
        // "/sign-check" is the longest of the three routes.
        let longest = format!(
            "{}{}/sign-check",
            public_url.trim_end_matches('/'),
            self.callbacks.base_path.as_str()
        );
        match property_url_problem(&longest) {
            None => Ok(()),
            Some(reason) => Err(ConfigError::Inconsistent {
                key: "callbacks.public_url",
                reason: format!("{longest:?} is not a valid phone property URL: {reason}"),
            }),
        }
    }
}

/// Phone property URLs (appendix A.1): `http`/`https`, at most 256 characters, letters,
/// digits and `_.,/:-` only. None when `url` obeys; else what it breaks. The appendix lists
/// `.` for `heartbeat_url` only and `_,/:-` for `sign_check_url` and `event_notify_url`;
/// read literally no host name with a dot could be set there, which no deployment could
/// obey, so the three are held to the heartbeat URL's set.
pub fn property_url_problem(url: &str) -> Option<&'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.,/:-".contains(c);
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        Some("must start with http:// or https://")
    } else if url.len() > MAX_PROPERTY_URL_LEN {
        Some("longer than 256 characters")
    } else if !url.chars().all(allowed) {
        Some("only letters, digits and _.,/:- are allowed (no ?, =, spaces)")
    } else {
        None
    }
}

const MAX_PROPERTY_URL_LEN: usize = 256;

/// Default directory for `$CPHUB_ENV.toml`: `./config`, or `CPHUB_CONFIG_DIR`.
pub fn default_config_dir() -> PathBuf {
    std::env::var_os("CPHUB_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each of `values` for `key` of `table` fails the load, naming the key and `range`.
    fn assert_out_of_range(table: &str, key: &str, values: [&str; 2], range: &str) {
        for bad in values {
            let toml = format!("{table}\n{key} = {bad}");
            let error = Settings::with_overrides(&toml).unwrap_err().to_string();
            assert!(error.contains(key), "{bad}: {error}");
            assert!(error.contains(range), "{bad}: {error}");
        }
    }

    /// `database.writers` outside 1..=64 fails the start naming the key and the range; on
    /// SQLite the setting is ignored (one writer), on PostgreSQL it is the count.
    #[test]
    fn database_writers_is_checked_at_load_and_counts_on_postgres_only() {
        assert_out_of_range("[database]", "writers", ["0", "65"], "between 1 and 64");
        let count = |toml: &str| {
            let settings = Settings::with_overrides(toml).unwrap();
            settings.database.writer_count()
        };
        assert_eq!(
            count("[database]\nwriters = 8"),
            1,
            "SQLite (the default url)"
        );
        let postgres = "[database]\nurl = \"postgres://u@h/db\"\n";
        assert_eq!(count(postgres), 4, "the default");
        assert_eq!(count(&format!("{postgres}writers = 64")), 64);
    }

    /// `cph.page_limit` outside the control plane's 1..=100 fails the start (0 made every
    /// page look full, so a listing never ended), naming the key.
    #[test]
    fn cph_page_limit_is_a_page_the_control_plane_serves() {
        assert_out_of_range("[cph]", "page_limit", ["0", "101"], "between 1 and 100");
        let limit = |toml: &str| Settings::with_overrides(toml).unwrap().cph.page_limit;
        assert_eq!(limit(""), 100, "the default");
        assert_eq!(limit("[cph]\npage_limit = 1"), 1);
    }

    /// `database.writer_room` 0 would let no job wait for any writer: refused at load,
    /// naming the key.
    #[test]
    fn database_writer_room_must_leave_room_for_one() {
        let error = Settings::with_overrides("[database]\nwriter_room = 0").unwrap_err();
        let error = error.to_string();
        assert!(error.contains("writer_room"), "{error}");
        assert!(error.contains("at least 1"), "{error}");
        let room = |toml: &str| Settings::with_overrides(toml).unwrap().database.writer_room;
        assert_eq!(room(""), 64, "the default");
        assert_eq!(room("[database]\nwriter_room = 1"), 1);
    }

    /// 4.7.5's limits hold at load: a diagnostic the API would refuse fails the start,
    /// naming it; those within them load in order.
    /// Issue #20: a bad CIDR fails the start, and the message names the key and the entry.
    #[test]
    fn a_bad_network_is_a_configuration_error_naming_it() {
        for (toml, key) in [
            (
                "[callbacks]\nallowed_networks = [\"10.0.0.0/8\", \"10.0.0.0/99\"]",
                "allowed_networks",
            ),
            (
                "[server]\ntrusted_proxies = [\"proxy.local\"]",
                "trusted_proxies",
            ),
        ] {
            let error = Settings::with_overrides(toml).unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
            assert!(error.contains("is not a CIDR network"), "{error}");
        }
        let s = Settings::with_overrides("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]");
        assert!(
            s.unwrap()
                .server
                .trusted_proxies
                .contains("::1".parse().unwrap())
        );
    }

    #[test]
    fn diagnostics_beyond_the_limits_of_4_7_5_fail_the_load() {
        let error = Settings::with_overrides("[watchdog]\ndiagnostics = [\"ls\", \"ls; rm\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ls; rm") && error.contains("4.7.5"),
            "{error}"
        );
        let s =
            Settings::with_overrides("[watchdog]\ndiagnostics = [\"ls -l /data\", \"top -n 1\"]\n")
                .unwrap();
        let loaded: Vec<&str> = s.watchdog.diagnostics.iter().map(|c| c.as_str()).collect();
        assert_eq!(loaded, ["ls -l /data", "top -n 1"]);
    }

    #[test]
    fn defaults_parse_and_match_the_interface_contract() {
        let s = Settings::with_overrides("").unwrap();
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:8080");
        assert!(matches!(&s.database.url, DatabaseUrl::Sqlite(u) if u == "sqlite://cphub.db"));
        assert_eq!(s.callbacks.base_path.as_str(), "/cph");
        assert!(s.api.tokens.is_empty());
    }

    #[test]
    fn tokens_accept_a_comma_separated_string() {
        let s = Settings::with_overrides("[api]\ntokens = \"a, b,,c\"").unwrap();
        let digests: Vec<_> = s.api.tokens.iter().map(|t| t.sha256).collect();
        let expected: Vec<_> = ["a", "b", "c"].map(|t| token_digest(t.as_bytes())).into();
        assert_eq!(digests, expected);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = \"nonsense\"", "server.listen"),
            ("[database]\nurl = \"mysql://x\"", "database.url"),
            ("[callbacks]\nbase_path = \"/a?b=c\"", "callbacks.base_path"),
            ("[callbacks]\nbase_path = \"cph\"", "callbacks.base_path"),
            ("[log]\nformat = \"xml\"", "log.format"),
            (
                "[callbacks]\npublic_url = \"ftp://h\"",
                "callbacks.public_url",
            ),
            (
                "[callbacks]\npublic_url = \"https://h/?token=1\"",
                "callbacks.public_url",
            ),
            (
                "[watchdog]\nserver_incident_share = 0.0",
                "watchdog.server_incident_share",
            ),
            (
                "[watchdog]\nserver_incident_share = 1.5",
                "watchdog.server_incident_share",
            ),
            (
                "[watchdog]\nserver_incident_min_phones = 0",
                "watchdog.server_incident_min_phones",
            ),
            ("[access]\nreconnect = \"always\"", "access.reconnect"),
            (
                "[access]\nencrypted_data = \"warn\"",
                "access.encrypted_data",
            ),
            (
                "[access.cipher]\nalgorithm = \"aes-192-gcm\"",
                "access.cipher.algorithm",
            ),
            ("[access.cipher]\niv_bytes = 8", "access.cipher.iv_bytes"),
            (
                "[access.cipher]\nalgorithm = \"aes-128-cbc\"\niv_bytes = 12",
                "access.cipher.iv_bytes",
            ),
        ];
        for (toml, key) in cases {
            let err = Settings::with_overrides(toml).unwrap_err().to_string();
            assert!(
                err.contains(key),
                "error for {toml:?} should name {key}: {err}"
            );
        }
    }

    #[test]
    fn the_cipher_parses_into_its_type_with_the_sizes_it_implies() {
        let cipher = |toml: &str| Settings::with_overrides(toml).unwrap().access.cipher;
        let default = cipher("");
        assert_eq!(
            default,
            Cipher::Gcm {
                key: KeySize::Aes256,
                iv: GcmIv::Twelve
            }
        );
        assert_eq!((default.key_bytes(), default.iv_bytes()), (32, 12));
        let gcm = cipher("[access.cipher]\nalgorithm = \"aes-128-gcm\"\niv_bytes = 16");
        assert_eq!((gcm.key_bytes(), gcm.iv_bytes()), (16, 16));
        let cbc = cipher("[access.cipher]\nalgorithm = \"aes-256-cbc\"\niv_bytes = 16");
        assert_eq!(
            cbc,
            Cipher::Cbc {
                key: KeySize::Aes256
            }
        );
        assert_eq!((cbc.key_bytes(), cbc.iv_bytes()), (32, 16));
    }

    #[test]
    fn postgres_url_is_redacted_in_debug() {
        let url = DatabaseUrl::try_from("postgres://u:hunter2@h/db".to_string()).unwrap();
        assert!(!format!("{url:?}").contains("hunter2"));
    }
}
