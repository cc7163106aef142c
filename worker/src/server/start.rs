//! Starting a worker in-process: open the blob cache, serve `Worker` on the configured
//! address (port 0 picks one), and stay registered with the coordinator until
//! `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use foldtrain_proto::pb;
use foldtrain_proto::pb::worker_server::WorkerServer;
use foldtrain_proto::runtime::auth::{Role, RoleGate, RoleTokens, worker_policy};
use foldtrain_proto::runtime::health::{Health, HealthApi, HealthServer};
use foldtrain_proto::runtime::metrics_http::MetricsServer;
use foldtrain_proto::runtime::tls::server_builder;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::ServerTlsConfig;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use super::WorkerError;
use super::cache::BlobCache;
use super::client::coordinator_client;
use super::config::{WorkerConfig, default_worker_id, hostname};
use super::metrics::WorkerMetrics;
use super::metrics_endpoint::serve_worker_metrics;
use super::register::stay_registered;
use super::service::{Shared, WorkerService};
use super::slots::SlotTable;

/// A running worker.
pub struct WorkerHandle {
    addr: SocketAddr,
    url: String,
    shared: Arc<Shared>,
    task: JoinHandle<Result<(), WorkerError>>,
    metrics: Option<MetricsServer>,
}

impl WorkerHandle {
    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL this worker advertises to the coordinator.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// Blobs downloaded from the coordinator since the worker started.
    pub fn blobs_downloaded(&self) -> u64 {
        self.shared.cache.blobs_downloaded()
    }

    /// Slots training a fold right now.
    pub fn busy_slots(&self) -> usize {
        self.shared.slots.busy()
    }

    /// The address `/metrics` is served on, when `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// Waits until the server has stopped (after `shutdown` resolved and the running
    /// attempts ended).
    pub async fn wait(self) -> Result<(), WorkerError> {
        let served = self.task.await.map_err(|e| WorkerError::Internal {
            what: "the worker server task",
            message: e.to_string(),
        })?;
        if let Some(metrics) = self.metrics {
            metrics.wait().await;
        }
        served
    }
}

/// Starts a worker. Startup does not need the coordinator: registration retries in the
/// background until it is reachable.
pub async fn start(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<WorkerHandle, WorkerError> {
    config.validate()?;
    let cache = open_cache(&config).await?;
    let (listener, addr) = bind(config.listen).await?;
    let host = hostname();
    let tls = config
        .tls
        .server()
        .map_err(|e| WorkerError::Config(e.to_string()))?;
    let url = advertised_url(config.advertise.as_deref(), addr, &host, tls.is_some());
    if (config.token.is_none() || tls.is_none()) && !addr.ip().is_loopback() {
        warn!(%addr, "--insecure: listening beyond loopback without TLS or a token; anyone who reaches this port can make the worker train");
    }
    let (health, health_service) = Health::new::<WorkerServer<WorkerService>>().await;
    let shared = Arc::new(shared_state(&config, cache, health)?);
    let registration = registration(&shared, &config, &url, host);
    let service = worker_service(&config, &shared);
    info!(
        worker = %shared.worker_id,
        %addr,
        %url,
        coordinator = %config.coordinator,
        cache_dir = %config.cache_dir.display(),
        slots = config.slots.len(),
        "worker listening"
    );
    // The metrics endpoint stops when the gRPC server does, whichever way that happens.
    let (stopped, stop_metrics) = oneshot::channel::<()>();
    let metrics = start_metrics(&config, &shared, stop_metrics).await?;
    let registering = tokio::spawn(stay_registered(shared.clone(), registration));
    let serving = Serving {
        listener,
        addr,
        shared: shared.clone(),
        registering,
        stopped,
        drain_timeout: config.drain_timeout,
        tls,
    };
    let task = tokio::spawn(serving.run(service, health_service, shutdown));
    Ok(WorkerHandle {
        addr,
        url,
        shared,
        task,
        metrics,
    })
}

async fn open_cache(config: &WorkerConfig) -> Result<BlobCache, WorkerError> {
    let cache_dir = config.cache_dir.clone();
    tokio::task::spawn_blocking(move || BlobCache::open(cache_dir))
        .await
        .map_err(|e| WorkerError::Internal {
            what: "opening the blob cache",
            message: e.to_string(),
        })?
}

/// The listener and the address it actually bound.
async fn bind(listen: SocketAddr) -> Result<(TcpListener, SocketAddr), WorkerError> {
    let bind_error = |source| WorkerError::Bind {
        addr: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, addr))
}

