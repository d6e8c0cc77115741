//! Logging and tracing set-up and helpers. Secrets never reach this layer: they are
//! wrapped in `secrecy` types whose `Debug` prints `[REDACTED]`, and request bodies are
//! never logged.
//!
//! Traces are optional (`telemetry.otlp_endpoint`): the same spans the log shows (one per
//! request, the handlers', the CPH calls' and webhook deliveries') are exported over
//! OTLP/HTTP, and outgoing CPH calls and webhooks carry the W3C `traceparent` of the span
//! they run in. Off, no OpenTelemetry layer is installed and no header is added.

use std::error::Error;
use std::fmt;

use serde::Deserialize;

// The subscriber and the trace exporter are the server's: the build without the `server`
// feature (the fuzz targets') parses the settings and leaves out OpenTelemetry.
#[cfg(feature = "server")]
mod pipeline;
#[cfg(feature = "server")]
pub use pipeline::{TelemetryError, Traces, init, init_with_traces, trace_headers};

/// `[log]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[telemetry]` in the configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// Base URL of an OTLP/HTTP collector (`http://collector:4318`); empty: no traces.
    pub otlp_endpoint: String,
}

/// Displays an error with all its causes: `outer: inner: root`.
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}
