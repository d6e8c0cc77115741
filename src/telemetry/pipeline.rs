//! The log subscriber and the optional OTLP trace pipeline (see the parent module).

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::{EnvFilter, layer::SubscriberExt, util::SubscriberInitExt};

use super::{ErrorChain, LogFormat, LogSettings, TelemetrySettings};

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot set up the OTLP trace exporter for {endpoint}")]
    Exporter {
        endpoint: String,
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// The trace pipeline while it runs; [`Traces::shutdown`] sends the spans still buffered.
pub struct Traces(Option<SdkTracerProvider>);

impl Traces {
    pub fn shutdown(self) {
        if let Some(provider) = self.0
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(error = %ErrorChain(&error), "traces not all exported at shutdown");
        }
    }
}

/// The exporter, batching spans on its own thread (hence the blocking HTTP client: that
/// thread is outside the tokio runtime), JSON-encoded to `{endpoint}/v1/traces`.
fn tracer_provider(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig};
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(url)
        .build()
        .map_err(|source| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            source,
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("cphub")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// [`init`], plus the OTLP trace export when `telemetry.otlp_endpoint` is set.
pub fn init_with_traces<S>(
    log: &LogSettings,
    telemetry: &TelemetrySettings,
    sink: fn() -> S,
) -> Result<Traces, TelemetryError>
where
    S: std::io::Write + IsTerminal + 'static,
{
    if telemetry.otlp_endpoint.is_empty() {
        init(log, sink);
        return Ok(Traces(None));
    }
    let provider = tracer_provider(&telemetry.otlp_endpoint)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("cphub"));
    install(log, sink, Some(layer));
    Ok(Traces(Some(provider)))
}

/// Installs the global subscriber writing to `sink`. `RUST_LOG` overrides `log.level`.
/// Returns quietly if a subscriber is already installed (tests start many apps).
pub fn init<S>(settings: &LogSettings, sink: fn() -> S)
where
    S: std::io::Write + IsTerminal + 'static,
{
    install::<S, NoTraces>(settings, sink, None);
}

/// No OpenTelemetry layer: what [`init`] installs.
type NoTraces = tracing_subscriber::layer::Identity;

/// The text format is coloured only when `sink` is a terminal: escape codes in a log
/// file or journal are noise to every reader and grep after it.
fn install<S, L>(settings: &LogSettings, sink: fn() -> S, traces: Option<L>)
where
    S: std::io::Write + IsTerminal + 'static,
    L: tracing_subscriber::Layer<
            tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>,
        > + Send
        + Sync
        + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    let _ = match settings.format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(sink))
            .try_init(),
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(sink().is_terminal())
                    .with_writer(sink),
            )
            .try_init(),
    };
}

/// The W3C trace context (`traceparent`, `tracestate`) of the current span, for an
/// outgoing request; empty when traces are off.
pub fn trace_headers() -> reqwest::header::HeaderMap {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut headers = HeaderInjector(reqwest::header::HeaderMap::new());
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut headers)
    });
    headers.0
}

struct HeaderInjector(reqwest::header::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        let name = reqwest::header::HeaderName::from_bytes(key.as_bytes());
        let value = reqwest::header::HeaderValue::from_str(&value);
        if let (Ok(name), Ok(value)) = (name, value) {
            self.0.insert(name, value);
        }
    }
}
