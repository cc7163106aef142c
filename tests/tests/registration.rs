//! A worker started before its coordinator registers once the coordinator is up, and
//! registers again with a coordinator that restarted and forgot it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use foldtrain_coordinator::client::Client;
use foldtrain_coordinator::config::ServeConfig;
use foldtrain_coordinator::server::ServerHandle;
use foldtrain_worker::server::WorkerConfig;
use tokio::sync::oneshot;

const TOKEN: &str = "registration-token";

async fn coordinator(
    addr: SocketAddr,
    data_dir: &std::path::Path,
) -> (ServerHandle, oneshot::Sender<()>) {
    let config = ServeConfig {
        listen: addr,
        data_dir: data_dir.to_path_buf(),
        token: Some(TOKEN.into()),
        lease: Duration::from_millis(600),
        ..ServeConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = foldtrain_coordinator::server::start(config, async {
        let _ = stopped.await;
    })
    .await
    .unwrap_or_else(|e| panic!("starting the coordinator on {addr}: {e}"));
    (handle, stop)
}

/// Waits until the coordinator lists `worker` as alive.
async fn wait_registered(url: &str, worker: &str, timeout: Duration) {
    let client = Client::connect(url, Some(TOKEN)).await.unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        let workers = client.workers().await.unwrap();
        if workers.iter().any(|w| w.worker_id == worker && w.alive) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{worker} not registered at {url} within {timeout:?}: {workers:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_waits_for_its_coordinator_and_survives_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A free port for a coordinator that is not running yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url = format!("http://{addr}");
    let (stop_worker, worker_stopped) = oneshot::channel::<()>();
    let worker = foldtrain_worker::server::start(
        WorkerConfig {
            coordinator: url.clone(),
            cache_dir: dir.path().join("cache"),
            token: Some(TOKEN.into()),
            worker_id: Some("early-bird".into()),
            ..WorkerConfig::default()
        },
        async {
            let _ = worker_stopped.await;
        },
    )
    .await
    .expect("a worker starts without its coordinator");
    assert_eq!(worker.worker_id(), "early-bird");
    assert_eq!(worker.url(), format!("http://{}", worker.local_addr()));
    tokio::time::sleep(Duration::from_millis(700)).await;

    let (first, stop_first) = coordinator(addr, &dir.path().join("first")).await;
    wait_registered(&url, "early-bird", Duration::from_secs(15)).await;

    // A new coordinator with an empty store on the same address: the worker's next
    // heartbeat is refused or unknown, and it registers again.
    stop_first.send(()).unwrap();
    first.wait().await.unwrap();
    let (second, stop_second) = coordinator(addr, &dir.path().join("second")).await;
    wait_registered(&url, "early-bird", Duration::from_secs(15)).await;

    stop_worker.send(()).unwrap();
    worker.wait().await.unwrap();
    stop_second.send(()).unwrap();
    second.wait().await.unwrap();
}
