//! Starting a coordinator in-process: open the store, start the scheduler and serve
//! gRPC on the configured address (port 0 picks one) until `shutdown` resolves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use foldtrain_proto::pb::coordinator_server::CoordinatorServer;
use foldtrain_proto::runtime::health::Health;
use foldtrain_proto::runtime::metrics_http::MetricsServer;
use foldtrain_proto::runtime::tls::server_builder;
use foldtrain_proto::{CONNECTION_WINDOW, STREAM_WINDOW};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use super::auth::{RoleGate, coordinator_policy};
use super::metrics::serve_coordinator_metrics;
use super::service::CoordinatorService;
use crate::config::ServeConfig;
use crate::error::{CoordinatorError, Result};
use crate::scheduler::{FoldLauncher, GrpcLauncher, Scheduler, SchedulerOptions};
use crate::store::Store;

/// A running coordinator.
pub struct ServerHandle {
    addr: SocketAddr,
    tls: bool,
    scheduler: Scheduler,
    task: JoinHandle<Result<()>>,
    metrics: Option<MetricsServer>,
}

impl ServerHandle {
    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, or `https://<addr>` with TLS, for clients.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// The address `/metrics` is served on, when `metrics_listen` was set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(MetricsServer::local_addr)
    }

    /// Waits until the server has stopped (after `shutdown` resolved).
    pub async fn wait(self) -> Result<()> {
        let served = self
            .task
            .await
            .map_err(|e| CoordinatorError::task_failed("server", e))?;
        if let Some(metrics) = self.metrics {
            metrics.wait().await;
        }
        served
    }
}

/// Starts a coordinator that launches folds on real workers over gRPC.
pub async fn start(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServerHandle> {
    let worker_tls = config
        .tls
        .client()
        .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    let launcher = GrpcLauncher::new()
        .with_tls(worker_tls)
        .with_max_message_size(config.max_message_size);
    start_with_launcher(config, Arc::new(launcher), shutdown).await
}

/// Starts a coordinator with the given launcher (a virtual one in tests and demos).
pub async fn start_with_launcher(
    config: ServeConfig,
    launcher: Arc<dyn FoldLauncher>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<ServerHandle> {
    config.validate()?;
    let tls = config
        .tls
        .server()
        .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    let data_dir = config.data_dir.clone();
    let store = crate::error::run_blocking("store open", move || Store::open(&data_dir)).await?;
    let scheduler = Scheduler::new(
        store,
        launcher,
        SchedulerOptions {
            lease: config.lease,
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| CoordinatorError::io(format!("binding {}", config.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CoordinatorError::io("reading the bound address", e))?;
    let service = CoordinatorService::new(scheduler.clone()).with_upload_limits(config.uploads);
    let service = CoordinatorServer::new(service)
        .max_decoding_message_size(config.max_message_size)
        .max_encoding_message_size(config.max_message_size);
    if config.token.is_some() && config.worker_token.is_none() {
        warn!(
            "one token for users and workers: a worker's credential can submit jobs; give workers \
             their own with --worker-token-file"
        );
    }
    let service = RoleGate::new(service, config.role_tokens(), coordinator_policy);
    // Probes ask without a token: the health service stays outside the role check.
    let (health, health_service) = Health::new::<CoordinatorServer<CoordinatorService>>().await;
    health.set(true).await;
    // The metrics endpoint stops when the gRPC server does, whichever way that happens.
    let (stopped, stop_metrics) = oneshot::channel::<()>();
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let shutdown = async move {
                let _ = stop_metrics.await;
            };
            Some(serve_coordinator_metrics(addr, scheduler.clone(), shutdown).await?)
        }
        None => None,
    };
    let monitor = scheduler.spawn_lease_monitor();
    let stopping = scheduler.clone();
    info!(%addr, data_dir = %config.data_dir.display(), auth = config.token.is_some(), tls = tls.is_some(), "coordinator listening");
    let secure = tls.is_some();
    let builder = server_builder(tls)
        .map_err(|e| CoordinatorError::Config(format!("TLS setup failed: {e}")))?;
    let task = tokio::spawn(async move {
        let result = builder
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async move {
                shutdown.await;
                health.set(false).await;
                stopping.shutdown();
            })
            .await;
        monitor.abort();
        drop(stopped);
        result.map_err(|e| CoordinatorError::io("serving gRPC", std::io::Error::other(e)))
    });
    Ok(ServerHandle {
        addr,
        tls: secure,
        scheduler,
        task,
        metrics,
    })
}
