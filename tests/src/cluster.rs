//! An in-process cluster for end-to-end tests: a real coordinator and N real workers on
//! loopback port 0, each with its own temporary directory, and the client calls a user
//! makes (upload and submit a data set, wait for the job, download its results) through
//! the coordinator's client library.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use foldtrain_coordinator::client::{self, Client, Silent};
use foldtrain_coordinator::config::ServeConfig;
use foldtrain_coordinator::dataset::{
    CheckOptions, Columns, Dataset, DatasetSpec, Layout, LoadOptions, NoProgress, TestSet,
};
use foldtrain_coordinator::server::ServerHandle;
use foldtrain_coordinator::synth::{SynthOptions, generate};
use foldtrain_proto::pb::worker_client::WorkerClient;
use foldtrain_proto::runtime::auth::BearerToken;
use foldtrain_proto::{JobConfig, JobId, MAX_MESSAGE_SIZE, pb};
use foldtrain_worker::device::Slot;
use foldtrain_worker::server::{WorkerConfig, WorkerHandle};
use foldtrain_worker::train::RunOptions;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A worker client carrying a bearer token.
pub type Worker = WorkerClient<InterceptedService<Channel, BearerToken>>;

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The users' token the coordinator requires.
    pub token: Option<String>,
    /// The workers' token (None: workers present the users' token).
    pub worker_token: Option<String>,
    /// Worker lease; short, so a lost worker is noticed quickly.
    pub lease: Duration,
    pub run_options: RunOptions,
    /// How long to wait for every worker to register.
    pub register_timeout: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            token: Some("cluster-test-token".into()),
            worker_token: Some("cluster-worker-token".into()),
            lease: Duration::from_secs(2),
            run_options: RunOptions::default(),
            register_timeout: Duration::from_secs(30),
        }
    }
}

/// A running coordinator and its workers. Dropping it stops them (without waiting).
pub struct Cluster {
    coordinator: ServerHandle,
    workers: Vec<WorkerHandle>,
    stops: Vec<oneshot::Sender<()>>,
    token: Option<String>,
    root: TempDir,
}

/// What [`Cluster::submit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub job_id: String,
    /// Blobs the coordinator lacked and that were uploaded.
    pub uploaded: usize,
}

fn stop_signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

