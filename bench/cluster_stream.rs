//! Loopback streaming and coordinator overhead, side by side with a raw tokio TCP copy.
//!
//! Measures, on 127.0.0.1:
//! - a raw tokio TCP copy (the ceiling);
//! - blob upload to a real coordinator (chunked, BLAKE3-verified, fsynced, renamed);
//! - blob download from it;
//! - a checkpoint streamed from a worker through `Worker.TrainFold`, chunked and
//!   reassembled by the coordinator's real gRPC launcher;
//! - the coordinator's own time per job with an instant virtual worker.
//!
//! Usage: cargo run --release -p foldtrain-coordinator --example cluster_stream -- [MiB] [jobs]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use foldtrain_coordinator::client::Client;
use foldtrain_coordinator::config::ServeConfig;
use foldtrain_coordinator::scheduler::{FoldLauncher, GrpcLauncher, SlotTarget, VirtualLauncher};
use foldtrain_coordinator::server::start_with_launcher;
use foldtrain_proto::blob_chunks::{ChunkReassembler, chunks};
use foldtrain_proto::pb::worker_server::{Worker, WorkerServer};
use foldtrain_proto::task::{CheckpointKind, FoldSummary};
use foldtrain_proto::wire_events::encode_fold_event;
use foldtrain_proto::{
    AttemptId, BlobHash, CHUNK_SIZE, CONNECTION_WINDOW, FoldEvent, FoldIndex, FoldTask, ImageRef,
    JobConfig, JobId, JobState, MAX_MESSAGE_SIZE, STREAM_WINDOW, WorkerId, pb,
};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type AnyResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> AnyResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).map_or(Ok(256), |a| a.parse())?;
    let jobs: usize = args.get(2).map_or(Ok(5), |a| a.parse())?;
    let bytes = mib * 1024 * 1024;
    let payload: Vec<u8> = (0..bytes)
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
        .collect();

    let raw = raw_tcp(&payload).await?;
    report("raw tokio TCP copy", bytes, raw, raw);

    let dir = tempfile::tempdir()?;
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        ..ServeConfig::default()
    };
    let server = start_with_launcher(config, Arc::new(VirtualLauncher::default()), async {
        let _ = stopped.await;
    })
    .await?;
    let client = Client::connect(&server.url(), None).await?;

    // Blobs of 4 MiB, like large images or a checkpoint stored for resume.
    let blobs: Vec<&[u8]> = payload.chunks(4 * 1024 * 1024).collect();
    let hashes: Vec<BlobHash> = blobs.iter().map(|b| BlobHash::of(b)).collect();
    let upload = upload(&client, &blobs, &hashes).await?;
    report("blob upload (verify + fsync)", bytes, upload, raw);
    let download = download(&client, &hashes).await?;
    report("blob download", bytes, download, raw);

    let checkpoint = checkpoint_stream(&payload).await?;
    report("checkpoint via TrainFold", bytes, checkpoint, raw);

    overhead(&client, &server.scheduler().clone(), jobs).await?;
    Ok(())
}

fn report(what: &str, bytes: usize, took: Duration, raw: Duration) {
    let mbs = bytes as f64 / 1e6 / took.as_secs_f64();
    let fraction = raw.as_secs_f64() / took.as_secs_f64();
    println!(
        "{what:<32} {mbs:>9.1} MB/s  ({:>6.3} s, {:>5.1}% of raw TCP)",
        took.as_secs_f64(),
        fraction * 100.0
    );
}

async fn raw_tcp(payload: &[u8]) -> AnyResult<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    let expected = payload.len();
    let reader = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buf = vec![0u8; CHUNK_SIZE];
        let mut total = 0;
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n;
        }
        assert_eq!(total, expected);
        std::io::Result::Ok(())
    });
    let start = Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    for chunk in payload.chunks(CHUNK_SIZE) {
        socket.write_all(chunk).await?;
    }
    socket.shutdown().await?;
    reader.await??;
    Ok(start.elapsed())
}

async fn upload(client: &Client, blobs: &[&[u8]], hashes: &[BlobHash]) -> AnyResult<Duration> {
    let chunks: Vec<pb::BlobChunk> = blobs
        .iter()
        .zip(hashes)
        .flat_map(|(blob, hash)| chunks(*hash, blob))
        .collect();
    let start = Instant::now();
    let response = client
        .rpc()
        .upload_blobs(tokio_stream::iter(chunks))
        .await?
        .into_inner();
    let took = start.elapsed();
    assert_eq!(response.blobs as usize, blobs.len());
    Ok(took)
}

async fn download(client: &Client, hashes: &[BlobHash]) -> AnyResult<Duration> {
    let start = Instant::now();
    let mut stream = client
        .rpc()
        .download_blobs(pb::DownloadBlobsRequest {
            hashes: hashes.iter().map(|h| h.0.to_vec()).collect(),
        })
        .await?
        .into_inner();
    let mut framing = ChunkReassembler::new();
    let mut complete = 0;
    while let Some(chunk) = stream.next().await {
        complete += usize::from(framing.accept(chunk?)?.last);
    }
    framing.finish()?;
    assert_eq!(complete, hashes.len());
    Ok(start.elapsed())
}

/// A worker that answers every TrainFold with one checkpoint of the given bytes.
struct CheckpointWorker {
    bytes: Arc<Vec<u8>>,
}

#[tonic::async_trait]
impl Worker for CheckpointWorker {
    type TrainFoldStream = ReceiverStream<Result<pb::FoldEvent, tonic::Status>>;
    type PredictShardStream = ReceiverStream<Result<pb::ShardEvent, tonic::Status>>;

