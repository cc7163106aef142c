//! Logging and tracing setup shared by both binaries: `RUST_LOG`-filtered logs on
//! stderr, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is
//! set, spans exported over OTLP/gRPC with W3C trace-context propagation.

use std::collections::HashMap;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variables telemetry reads, passed in so tests stay hermetic.
#[derive(Debug, Clone, Default)]
pub struct TelemetryEnv {
    vars: HashMap<String, String>,
}

impl TelemetryEnv {
    /// Captures the `RUST_LOG` and `OTEL_*` variables of this process.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars()
                .filter(|(k, _)| k == "RUST_LOG" || k.starts_with("OTEL_"))
                .collect(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.vars.insert(key.to_string(), value.to_string());
        self
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The OTLP traces endpoint, if exporting is switched on.
    pub fn otlp_traces_endpoint(&self) -> Option<&str> {
        if self.get("OTEL_SDK_DISABLED") == Some("true")
            || self.get("OTEL_TRACES_EXPORTER") == Some("none")
        {
            return None;
        }
        self.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| self.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    }

    fn log_filter(&self) -> EnvFilter {
        EnvFilter::try_new(self.get("RUST_LOG").unwrap_or("info")).unwrap_or_else(|e| {
            eprintln!("warning: ignoring RUST_LOG: {e}");
            EnvFilter::new("info")
        })
    }
}

/// Keeps the exporter alive; dropping it flushes every pending span.
#[must_use = "dropping the guard flushes and stops span export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter now.
    pub fn shutdown(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.force_flush() {
                eprintln!("warning: flushing spans failed: {e}");
            }
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: stopping the span exporter failed: {e}");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sets up logging and, if configured, OTLP trace export for this process, reading the
/// process environment. Call once, early in `main`, inside the tokio runtime.
pub fn init_telemetry(service_name: &str) -> TelemetryGuard {
    init_telemetry_with(service_name, &TelemetryEnv::from_process())
}

/// As [`init_telemetry`], with the environment given explicitly.
pub fn init_telemetry_with(service_name: &str, env: &TelemetryEnv) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = env.otlp_traces_endpoint().and_then(|endpoint| {
        match tracer_provider(service_name, endpoint) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("warning: OTLP export to {endpoint} disabled: {e}");
                None
            }
        }
    });
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name.to_string())));
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry()
        .with(env.log_filter())
        .with(fmt_layer)
        .with(otel_layer);
    if registry.try_init().is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    TelemetryGuard { provider }
}

fn tracer_provider(service_name: &str, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| e.to_string())?;
    let resource = Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_unless_an_endpoint_is_set() {
        assert_eq!(TelemetryEnv::default().otlp_traces_endpoint(), None);
        let env =
            TelemetryEnv::default().with("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert_eq!(env.otlp_traces_endpoint(), Some("http://127.0.0.1:4317"));
        let env = env.with(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://127.0.0.1:9999",
        );
        assert_eq!(env.otlp_traces_endpoint(), Some("http://127.0.0.1:9999"));
        let env = env.with("OTEL_SDK_DISABLED", "true");
        assert_eq!(env.otlp_traces_endpoint(), None);
    }

    #[test]
    fn guard_without_exporter_is_inert() {
        let mut guard = init_telemetry_with("foldtrain-test", &TelemetryEnv::default());
        assert!(!guard.exporting());
        guard.shutdown();
    }
}
