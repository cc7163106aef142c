//! The `/metrics` endpoint both binaries serve (`--metrics-listen`): OpenMetrics text,
//! which Prometheus scrapes natively, over a minimal HTTP/1.1 server that stops with
//! the binary.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The flag both binaries take; errors name it so the user knows what to change.
pub const FLAG: &str = "--metrics-listen";

/// What `GET /metrics` answers with: the OpenMetrics text that `prometheus-client`
/// encodes (Prometheus has accepted it natively since 2.5).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A slow or idle client cannot hold a connection open for longer than this between
/// requests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

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
    let task = tokio::spawn(accept_loop(listener, source, shutdown));
    Ok(MetricsServer { addr: bound, task })
}

fn bind_error(addr: SocketAddr, source: std::io::Error) -> MetricsHttpError {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        MetricsHttpError::AddressInUse { addr, source }
    } else {
        MetricsHttpError::Bind { addr, source }
    }
}

async fn accept_loop(
    listener: TcpListener,
    source: Arc<dyn MetricsSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let source = source.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(respond(request, source.as_ref()).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped(&mut stop) => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
    let _ = stop_tx.send(true);
}

/// Resolves once the endpoint is stopping (or its stop signal is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Routes one request: `GET /metrics` (and `HEAD`) renders, anything else is refused.
async fn respond(request: Request<Incoming>, source: &dyn MetricsSource) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found; metrics are at /metrics\n",
        );
    }
    let head = request.method() == Method::HEAD;
    if request.method() != Method::GET && !head {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is allowed on /metrics\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match source.render().await {
        Ok(text) => {
            let body = if head {
                Bytes::new()
            } else {
                Bytes::from(text)
            };
            let mut response = Response::new(Full::new(body));
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            );
            response
        }
        Err(message) => {
            warn!(error = %message, "rendering metrics failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("rendering metrics failed: {message}\n"),
            )
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Encodes a `prometheus-client` registry as one complete OpenMetrics exposition.
pub fn encode_registry(registry: &prometheus_client::registry::Registry) -> Result<String, String> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)
        .map_err(|e| format!("encoding the metrics registry: {e}"))?;
    Ok(text)
}

/// A blocking HTTP/1.1 `GET` over a plain TCP stream, returning (status, headers, body):
/// what the tests use to scrape, without pulling an HTTP client into the tree.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status code in the response"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
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
