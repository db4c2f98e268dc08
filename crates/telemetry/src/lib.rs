//! Logs, traces and metrics shared by the phasegate binaries.
//!
//! [`init`] sets up `tracing` with text or JSON logs (`RUST_LOG` filters)
//! and, when an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`,
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or a flag), an OpenTelemetry
//! exporter over OTLP/HTTP with protobuf bodies. With no endpoint there is
//! no exporter and no cost beyond the log layer. The W3C trace-context
//! propagator is installed either way, so context flows across NATS.
//! [`metrics`] renders Prometheus text. This crate configures; it never
//! decides what to trace.

pub mod metrics;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the fields of the enclosing spans
    /// (trigger ids, trace ids).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = TelemetryError;
    fn from_str(s: &str) -> Result<Self, TelemetryError> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(TelemetryError::Config(format!(
                "log format {other:?}: expected text or json"
            ))),
        }
    }
}

/// What to set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// `service.name` unless `OTEL_SERVICE_NAME` says otherwise.
    pub service_name: &'static str,
    /// Text for people, JSON for log collectors.
    pub log_format: LogFormat,
    /// Filter used when `RUST_LOG` is unset.
    pub default_filter: String,
    /// OTLP/HTTP base endpoint (`http://collector:4318`); overrides the
    /// environment. `/v1/traces` is appended.
    pub otlp_endpoint: Option<String>,
}

/// What can go wrong setting up telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A setting is unusable.
    #[error("telemetry: {0}")]
    Config(String),
    /// The exporter could not be built.
    #[error("telemetry: cannot build the otlp exporter: {0}")]
    Exporter(String),
    /// A global subscriber was already installed.
    #[error("telemetry: {0}")]
    Init(String),
}

/// The installed telemetry; call [`Telemetry::shutdown`] before exit so the
/// last spans are sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter.
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown()
        {
            eprintln!("telemetry: flushing spans at shutdown failed: {e}");
        }
    }
}

fn env_endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

fn provider(opts: &Options) -> Result<Option<SdkTracerProvider>, TelemetryError> {
    if opts.otlp_endpoint.is_none() && env_endpoint().is_none() {
        return Ok(None);
    }
    match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok().as_deref() {
        None | Some("http/protobuf") => {}
        Some(other) => {
            return Err(TelemetryError::Config(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other}: only http/protobuf is supported"
            )));
        }
    }
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary);
    if let Some(base) = &opts.otlp_endpoint {
        builder = builder.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
    }
    let exporter = builder
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(opts.service_name);
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build(),
    ))
}

/// Installs logging and, when configured, trace export.
///
/// # Errors
///
/// When a setting is unusable or a subscriber is already installed.
pub fn init(opts: &Options) -> Result<Telemetry, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Logs follow RUST_LOG (or the default); exported spans are phasegate's
    // own at info and above, whatever the log level, so a quiet CLI still
    // starts the trace of the rollouts it makes. The exporter's own HTTP
    // client is never traced.
    let logs =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&opts.default_filter));
    let spans = EnvFilter::new("warn,phasegate=info");
    let provider = provider(opts)?;
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("phasegate"))
            .with_filter(spans)
    });
    let registry = tracing_subscriber::registry().with(otel);
    let result = match opts.log_format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_filter(logs),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr)
                    .with_filter(logs),
            )
            .try_init(),
    };
    result.map_err(|e| TelemetryError::Init(e.to_string()))?;
    Ok(Telemetry { provider })
}
