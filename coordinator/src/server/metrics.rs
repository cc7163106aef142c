//! The coordinator's `/metrics` endpoint (`foldtrain serve --metrics-listen`), and the
//! byte counting of the streams the gRPC service sends.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use foldtrain_proto::runtime::metrics_http::{MetricsServer, Rendering, serve_metrics};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::error::{CoordinatorError, Result};
use crate::scheduler::{Direction, Scheduler};

/// Serves the scheduler's metrics on `addr` until `shutdown` resolves.
pub async fn serve_coordinator_metrics(
    addr: SocketAddr,
    scheduler: Scheduler,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<MetricsServer> {
    let source = move || -> Rendering {
        let scheduler = scheduler.clone();
        Box::pin(async move { scheduler.render_metrics().await.map_err(|e| e.to_string()) })
    };
    serve_metrics(addr, Arc::new(source), shutdown)
        .await
        .map_err(|e| CoordinatorError::Config(e.to_string()))
}

/// The chunks of `rx` as a response stream, counting each chunk's `size` into the
/// `direction` counter as it is handed to the transport.
pub(super) fn count_sent<T: Send + 'static>(
    rx: mpsc::Receiver<std::result::Result<T, Status>>,
    scheduler: &Scheduler,
    direction: Direction,
    size: fn(&T) -> usize,
) -> impl Stream<Item = std::result::Result<T, Status>> + Send + 'static {
    let metrics = scheduler.metrics().clone();
    ReceiverStream::new(rx).inspect(move |item| {
        if let Ok(chunk) = item {
            metrics.streamed(direction, size(chunk));
        }
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use foldtrain_proto::runtime::test_util::http_get;
    use foldtrain_proto::task::FoldFailure;
    use foldtrain_proto::{ImageRef, JobConfig, WorkerId};

    use crate::config::ServeConfig;
    use crate::scheduler::{CallToken, JobSpec, Registration, VirtualBehaviour, VirtualLauncher};
    use crate::server::start_with_launcher;
    use crate::store::JobState;
    use foldtrain_proto::FailureCause;

    async fn scrape(addr: std::net::SocketAddr) -> String {
        let (status, head, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, 200, "{head}\n{body}");
        body
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn a_job_moves_the_coordinator_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_path_buf(),
            metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..ServeConfig::default()
        };
        // Fold 1's first attempt loses its worker after epoch 1; the retry succeeds.
        let launcher = VirtualLauncher::new(|l| {
            if l.fold.0 == 1 && l.nth == 1 {
                VirtualBehaviour::FailAfter {
                    after_epoch: 1,
                    failure: FoldFailure::new(FailureCause::WorkerLost, "gone"),
                }
            } else {
                VirtualBehaviour::Succeed
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = start_with_launcher(config, std::sync::Arc::new(launcher), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let addr = handle.metrics_addr().expect("metrics_listen was set");
        assert_ne!(addr.port(), 0);

        let before = scrape(addr).await;
        assert_eq!(value(&before, "foldtrain_workers_alive"), 0.0);
        assert_eq!(value(&before, r#"foldtrain_jobs{state="succeeded"}"#), 0.0);
        assert_eq!(
            value(
                &before,
                r#"foldtrain_streamed_bytes_total{direction="checkpoint"}"#
            ),
            0.0
        );

        let scheduler = handle.scheduler().clone();
        let store = scheduler.store().clone();
        let image = |name: String, label| {
            let bytes = name.clone().into_bytes();
            ImageRef {
                hash: store.blobs.put(&bytes).unwrap(),
                name,
                label,
                group: String::new(),
                size: bytes.len() as u64,
            }
        };
        let mut job_config = JobConfig::default();
        job_config.split.folds = 3;
        job_config.train.epochs = 2;
        let spec = JobSpec {
            name: "metrics".into(),
            config: job_config,
            class_names: vec!["a".into(), "b".into(), "c".into()],
            train: (0..15)
                .map(|i| image(format!("{i}.jpg"), Some(i % 3)))
                .collect(),
            test: (0..3).map(|i| image(format!("t{i}.jpg"), None)).collect(),
            client: Default::default(),
        };
        let job = scheduler.submit(spec).await.unwrap();
        let queued = scrape(addr).await;
        assert_eq!(value(&queued, "foldtrain_queued_folds"), 3.0);
        assert_eq!(value(&queued, r#"foldtrain_folds{state="queued"}"#), 3.0);

        scheduler
            .register_worker(Registration {
                id: WorkerId::new("w1"),
                address: "virtual://w1".into(),
                call_token: CallToken::new("t1"),
                hostname: "here".into(),
                slots: vec![(0, "gpu0".into())],
            })
            .await
            .unwrap();
        // The worker stays alive and heartbeats, so the fold whose stream broke returns to it.
        let beating = scheduler.clone();
        let beats = tokio::spawn(async move {
            loop {
                let _ = beating
                    .heartbeat(&WorkerId::new("w1"), &CallToken::new("t1"), false)
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let state = tokio::time::timeout(Duration::from_secs(20), scheduler.wait_job(&job))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(state, JobState::Succeeded);
        beats.abort();

        let after = scrape(addr).await;
        assert_eq!(value(&after, r#"foldtrain_jobs{state="succeeded"}"#), 1.0);
        assert_eq!(value(&after, r#"foldtrain_folds{state="done"}"#), 3.0);
        assert_eq!(value(&after, r#"foldtrain_folds{state="queued"}"#), 0.0);
        assert_eq!(value(&after, "foldtrain_queued_folds"), 0.0);
        assert_eq!(value(&after, "foldtrain_workers_alive"), 1.0);
        assert_eq!(
            value(&after, r#"foldtrain_worker_slots{state="busy"}"#),
            0.0
        );
        assert!(
            value(
                &after,
                r#"foldtrain_streamed_bytes_total{direction="checkpoint"}"#
            ) > 0.0,
            "{after}"
        );
        assert_eq!(
            value(
                &after,
                r#"foldtrain_fold_attempt_failures_total{cause="worker_lost"}"#
            ),
            1.0
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), handle.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "the endpoint stops with the server"
        );
    }
}
