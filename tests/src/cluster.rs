//! An in-process cluster for end-to-end tests: a real coordinator and N real workers on
//! loopback port 0, each with its own temporary directory, and the client calls a user
//! makes (upload and submit a data set, wait for the job, download its results).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use foldtrain_coordinator::config::ServeConfig;
use foldtrain_coordinator::dataset::{
    CheckOptions, Columns, Dataset, DatasetSpec, Layout, LoadOptions, NoProgress, TestSet,
};
use foldtrain_coordinator::server::ServerHandle;
use foldtrain_coordinator::store::JobState;
use foldtrain_coordinator::synth::{SynthOptions, generate};
use foldtrain_proto::auth::BearerToken;
use foldtrain_proto::pb::coordinator_client::CoordinatorClient;
use foldtrain_proto::pb::worker_client::WorkerClient;
use foldtrain_proto::{BlobHash, CHUNK_SIZE, ImageRef, JobConfig, MAX_MESSAGE_SIZE, pb};
use foldtrain_worker::device::Slot;
use foldtrain_worker::server::{WorkerConfig, WorkerHandle};
use foldtrain_worker::train::RunOptions;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A coordinator client carrying a bearer token.
pub type Coordinator = CoordinatorClient<InterceptedService<Channel, BearerToken>>;
/// A worker client carrying a bearer token.
pub type Worker = WorkerClient<InterceptedService<Channel, BearerToken>>;

/// How to start a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Token the coordinator and workers require (and present to each other).
    pub token: Option<String>,
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
                token: options.token.clone(),
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
        let mut client = self.client().await;
        let deadline = Instant::now() + timeout;
        loop {
            let workers = client
                .list_workers(pb::ListWorkersRequest {})
                .await
                .expect("ListWorkers")
                .into_inner()
                .workers;
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
    pub async fn client(&self) -> Coordinator {
        let channel = connect(&self.coordinator.url()).await;
        CoordinatorClient::with_interceptor(channel, token(self.token()))
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
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
        let mut client = self.client().await;
        let uploaded = upload_missing(&mut client, dataset).await;
        let request = pb::SubmitJobRequest {
            config: Some(pb::JobConfig {
                toml: config.to_toml(),
            }),
            class_names: dataset.classes.clone(),
            train: dataset
                .train
                .iter()
                .map(|e| (&ImageRef::from(e)).into())
                .collect(),
            test: dataset
                .test
                .iter()
                .map(|e| (&ImageRef::from(e)).into())
                .collect(),
            name: name.to_string(),
        };
        let job_id = client
            .submit_job(request)
            .await
            .unwrap_or_else(|s| panic!("SubmitJob: {s:?}"))
            .into_inner()
            .job_id;
        Submission { job_id, uploaded }
    }

    /// Polls the job until it ends; panics when it has not within `timeout`.
    pub async fn wait_for_job(&self, job_id: &str, timeout: Duration) -> pb::JobStatus {
        let mut client = self.client().await;
        let deadline = Instant::now() + timeout;
        loop {
            let status = client
                .get_job(pb::GetJobRequest {
                    job_id: job_id.to_string(),
                })
                .await
                .unwrap_or_else(|s| panic!("GetJob {job_id}: {s:?}"))
                .into_inner();
            if JobState::parse(&status.state).is_ok_and(JobState::is_terminal) {
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
        let mut client = self.client().await;
        let paths = client
            .list_artifacts(pb::GetJobRequest {
                job_id: job_id.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("ListArtifacts {job_id}: {s:?}"))
            .into_inner()
            .paths;
        for path in &paths {
            let mut stream = client
                .download_artifact(pb::DownloadArtifactRequest {
                    job_id: job_id.to_string(),
                    path: path.clone(),
                })
                .await
                .unwrap_or_else(|s| panic!("DownloadArtifact {path}: {s:?}"))
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream
                .message()
                .await
                .unwrap_or_else(|s| panic!("downloading {path}: {s:?}"))
            {
                bytes.extend_from_slice(&chunk.data);
            }
            let target = out.join(path);
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            std::fs::write(&target, bytes)
                .unwrap_or_else(|e| panic!("writing {}: {e}", target.display()));
        }
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
pub async fn upload_missing(client: &mut Coordinator, dataset: &Dataset) -> usize {
    let entries: Vec<_> = dataset.train.iter().chain(&dataset.test).collect();
    let missing = client
        .missing_blobs(pb::MissingBlobsRequest {
            hashes: entries.iter().map(|e| e.hash.0.to_vec()).collect(),
        })
        .await
        .unwrap_or_else(|s| panic!("MissingBlobs: {s:?}"))
        .into_inner()
        .missing;
    let missing: Vec<BlobHash> = missing
        .iter()
        .map(|h| BlobHash::from_slice(h).expect("a 32-byte hash"))
        .collect();
    if missing.is_empty() {
        return 0;
    }
    let mut chunks = Vec::new();
    let mut sent = std::collections::HashSet::new();
    for entry in entries.iter().filter(|e| missing.contains(&e.hash)) {
        if !sent.insert(entry.hash) {
            continue;
        }
        let bytes = std::fs::read(&entry.path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", entry.path.display()));
        chunks.extend(blob_chunks(entry.hash, &bytes));
    }
    let response = client
        .upload_blobs(tokio_stream::iter(chunks))
        .await
        .unwrap_or_else(|s| panic!("UploadBlobs: {s:?}"))
        .into_inner();
    assert_eq!(response.blobs as usize, sent.len(), "blobs stored");
    sent.len()
}

/// The upload chunks of one blob.
pub fn blob_chunks(hash: BlobHash, bytes: &[u8]) -> Vec<pb::BlobChunk> {
    let count = bytes.len().div_ceil(CHUNK_SIZE).max(1);
    (0..count)
        .map(|i| {
            let start = i * CHUNK_SIZE;
            let end = (start + CHUNK_SIZE).min(bytes.len());
            pb::BlobChunk {
                hash: hash.0.to_vec(),
                offset: start as u64,
                data: bytes[start..end].to_vec(),
                last: i + 1 == count,
            }
        })
        .collect()
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
