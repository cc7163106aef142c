//! The `/metrics` endpoint both binaries serve (`--metrics-listen`): OpenMetrics text,
//! which Prometheus scrapes natively, served with axum until the binary stops.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The flag both binaries take; errors name it so the user knows what to change.
pub const FLAG: &str = "--metrics-listen";

/// What `GET /metrics` answers with: the OpenMetrics text that `prometheus-client`
/// encodes (Prometheus has accepted it natively since 2.5).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One scrape's text, or why it could not be produced.
pub type Rendering = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

/// Produces the exposition text, fresh for each scrape (gauges that mirror state, such
/// as jobs by state, are computed then).
pub trait MetricsSource: Send + Sync + 'static {
    fn render(&self) -> Rendering;
}

impl<F> MetricsSource for F
where
    F: Fn() -> Rendering + Send + Sync + 'static,
{
    fn render(&self) -> Rendering {
        self()
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsHttpError {
    #[error(
        "{FLAG} {addr}: the address is already in use; pick another port, or port 0 for any free one"
    )]
    AddressInUse {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{FLAG} {addr}: cannot listen there: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running `/metrics` endpoint.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl MetricsServer {
    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/metrics`, what a Prometheus scrape config points at.
    pub fn url(&self) -> String {
        metrics_url(self.addr)
    }

    /// Waits until the endpoint has stopped (after its shutdown resolved).
    pub async fn wait(self) {
        if let Err(e) = self.task.await {
            warn!(error = %e, "the metrics endpoint task failed");
        }
    }
}

/// `http://<addr>/metrics`.
pub fn metrics_url(addr: SocketAddr) -> String {
    format!("http://{addr}/metrics")
}

/// Binds `addr` and serves `source` at `/metrics` until `shutdown` resolves; open
/// connections finish their current request and close.
pub async fn serve_metrics(
    addr: SocketAddr,
    source: Arc<dyn MetricsSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<MetricsServer, MetricsHttpError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| bind_error(addr, source))?;
    let bound = listener
        .local_addr()
        .map_err(|source| bind_error(addr, source))?;
    info!(addr = %bound, "metrics on {}", metrics_url(bound));
    let server = axum::serve(listener, metrics_router(source)).with_graceful_shutdown(shutdown);
    let task = tokio::spawn(async move {
        if let Err(e) = server.await {
            warn!(error = %e, "the metrics endpoint stopped with an error");
        }
    });
    Ok(MetricsServer { addr: bound, task })
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> MetricsHttpError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        MetricsHttpError::AddressInUse { addr, source }
    } else {
        MetricsHttpError::Bind { addr, source }
    }
}

/// `GET /metrics` (and `HEAD`, which axum answers from the GET handler without a body)
/// renders; other methods there get 405 with `Allow`, any other path 404.
fn metrics_router(source: Arc<dyn MetricsSource>) -> Router {
    Router::new()
        .route("/metrics", get(scrape).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(source)
}

async fn scrape(State(source): State<Arc<dyn MetricsSource>>) -> Response {
    match source.render().await {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(message) => {
            warn!(error = %message, "rendering metrics failed");
            let text = format!("rendering metrics failed: {message}\n");
            (StatusCode::INTERNAL_SERVER_ERROR, text).into_response()
        }
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (
        StatusCode::NOT_FOUND,
        "not found; metrics are at /metrics\n",
    )
}

async fn method_not_allowed() -> (StatusCode, &'static str) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        "only GET is allowed on /metrics\n",
    )
}

/// Encodes a `prometheus-client` registry as one complete OpenMetrics exposition.
pub fn encode_registry(registry: &prometheus_client::registry::Registry) -> Result<String, String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .map_err(|e| format!("encoding the metrics registry: {e}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::runtime::test_util::{http_get, http_request};
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::registry::Registry;

    fn counter_source() -> (Counter, Arc<dyn MetricsSource>) {
        let counter = Counter::<u64>::default();
        let mut registry = Registry::with_prefix("foldtrain");
        registry.register("test_events", "events seen by the test", counter.clone());
        let registry = Arc::new(registry);
        let source = move || -> Rendering {
            let registry = registry.clone();
            Box::pin(async move { encode_registry(&registry) })
        };
        (counter, Arc::new(source))
    }

    async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || http_get(addr, &path))
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_and_refuses_other_paths() {
        let (counter, source) = counter_source();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = serve_metrics("127.0.0.1:0".parse().unwrap(), source, async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(server.url(), format!("http://{addr}/metrics"));

        counter.inc_by(3);
        let (status, head, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        assert!(
            body.contains("# TYPE foldtrain_test_events counter"),
            "{body}"
        );
        assert!(body.contains("foldtrain_test_events_total 3"), "{body}");
        assert!(body.trim_end().ends_with("# EOF"), "{body}");

        // Values are read at scrape time.
        counter.inc();
        let (_, _, body) = get(addr, "/metrics").await;
        assert!(body.contains("foldtrain_test_events_total 4"), "{body}");

        let (status, _, body) = get(addr, "/").await;
        assert_eq!(status, 404);
        assert!(body.contains("/metrics"), "{body}");
        let (status, _, _) = get(addr, "/metrics/extra").await;
        assert_eq!(status, 404);

        stop_tx.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server.wait())
            .await
            .expect("the endpoint stops on shutdown");
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "nothing listens after shutdown"
        );
    }

    #[tokio::test]
    async fn only_get_and_head_are_allowed_on_metrics() {
        let (_, source) = counter_source();
        let server = serve_metrics(
            "127.0.0.1:0".parse().unwrap(),
            source,
            std::future::pending(),
        )
        .await
        .unwrap();
        let addr = server.local_addr();
        let request = |method: &'static str, path: &'static str| {
            tokio::task::spawn_blocking(move || http_request(addr, method, path).unwrap())
        };
        let (status, head, body) = request("POST", "/metrics").await.unwrap();
        assert_eq!(status, 405, "{head}");
        assert!(
            head.to_ascii_lowercase().contains("allow: get,head"),
            "{head}"
        );
        assert!(body.contains("only GET"), "{body}");
        let (status, _, _) = request("DELETE", "/").await.unwrap();
        assert_eq!(status, 404);

        let (status, head, body) = request("HEAD", "/metrics").await.unwrap();
        assert_eq!(status, 200, "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        assert!(body.is_empty(), "{body}");
    }

    #[tokio::test]
    async fn a_failed_rendering_is_a_500_with_the_reason() {
        let source = || -> Rendering { Box::pin(async { Err("the store is gone".to_owned()) }) };
        let server = serve_metrics(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(source),
            std::future::pending(),
        )
        .await
        .unwrap();
        let (status, _, body) = get(server.local_addr(), "/metrics").await;
        assert_eq!(status, 500);
        assert!(body.contains("the store is gone"), "{body}");
    }

    #[tokio::test]
    async fn an_address_in_use_is_named_with_the_flag() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let (_, source) = counter_source();
        let err = serve_metrics(addr, source, std::future::pending())
            .await
            .unwrap_err();
        assert!(
            matches!(err, MetricsHttpError::AddressInUse { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("--metrics-listen")
                && text.contains(&addr.to_string())
                && text.contains("in use"),
            "{text}"
        );
    }
}