/// The URL the coordinator should call: the configured one, else the bound address,
/// `https://` when the worker serves TLS.
fn advertised_url(advertise: Option<&str>, addr: SocketAddr, host: &str, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    match advertise {
        Some(url) => url.to_owned(),
        // An unspecified address (0.0.0.0) means nothing to the coordinator.
        None if addr.ip().is_unspecified() => format!("{scheme}://{host}:{}", addr.port()),
        None => format!("{scheme}://{addr}"),
    }
}

fn shared_state(
    config: &WorkerConfig,
    cache: BlobCache,
    health: Health,
) -> Result<Shared, WorkerError> {
    let worker_id = config.worker_id.clone().unwrap_or_else(default_worker_id);
    Ok(Shared {
        call_token: new_call_token()?,
        client: coordinator_client(
            &config.coordinator,
            config.token.as_deref(),
            &config.tls,
            config.insecure,
            config.max_message_size,
        )?,
        coordinator_url: config.coordinator.clone(),
        slots: SlotTable::new(worker_id.clone(), config.slots.clone()),
        cache: Arc::new(cache),
        run_options: config.run_options,
        draining: AtomicBool::new(false),
        drain_started: Default::default(),
        stopping: Arc::new(AtomicBool::new(false)),
        metrics: WorkerMetrics::new(&config.slots),
        health,
        worker_id,
        ensembles: Default::default(),
    })
}

/// What this worker tells the coordinator about itself.
fn registration(
    shared: &Shared,
    config: &WorkerConfig,
    url: &str,
    hostname: String,
) -> pb::RegisterWorkerRequest {
    pb::RegisterWorkerRequest {
        worker_id: shared.worker_id.clone(),
        address: url.to_owned(),
        slots: config
            .slots
            .iter()
            .map(|s| pb::Slot {
                device_index: s.index(),
                device_name: s.name(),
            })
            .collect(),
        hostname,
        call_token: shared.call_token.clone(),
    }
}

type GrpcService = RoleGate<WorkerServer<WorkerService>>;

/// The `Worker` gRPC service, which takes calls only from the coordinator this worker
/// registered with: the caller must present the call token the registration carried.
fn worker_service(config: &WorkerConfig, shared: &Arc<Shared>) -> GrpcService {
    let service = WorkerServer::new(WorkerService::new(shared.clone()))
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size);
    let tokens = RoleTokens::default().with(Role::Coordinator, Some(&shared.call_token));
    RoleGate::new(service, tokens, worker_policy)
}

/// 32 random bytes from the operating system, as hex: the call token of one run.
fn new_call_token() -> Result<String, WorkerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| WorkerError::Internal {
        what: "drawing a call token",
        message: e.to_string(),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Serves `/metrics` when `metrics_listen` is set, until `stop` resolves.
async fn start_metrics(
    config: &WorkerConfig,
    shared: &Arc<Shared>,
    stop: oneshot::Receiver<()>,
) -> Result<Option<MetricsServer>, WorkerError> {
    let Some(metrics_addr) = config.metrics_listen else {
        return Ok(None);
    };
    let shutdown = async move {
        let _ = stop.await;
    };
    let server = serve_worker_metrics(metrics_addr, shared.clone(), &config.slots, shutdown);
    Ok(Some(server.await?))
}

/// The gRPC server's task and what it stops when it ends.
struct Serving {
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    registering: JoinHandle<()>,
    /// Dropped when serving ends, which stops the metrics endpoint.
    stopped: oneshot::Sender<()>,
    drain_timeout: Duration,
    /// The server's TLS; None: cleartext HTTP/2.
    tls: Option<ServerTlsConfig>,
}

impl Serving {
    /// Serves until `shutdown` resolves. Then it drains: no new fold, running folds hand
    /// back a checkpoint at the end of their batch (stopped where they are after
    /// `drain_timeout`), and the server ends once their streams have.
    async fn run(
        self,
        service: GrpcService,
        health: HealthServer<impl HealthApi>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WorkerError> {
        let draining = self.shared.clone();
        let timeout = self.drain_timeout;
        let builder = server_builder(self.tls).map_err(|e| WorkerError::Serve {
            addr: self.addr,
            message: format!("TLS setup failed: {e}"),
        })?;
        let result = builder
            .initial_stream_window_size(Some(foldtrain_proto::STREAM_WINDOW))
            .initial_connection_window_size(Some(foldtrain_proto::CONNECTION_WINDOW))
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(self.listener), async move {
                shutdown.await;
                info!("worker shutting down");
                draining.begin_drain().await;
                tokio::spawn(async move { draining.stop_after(timeout).await });
            })
            .await;
        self.registering.abort();
        drop(self.stopped);
        result.map_err(|e| WorkerError::Serve {
            addr: self.addr,
            message: e.to_string(),
        })
    }
}