    async fn predict_shard(
        &self,
        _: tonic::Request<pb::ShardTask>,
    ) -> Result<tonic::Response<Self::PredictShardStream>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the benchmark worker only trains",
        ))
    }

    async fn train_fold(
        &self,
        request: tonic::Request<pb::FoldTask>,
    ) -> Result<tonic::Response<Self::TrainFoldStream>, tonic::Status> {
        let task = FoldTask::try_from(request.into_inner())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        let bytes = self.bytes.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let events = [
                FoldEvent::Checkpoint {
                    kind: CheckpointKind::Latest,
                    epoch: 1,
                    bytes: bytes.to_vec(),
                },
                FoldEvent::Done(FoldSummary {
                    best_epoch: 1,
                    best_val_loss: 1.0,
                    epochs_run: 1,
                    early_stopped: false,
                }),
            ];
            for event in &events {
                for wire in encode_fold_event(&task.job_id, task.fold, task.attempt, event) {
                    if tx.send(Ok(wire)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

async fn checkpoint_stream(payload: &[u8]) -> AnyResult<Duration> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let service = WorkerServer::new(CheckpointWorker {
        bytes: Arc::new(payload.to_vec()),
    })
    .max_encoding_message_size(MAX_MESSAGE_SIZE);
    tokio::spawn(
        tonic::transport::Server::builder()
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let target = SlotTarget {
        worker: WorkerId::new("bench"),
        address: format!("http://{addr}"),
        call_token: Default::default(),
        slot: 0,
        device_index: -1,
    };
    let image = ImageRef {
        hash: BlobHash::of(b"x"),
        name: "x.jpg".into(),
        label: Some(0),
        group: String::new(),
        size: 1,
    };
    let task = FoldTask {
        job_id: JobId::new("bench"),
        fold: FoldIndex(0),
        attempt: AttemptId(1),
        config: JobConfig::default(),
        class_names: vec!["a".into(), "b".into()],
        train: vec![image.clone()],
        val: vec![image.clone()],
        test: vec![image],
        resume: None,
        pretrained: None,
        device_index: None,
    };
    let start = Instant::now();
    let mut events = GrpcLauncher::new().launch(&target, task);
    let mut received = 0;
    while let Some(event) = events.next().await {
        match event? {
            FoldEvent::Checkpoint { bytes, .. } => received = bytes.len(),
            FoldEvent::Done(_) => break,
            other => return Err(format!("unexpected event {other:?}").into()),
        }
    }
    assert_eq!(received, payload.len());
    Ok(start.elapsed())
}

/// Submits `jobs` jobs of 5 folds to a coordinator whose virtual worker trains instantly:
/// all the wall time is the coordinator's (store, dispatch, aggregation, artifacts).
async fn overhead(
    client: &Client,
    scheduler: &foldtrain_coordinator::scheduler::Scheduler,
    jobs: usize,
) -> AnyResult<()> {
    let (classes, train, test) = manifest(1000, 200);
    let blobs: Vec<Vec<u8>> = train
        .iter()
        .chain(&test)
        .map(|i| i.name.as_bytes().to_vec())
        .collect();
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    let hashes: Vec<BlobHash> = refs.iter().map(|b| BlobHash::of(b)).collect();
    upload(client, &refs, &hashes).await?;
    // One virtual worker with a slot per fold; it "trains" each fold instantly.
    client
        .rpc()
        .register_worker(pb::RegisterWorkerRequest {
            worker_id: "virtual".into(),
            address: "virtual".into(),
            slots: (0..5)
                .map(|i| pb::Slot {
                    device_index: i,
                    device_name: format!("virtual:{i}"),
                })
                .collect(),
            hostname: "bench".into(),
            call_token: "virtual-call-token".into(),
        })
        .await?;
    let mut config = JobConfig::default();
    config.split.folds = 5;
    let mut walls = Vec::new();
    for _ in 0..jobs {
        let start = Instant::now();
        let id = client
            .rpc()
            .submit_job(pb::SubmitJobRequest {
                config: Some(pb::JobConfig {
                    toml: config.to_toml(),
                }),
                class_names: classes.clone(),
                train: train.iter().map(pb::ImageRef::from).collect(),
                test: test.iter().map(pb::ImageRef::from).collect(),
                name: "overhead".into(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .job_id;
        let state = scheduler.wait_job(&JobId::new(id)).await?;
        walls.push(start.elapsed());
        assert_eq!(state, JobState::Succeeded);
    }
    let mean = walls.iter().map(Duration::as_secs_f64).sum::<f64>() / walls.len() as f64;
    let min = walls
        .iter()
        .min()
        .copied()
        .unwrap_or_default()
        .as_secs_f64();
    println!(
        "coordinator overhead per job (5 folds, 1000 train + 200 test rows, instant folds): \
         mean {:.1} ms, min {:.1} ms over {jobs} jobs",
        mean * 1e3,
        min * 1e3
    );
    Ok(())
}

fn manifest(train: usize, test: usize) -> (Vec<String>, Vec<ImageRef>, Vec<ImageRef>) {
    let classes: Vec<String> = (0..14).map(|c| format!("class-{c:02}")).collect();
    let image = |name: String, label: Option<u32>| ImageRef {
        hash: BlobHash::of(name.as_bytes()),
        size: name.len() as u64,
        name,
        label,
        group: String::new(),
    };
    // Imbalanced like Kvasir-Capsule, with every class present at least 5 times.
    let train = (0..train)
        .map(|i| {
            let label = if i % 4 == 0 { (i / 4 % 14) as u32 } else { 0 };
            image(format!("train/{i:05}.jpg"), Some(label))
        })
        .collect();
    let test = (0..test)
        .map(|i| image(format!("test/{i:05}.jpg"), None))
        .collect();
    (classes, train, test)
}
