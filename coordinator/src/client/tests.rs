//! The client library against an in-process coordinator with virtual workers: upload and
//! deduplication, watch (including riding out a dropped connection), results, JSON
//! output, and the error messages users see.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use foldtrain_proto::{FoldState, JobConfig, JobId, JobState, pb};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

use super::*;
use crate::cli::job_json::{JobJson, WorkerJson};
use crate::cli::{jobs, summary_table};
use crate::config::ServeConfig;
use crate::dataset::{Dataset, DatasetSpec, LoadOptions, NoProgress, load};
use crate::scheduler::{VirtualBehaviour, VirtualLauncher};
use crate::server::{ServerHandle, start_with_launcher};
use crate::synth::{SynthOptions, generate};

const TOKEN: &str = "s3cret";

struct TestServer {
    _dir: TempDir,
    handle: ServerHandle,
    _stop: oneshot::Sender<()>,
}

async fn serve(launcher: VirtualLauncher) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        token: Some(TOKEN.into()),
        ..ServeConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = start_with_launcher(config, Arc::new(launcher), async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    TestServer {
        _dir: dir,
        handle,
        _stop: stop,
    }
}

async fn register_worker(client: &Client) {
    client
        .rpc()
        .register_worker(pb::RegisterWorkerRequest {
            worker_id: "w1".into(),
            address: "virtual://w1".into(),
            slots: vec![pb::Slot {
                device_index: 0,
                device_name: "virtual".into(),
            }],
            hostname: "here".into(),
            call_token: "w1-call-token".into(),
        })
        .await
        .unwrap();
}

