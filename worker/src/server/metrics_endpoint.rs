//! The worker's `/metrics` endpoint (`foldtrain-worker --metrics-listen`): the attempt
//! metrics plus busy slots and GPU memory, read at each scrape.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use foldtrain_proto::runtime::metrics_http::{MetricsServer, Rendering, serve_metrics};

use super::WorkerError;
use super::gpu_memory::GpuMemory;
use super::service::Shared;
use crate::device::Slot;

/// Serves the worker's metrics on `addr` until `shutdown` resolves. NVML is loaded
/// only here, so a worker without the flag never touches it.
pub async fn serve_worker_metrics(
    addr: SocketAddr,
    shared: Arc<Shared>,
    slots: &[Slot],
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<MetricsServer, WorkerError> {
    let slots = slots.to_vec();
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let gpu = tokio::task::spawn_blocking(move || GpuMemory::open(&slots, visible.as_deref()))
        .await
        .map_err(|e| WorkerError::Internal {
            what: "loading NVML",
            message: e.to_string(),
        })?
        .map(Arc::new);
    let source = move || -> Rendering {
        let (shared, gpu) = (shared.clone(), gpu.clone());
        Box::pin(async move {
            // NVML calls can take milliseconds: keep them off the async runtime.
            let memory = match gpu {
                Some(gpu) => tokio::task::spawn_blocking(move || gpu.read())
                    .await
                    .map_err(|e| format!("reading GPU memory: {e}"))?,
                None => Vec::new(),
            };
            shared.metrics.render(shared.slots.busy(), &memory)
        })
    };
    serve_metrics(addr, Arc::new(source), shutdown)
        .await
        .map_err(|e| WorkerError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use foldtrain_proto::runtime::test_util::http_get;

    use crate::device::Slot;
    use crate::server::{WorkerConfig, start};

    #[tokio::test]
    async fn the_worker_serves_metrics_until_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let config = WorkerConfig {
            // Nothing listens there: registration keeps retrying in the background.
            coordinator: "http://127.0.0.1:9".into(),
            cache_dir: dir.path().join("cache"),
            slots: vec![Slot::Cpu],
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..WorkerConfig::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = start(config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let addr = handle.metrics_addr().expect("metrics_listen was set");
        let (status, head, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 200, "{head}");
        for line in [
            "foldtrain_worker_served_slots 1",
            "foldtrain_worker_busy_slots 0",
            r#"foldtrain_worker_images_trained_total{slot="cpu"} 0"#,
            r#"foldtrain_worker_batch_duration_seconds_count{slot="cpu"} 0"#,
        ] {
            assert!(body.lines().any(|l| l == line), "no {line:?} in\n{body}");
        }
        // A CPU worker never loads NVML, so no GPU series appear.
        assert!(!body.contains("gpu_memory_used_bytes{"), "{body}");

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[tokio::test]
    async fn a_taken_metrics_port_fails_startup_by_name() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let config = WorkerConfig {
            coordinator: "http://127.0.0.1:9".into(),
            cache_dir: dir.path().join("cache"),
            metrics_listen: Some(addr),
            ..WorkerConfig::default()
        };
        let err = start(config, std::future::pending())
            .await
            .err()
            .expect("the port is taken")
            .to_string();
        assert!(
            err.contains("--metrics-listen")
                && err.contains(&addr.to_string())
                && err.contains("in use"),
            "{err}"
        );
    }
}
