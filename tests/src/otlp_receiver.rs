//! An in-process OTLP/gRPC trace receiver: the real collector protocol, served by tonic
//! on a loopback port, keeping every span it is sent for a test to inspect.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};

/// An attribute value, flattened from OTLP's `AnyValue`.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Other(String),
}

impl Attr {
    /// The value as a number, if it is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Attr::Int(i) => Some(*i as f64),
            Attr::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as text (numbers and booleans rendered).
    pub fn text(&self) -> String {
        match self {
            Attr::Str(s) | Attr::Other(s) => s.clone(),
            Attr::Int(i) => i.to_string(),
            Attr::Float(f) => f.to_string(),
            Attr::Bool(b) => b.to_string(),
        }
    }
}

/// One received span, with what a test asserts on. Ids are lowercase hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    pub attributes: BTreeMap<String, Attr>,
    pub events: Vec<String>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&Attr> {
        self.attributes.get(key)
    }

    /// The attribute rendered as text, or "" when absent.
    pub fn attr_text(&self, key: &str) -> String {
        self.attr(key).map(Attr::text).unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| attr(kv).text())
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), attr(kv)))
                        .collect(),
                    events: span.events.into_iter().map(|e| e.name).collect(),
                    status_code: span.status.map_or(0, |s| s.code),
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn attr(kv: &KeyValue) -> Attr {
    match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Attr::Str(s.clone()),
        Some(any_value::Value::IntValue(i)) => Attr::Int(*i),
        Some(any_value::Value::DoubleValue(f)) => Attr::Float(*f),
        Some(any_value::Value::BoolValue(b)) => Attr::Bool(*b),
        other => Attr::Other(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A running receiver; it stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    tls: bool,
    collector: Collector,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OtlpReceiver {
    /// Serves the OTLP trace service on 127.0.0.1 at a free port, on a runtime of its own
    /// so that a synchronous test can drive processes meanwhile.
    pub fn start() -> std::io::Result<Self> {
        Self::start_with(None)
    }

    /// As [`start`](Self::start), over TLS with `tls`'s certificate, and requiring
    /// client certificates when it names a CA, as a collector on a shared network would.
    pub fn start_tls(tls: &foldtrain_proto::runtime::tls::TlsFiles) -> std::io::Result<Self> {
        let config = tls
            .server()
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other("no certificate for the receiver"))?;
        Self::start_with(Some(config))
    }

    fn start_with(tls: Option<tonic::transport::ServerTlsConfig>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        let secure = tls.is_some();
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            builder = builder.tls_config(tls).map_err(std::io::Error::other)?;
        }
        runtime.spawn(
            builder
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok(Self {
            addr,
            tls: secure,
            collector,
            runtime: Some(runtime),
        })
    }

    /// The endpoint to put in `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collector.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the spans received, or `timeout` passes; returns the
    /// spans either way.
    pub fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The distinct service names among `spans`.
pub fn services(spans: &[ReceivedSpan]) -> BTreeSet<String> {
    spans.iter().map(|s| s.service.clone()).collect()
}
