//! Logging and tracing setup shared by both binaries: `RUST_LOG`-filtered logs on
//! stderr, and, when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is
//! set, spans exported over OTLP/gRPC with W3C trace-context propagation.

use std::collections::HashMap;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::LevelFilter;
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

    /// The `service.name` spans carry: `OTEL_SERVICE_NAME`, else a `service.name` in
    /// `OTEL_RESOURCE_ATTRIBUTES`, else the binary's own name. The SDK's resource builder
    /// reads both variables too, but an explicit service name would override them.
    pub fn service_name(&self, default: &str) -> String {
        if let Some(name) = self.get("OTEL_SERVICE_NAME") {
            return name.to_string();
        }
        self.get("OTEL_RESOURCE_ATTRIBUTES")
            .into_iter()
            .flat_map(|attrs| attrs.split(','))
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| key.trim() == "service.name")
            .map(|(_, value)| value.trim().to_string())
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| default.to_string())
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

    /// TLS for the OTLP exporter from the standard variables: the CA
    /// (`OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`) and, for collectors that require one,
    /// a client certificate and key (`..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY`).
    pub fn otlp_tls(&self) -> crate::runtime::tls::TlsFiles {
        let file = |name: &str| {
            self.get(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .or_else(|| self.get(&format!("OTEL_EXPORTER_OTLP_{name}")))
                .map(std::path::PathBuf::from)
        };
        crate::runtime::tls::TlsFiles {
            cert: file("CLIENT_CERTIFICATE"),
            key: file("CLIENT_KEY"),
            ca: file("CERTIFICATE"),
        }
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
    /// Drives the exporter's gRPC connection. It is the guard's own so that spans still
    /// flush after the binary's runtime has stopped, and in commands that have none.
    runtime: Option<tokio::runtime::Runtime>,
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
        if let Some(runtime) = self.runtime.take() {
            // Everything is flushed; the background variant never blocks, so the guard may
            // also be dropped on an async thread.
            runtime.shutdown_background();
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Sets up logging and, if configured, OTLP trace export for this process, reading the
/// process environment. Call once, early in `main`; keep the guard until the process
/// ends, so that dropping it (on exit, SIGTERM included) flushes the spans.
pub fn init_telemetry(service_name: &str) -> TelemetryGuard {
    init_telemetry_with(service_name, &TelemetryEnv::from_process())
}

/// As [`init_telemetry`], with the environment given explicitly.
pub fn init_telemetry_with(service_name: &str, env: &TelemetryEnv) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let service_name = env.service_name(service_name);
    let exporter = env.otlp_traces_endpoint().and_then(|endpoint| {
        match tracer_provider(&service_name, endpoint, &env.otlp_tls()) {
            Ok(exporter) => Some(exporter),
            Err(e) => {
                eprintln!("warning: OTLP export to {endpoint} disabled: {e}");
                None
            }
        }
    });
    let (provider, runtime) = exporter.unzip();
    // RUST_LOG filters the logs only: a client command that logs warnings alone, or an
    // operator who quiets the log, still exports every span of the trace. Otherwise the
    // spans that carry the trace context across processes would never exist.
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer(service_name.clone()))
            .with_filter(LevelFilter::INFO)
    });
    let fmt_layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(env.log_filter());
    let registry = tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer);
    if registry.try_init().is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
    if let Some(p) = &provider {
        opentelemetry::global::set_tracer_provider(p.clone());
    }
    TelemetryGuard { provider, runtime }
}

/// Marks `span` failed: its exported status becomes ERROR, described by `message`.
/// Backends show such spans (and so the failing fold attempt) in red.
pub fn mark_span_failed(span: &tracing::Span, message: impl std::fmt::Display) {
    span.set_status(opentelemetry::trace::Status::error(message.to_string()));
}

/// The batch span processor exports from a thread of its own (its delay and batch size
/// come from the `OTEL_BSP_*` variables); the gRPC channel it uses lives on `runtime`.
fn tracer_provider(
    service_name: &str,
    endpoint: &str,
    tls: &crate::runtime::tls::TlsFiles,
) -> Result<(SdkTracerProvider, tokio::runtime::Runtime), String> {
    let tls = tls
        .client()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_* TLS files: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| format!("starting the exporter's runtime: {e}"))?;
    let exporter = {
        let _entered = runtime.enter();
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint);
        if let Some(tls) = tls {
            builder = builder.with_tls_config(tls);
        }
        builder.build().map_err(|e| e.to_string())?
    };
    let resource = Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok((provider, runtime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_is_off_unless_an_endpoint_is_set() {
        assert_eq!(TelemetryEnv::default().otlp_traces_endpoint(), None);
        assert!(TelemetryEnv::default().otlp_tls().is_empty());
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
    fn otel_service_name_wins_over_the_default() {
        let env = TelemetryEnv::default();
        assert_eq!(env.service_name("foldtrain-worker"), "foldtrain-worker");
        let env = env.with(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=lab, service.name = gpu-pool ,host.name=a",
        );
        assert_eq!(env.service_name("foldtrain-worker"), "gpu-pool");
        let env = env.with("OTEL_SERVICE_NAME", "trainer-7");
        assert_eq!(env.service_name("foldtrain-worker"), "trainer-7");
    }

    #[test]
    fn guard_without_exporter_is_inert() {
        let mut guard = init_telemetry_with("foldtrain-test", &TelemetryEnv::default());
        assert!(!guard.exporting());
        guard.shutdown();
    }
}