/// A tiny synthetic data set (50 images of 16 px) good for 2 folds.
fn synth_dataset(dir: &Path) -> Dataset {
    generate(
        &SynthOptions {
            out: dir.to_path_buf(),
            train: 45,
            test: 5,
            image_size: 16,
            folds: 2,
            ..SynthOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
    let spec = DatasetSpec {
        layout: crate::dataset::Layout::Csv {
            train_csv: dir.join("Training_set.csv"),
            train_dir: dir.join("train"),
            test: Some(crate::dataset::TestSet {
                csv: dir.join("Testing_set.csv"),
                dir: dir.join("test"),
                truth: None,
            }),
        },
        columns: Default::default(),
        checks: Default::default(),
    };
    let (dataset, _) = load(&spec, LoadOptions { folds: Some(2) }, &NoProgress)
        .into_valid()
        .unwrap();
    dataset
}

fn config() -> JobConfig {
    let mut config = JobConfig::default();
    config.split.folds = 2;
    config.train.epochs = 2;
    config
}

/// How long the tests' watches wait for a lost coordinator.
const GIVE_UP: Duration = Duration::from_secs(20);

/// Prints the reconnect notes, so they show in the captured output on failure.
struct Notes;

impl WatchEvents for Notes {
    fn note(&self, line: &str) {
        eprintln!("{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_watch_status_and_results() {
    let server = serve(VirtualLauncher::default()).await;
    let client = Client::connect(&server.handle.url(), Some(TOKEN))
        .await
        .unwrap();
    register_worker(&client).await;
    let data = tempfile::tempdir().unwrap();
    let dataset = synth_dataset(data.path());
    let images = dataset.train.len() + dataset.test.len();

    let first = submit_dataset(&client, &dataset, config(), "first", &Silent)
        .await
        .unwrap();
    assert_eq!(first.blobs_uploaded, images as u64);
    assert_eq!(first.bytes_uploaded, dataset.total_bytes());
    let again = submit_dataset(&client, &dataset, config(), "again", &Silent)
        .await
        .unwrap();
    assert_eq!((again.blobs_uploaded, again.bytes_uploaded), (0, 0));
    assert_ne!(again.job_id, first.job_id);

    let status = watch_job(&client, &first.job_id, GIVE_UP, &Silent)
        .await
        .unwrap();
    assert_eq!(status.state(), JobState::Succeeded, "{}", status.message);
    assert_eq!(status.folds.len(), 2);
    assert!(status.folds.iter().all(|f| f.state() == FoldState::Done));
    let summary = summary_table::render_summary(&status, None);
    assert!(summary.contains("OOF  accuracy"), "{summary}");

    // status --json and workers --json parse back into the same values.
    let job = JobJson::from(&client.job(&first.job_id).await.unwrap());
    let text = serde_json::to_string_pretty(&job).unwrap();
    assert_eq!(serde_json::from_str::<JobJson>(&text).unwrap(), job);
    assert_eq!(job.folds.len(), 2);
    assert!(job.folds.iter().all(|f| f.best_epoch.is_some()));
    let macro_f1 = &job.summary.as_ref().unwrap()["oof"]["macro_f1"];
    assert!(macro_f1.is_f64(), "{text}");
    let listed: Vec<JobJson> = client
        .jobs()
        .await
        .unwrap()
        .iter()
        .map(JobJson::from)
        .collect();
    assert_eq!(listed.len(), 2);
    let workers: Vec<WorkerJson> = client
        .workers()
        .await
        .unwrap()
        .iter()
        .map(WorkerJson::from)
        .collect();
    let text = serde_json::to_string(&workers).unwrap();
    assert_eq!(
        serde_json::from_str::<Vec<WorkerJson>>(&text).unwrap(),
        workers
    );
    assert_eq!(workers[0].worker_id, "w1");
    assert!(workers[0].alive);

    // results: every listed artifact, byte for byte.
    let out = tempfile::tempdir().unwrap();
    let files = download_results(&client, &first.job_id, out.path())
        .await
        .unwrap();
    let listed = client.artifacts(&first.job_id).await.unwrap();
    assert!(
        listed.iter().any(|p| p == "folds/1/history.csv"),
        "{listed:?}"
    );
    assert_eq!(files.len(), listed.len());
    let job_dir = server.handle.scheduler().store().job_dir(&first.job_id);
    for (file, rel) in files.iter().zip(&listed) {
        assert_eq!(file, &out.path().join(rel));
        assert_eq!(
            std::fs::read(file).unwrap(),
            std::fs::read(job_dir.join(rel)).unwrap(),
            "{rel}"
        );
    }
    // Nothing but the results: no temporary files left behind.
    let mut on_disk = Vec::new();
    let mut stack = vec![out.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                on_disk.push(path);
            }
        }
    }
    assert_eq!(on_disk.len(), files.len());
}

#[tokio::test]
async fn errors_say_what_is_wrong() {
    let server = serve(VirtualLauncher::default()).await;
    let url = server.handle.url();
    let wrong = Client::connect(&url, Some("wrong")).await.unwrap();
    let err = wrong.jobs().await.unwrap_err().to_string();
    assert!(
        err.contains("rejected the token") && err.contains(&url),
        "{err}"
    );
    let none = Client::connect(&url, None).await.unwrap();
    let err = none.workers().await.unwrap_err().to_string();
    assert!(err.contains("token"), "{err}");

    let client = Client::connect(&url, Some(TOKEN)).await.unwrap();
    let ghost = JobId::new("job-nope");
    for err in [
        client.job(&ghost).await.unwrap_err(),
        client.cancel(&ghost).await.unwrap_err(),
        watch_job(&client, &ghost, GIVE_UP, &Silent)
            .await
            .unwrap_err(),
        download_results(&client, &ghost, Path::new("/nonexistent"))
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.to_string(), "no job job-nope");
    }

    // The coordinator's own validation reaches the user with its text.
    let data = tempfile::tempdir().unwrap();
    let dataset = synth_dataset(data.path());
    let mut bad = config();
    bad.split.folds = 30;
    let err = submit_dataset(&client, &dataset, bad, "bad", &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("submit job") && err.contains(&url), "{err}");
    let mut grouped = config();
    grouped.split.group_column = Some("video_id".into());
    let err = submit_dataset(&client, &dataset, grouped, "g", &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--group-column video_id"), "{err}");

    // A file that changed after it was hashed is named, and nothing bad is stored.
    let mut changed = dataset.clone();
    changed.train[0].hash = foldtrain_proto::BlobHash::of(b"the bytes it had when hashed");
    let err = submit_dataset(&client, &changed, config(), "c", &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&changed.train[0].path.display().to_string()) && err.contains("changed"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_jobs_end_the_watch() {
    let server = serve(VirtualLauncher::new(|_| VirtualBehaviour::WaitForRelease)).await;
    let client = Client::connect(&server.handle.url(), Some(TOKEN))
        .await
        .unwrap();
    register_worker(&client).await;
    let data = tempfile::tempdir().unwrap();
    let dataset = synth_dataset(data.path());
    let job = submit_dataset(&client, &dataset, config(), "c", &Silent)
        .await
        .unwrap()
        .job_id;
    let watcher = {
        let client = client.clone();
        let job = job.clone();
        tokio::spawn(async move { watch_job(&client, &job, GIVE_UP, &Silent).await })
    };
    let status = client.cancel(&job).await.unwrap();
    assert!(
        matches!(status.state(), JobState::Cancelled | JobState::Running),
        "{status:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(20), watcher)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status.state(), JobState::Cancelled);
    assert_eq!(
        jobs::exit_code(status.state()),
        std::process::ExitCode::FAILURE
    );
}

/// A TCP proxy that can be cut, as a coordinator restart or network drop would.
struct Proxy {
    addr: SocketAddr,
    _tasks: JoinSet<()>,
}

async fn proxy(listen: SocketAddr, upstream: SocketAddr) -> Proxy {
    let listener = TcpListener::bind(listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut tasks = JoinSet::new();
    tasks.spawn(async move {
        // Dropping this set (with the proxy) cuts every connection it carries.
        let mut connections = JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            connections.spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Proxy {
        addr,
        _tasks: tasks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_rides_out_a_dropped_connection() {
    let launcher = VirtualLauncher::new(|_| VirtualBehaviour::WaitForRelease);
    let server = serve(launcher.clone()).await;
    let direct = Client::connect(&server.handle.url(), Some(TOKEN))
        .await
        .unwrap();
    register_worker(&direct).await;
    let data = tempfile::tempdir().unwrap();
    let dataset = synth_dataset(data.path());
    let job = submit_dataset(&direct, &dataset, config(), "r", &Silent)
        .await
        .unwrap()
        .job_id;

    let cut = proxy("127.0.0.1:0".parse().unwrap(), server.handle.local_addr()).await;
    let addr = cut.addr;
    let via_proxy = Client::connect(&format!("http://{addr}"), Some(TOKEN))
        .await
        .unwrap();
    let watcher = {
        let client = via_proxy.clone();
        let job = job.clone();
        tokio::spawn(async move { watch_job(&client, &job, GIVE_UP, &Notes).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(cut);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !watcher.is_finished(),
        "the watch gave up on a short outage"
    );
    let _back = proxy(addr, server.handle.local_addr()).await;
    launcher.release();
    let status = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(status.state(), JobState::Succeeded, "{}", status.message);

    // With the coordinator gone for good, the watch gives up and says where it looked.
    let gone = proxy("127.0.0.1:0".parse().unwrap(), server.handle.local_addr()).await;
    let url = format!("http://{}", gone.addr);
    let client = Client::connect(&url, Some(TOKEN)).await.unwrap();
    let other = submit_dataset(&direct, &dataset, config(), "g", &Silent)
        .await
        .unwrap()
        .job_id;
    drop(gone);
    let err = watch_job(&client, &other, Duration::from_millis(600), &Silent)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&url) && err.contains(other.as_str()), "{err}");
}