impl Cluster {
    /// Starts a coordinator and `workers` CPU workers (ids `worker-0`, `worker-1`, ...),
    /// and waits until all of them are registered. Panics with the reason on failure.
    pub async fn start(workers: usize, options: ClusterOptions) -> Cluster {
        let root = tempfile::tempdir().expect("creating the cluster's temp dir");
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: root.path().join("coordinator"),
            token: options.token.clone(),
            worker_token: options.worker_token.clone(),
            lease: options.lease,
            ..ServeConfig::default()
        };
        let (stop, stopped) = stop_signal();
        let coordinator = foldtrain_coordinator::server::start(config, stopped)
            .await
            .unwrap_or_else(|e| panic!("starting the coordinator: {e}"));
        let mut stops = vec![stop];
        let mut handles = Vec::new();
        for i in 0..workers {
            let config = WorkerConfig {
                coordinator: coordinator.url(),
                listen: "127.0.0.1:0".parse().unwrap(),
                slots: vec![Slot::Cpu],
                cache_dir: root.path().join(format!("worker-{i}-cache")),
                token: options.worker_token.clone().or(options.token.clone()),
                worker_id: Some(format!("worker-{i}")),
                run_options: options.run_options,
                ..WorkerConfig::default()
            };
            let (stop, stopped) = stop_signal();
            let handle = foldtrain_worker::server::start(config, stopped)
                .await
                .unwrap_or_else(|e| panic!("starting worker {i}: {e}"));
            stops.push(stop);
            handles.push(handle);
        }
        let cluster = Cluster {
            coordinator,
            workers: handles,
            stops,
            token: options.token,
            root,
        };
        cluster
            .wait_for_workers(workers, options.register_timeout)
            .await;
        cluster
    }

    async fn wait_for_workers(&self, expected: usize, timeout: Duration) {
        let client = self.client().await;
        let deadline = Instant::now() + timeout;
        loop {
            let workers = client.workers().await.expect("ListWorkers");
            let alive = workers.iter().filter(|w| w.alive).count();
            if alive >= expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {alive} of {expected} workers registered within {timeout:?}: {workers:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn coordinator_url(&self) -> String {
        self.coordinator.url()
    }

    pub fn coordinator(&self) -> &ServerHandle {
        &self.coordinator
    }

    pub fn workers(&self) -> &[WorkerHandle] {
        &self.workers
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.path().join("scratch").join(name);
        std::fs::create_dir_all(&dir).expect("creating a scratch dir");
        dir
    }

    /// A coordinator client with the cluster's token.
    pub async fn client(&self) -> Client {
        let url = self.coordinator.url();
        Client::connect(&url, self.token())
            .await
            .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
    }

    /// The call token worker `index` registered with: the one credential it takes.
    pub fn call_token(&self, index: usize) -> String {
        let id = self.workers[index].worker_id();
        self.coordinator
            .scheduler()
            .live_workers()
            .into_iter()
            .find(|w| w.id.as_str() == id)
            .map(|w| w.call_token.as_str().to_string())
            .unwrap_or_else(|| panic!("worker {id} is not registered"))
    }

    /// A client of worker `index`, presenting `token` (which may be wrong on purpose).
    pub async fn worker_client(&self, index: usize, token_text: Option<&str>) -> Worker {
        let channel = connect(&self.workers[index].url()).await;
        WorkerClient::with_interceptor(channel, token(token_text))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// Uploads the blobs of `dataset` the coordinator lacks, then submits it with
    /// `config`, as `foldtrain submit` does.
    pub async fn submit(&self, dataset: &Dataset, config: &JobConfig, name: &str) -> Submission {
        let client = self.client().await;
        let outcome = client::submit_dataset(&client, dataset, config.clone(), name, &Silent)
            .await
            .unwrap_or_else(|e| panic!("submitting {name}: {e}"));
        Submission {
            job_id: outcome.job_id.to_string(),
            uploaded: outcome.blobs_uploaded as usize,
        }
    }

    /// Polls the job until it ends; panics when it has not within `timeout`.
    pub async fn wait_for_job(&self, job_id: &str, timeout: Duration) -> pb::JobStatus {
        let client = self.client().await;
        let job = JobId::new(job_id);
        let deadline = Instant::now() + timeout;
        loop {
            let status = client
                .job(&job)
                .await
                .unwrap_or_else(|e| panic!("GetJob {job_id}: {e}"));
            if status.state().is_terminal() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} did not end within {timeout:?}: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Downloads every artifact of the job into `out`; returns their relative paths.
    pub async fn download_results(&self, job_id: &str, out: &Path) -> Vec<String> {
        let client = self.client().await;
        let job = JobId::new(job_id);
        let paths = client
            .artifacts(&job)
            .await
            .unwrap_or_else(|e| panic!("ListArtifacts {job_id}: {e}"));
        let written = client::download_results(&client, &job, out)
            .await
            .unwrap_or_else(|e| panic!("downloading the results of {job_id}: {e}"));
        assert_eq!(written.len(), paths.len(), "files written for {paths:?}");
        paths
    }

    /// Stops the workers, then the coordinator, and waits for all of them.
    pub async fn stop(self) {
        let Cluster {
            coordinator,
            workers,
            stops,
            root,
            ..
        } = self;
        // Workers first: a coordinator going away first would see them as lost.
        let mut stops = stops.into_iter();
        let coordinator_stop = stops.next();
        for stop in stops {
            let _ = stop.send(());
        }
        for worker in workers {
            let id = worker.worker_id().to_string();
            worker
                .wait()
                .await
                .unwrap_or_else(|e| panic!("worker {id} stopped with an error: {e}"));
        }
        if let Some(stop) = coordinator_stop {
            let _ = stop.send(());
        }
        coordinator
            .wait()
            .await
            .unwrap_or_else(|e| panic!("coordinator stopped with an error: {e}"));
        drop(root);
    }
}

fn token(text: Option<&str>) -> BearerToken {
    BearerToken::new(text).expect("a header-safe token")
}

async fn connect(url: &str) -> Channel {
    Channel::from_shared(url.to_string())
        .unwrap_or_else(|e| panic!("bad url {url}: {e}"))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

/// Asks which blobs the coordinator lacks and uploads those; returns how many.
pub async fn upload_missing(client: &Client, dataset: &Dataset) -> usize {
    let uploaded = client::upload_dataset(client, dataset, &Silent)
        .await
        .unwrap_or_else(|e| panic!("uploading the data set: {e}"));
    uploaded.blobs as usize
}

/// Writes a synthetic data set into `dir` (the seed's CSV layout) and loads it.
pub fn synth_dataset(
    dir: &Path,
    train: usize,
    test: usize,
    image_size: u32,
    folds: u32,
) -> Dataset {
    let options = SynthOptions {
        out: dir.to_path_buf(),
        train,
        test,
        image_size,
        folds,
        ..SynthOptions::default()
    };
    generate(&options, &NoProgress).unwrap_or_else(|e| panic!("generating the data set: {e}"));
    load_csv_dataset(dir, folds)
}

/// Loads a data set in the seed's layout (`Training_set.csv`, `train/`,
/// `Testing_set.csv`, `test/`), as `foldtrain submit` reads it.
pub fn load_csv_dataset(dir: &Path, folds: u32) -> Dataset {
    let spec = DatasetSpec {
        layout: Layout::Csv {
            train_csv: dir.join("Training_set.csv"),
            train_dir: dir.join("train"),
            test: Some(TestSet {
                csv: dir.join("Testing_set.csv"),
                dir: dir.join("test"),
                truth: None,
            }),
        },
        columns: Columns::default(),
        checks: CheckOptions::default(),
    };
    let options = LoadOptions { folds: Some(folds) };
    let (dataset, _report) = foldtrain_coordinator::dataset::load(&spec, options, &NoProgress)
        .into_valid()
        .unwrap_or_else(|e| panic!("loading the data set in {}: {e}", dir.display()));
    dataset
}
