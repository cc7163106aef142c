//! The standard gRPC health service (`grpc.health.v1.Health`) on both real binaries, as a
//! Kubernetes probe or a load balancer asks it: without a token, on the main gRPC port.
//! The worker says NOT_SERVING until it has registered, SERVING once it has, and both
//! binaries exit cleanly on SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use foldtrain_proto::runtime::health::{HealthCheckRequest, HealthClient, health_check_response};
use foldtrain_tests::binary;
use foldtrain_tests::procs::{Process, free_port, serve};
use health_check_response::ServingStatus;

const SERVICES: [&str; 2] = ["", "foldtrain.v1.Worker"];

/// The status of `service` at `url`, or the gRPC error code's name.
async fn check(url: &str, service: &str) -> Result<ServingStatus, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("url: {e}"))?
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = HealthClient::new(channel);
    let response = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    Ok(response.into_inner().status())
}

/// Polls until `service` at `url` reports `want`, for at most `timeout`.
async fn wait_for(url: &str, service: &str, want: ServingStatus, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = check(url, service).await;
        if got == Ok(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} service {service:?}: wanted {want:?}, still {got:?} after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_registration_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coordinator_url = format!("http://127.0.0.1:{port}");

    // The worker starts before any coordinator is there: it serves, but is not ready.
    let (worker, line) = Process::start(
        Command::new(binary("foldtrain-worker")).args([
            "--coordinator",
            &coordinator_url,
            "--cpu",
            "--cache-dir",
            dir.path().join("cache").to_str().unwrap(),
        ]),
        &dir.path().join("worker.log"),
        "listening on",
    );
    let worker_url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line}"))
        .to_owned();
    for service in SERVICES {
        assert_eq!(
            check(&worker_url, service).await,
            Ok(ServingStatus::NotServing),
            "an unregistered worker, service {service:?}"
        );
    }

    // Once the coordinator is up, the worker registers and reports SERVING; so does the
    // coordinator. Neither asks for a token.
    let (coordinator, url) = serve(
        &dir.path().join("data"),
        port,
        15_000,
        &dir.path().join("coordinator.log"),
    );
    assert_eq!(url, coordinator_url);
    for service in SERVICES {
        wait_for(
            &worker_url,
            service,
            ServingStatus::Serving,
            Duration::from_secs(30),
        )
        .await;
    }
    for service in ["", "foldtrain.v1.Coordinator"] {
        assert_eq!(check(&url, service).await, Ok(ServingStatus::Serving));
    }
    let unknown = check(&url, "no.such.Service").await;
    assert!(
        unknown.as_ref().is_err_and(|e| e.starts_with("NotFound")),
        "{unknown:?}"
    );

    // SIGTERM: an idle worker drains at once and exits 0, and so does the coordinator.
    let worker_exit = worker.terminate(Duration::from_secs(20));
    assert!(worker_exit.success(), "worker: {worker_exit}");
    let coordinator_exit = coordinator.terminate(Duration::from_secs(20));
    assert!(
        coordinator_exit.success(),
        "coordinator: {coordinator_exit}"
    );
}
