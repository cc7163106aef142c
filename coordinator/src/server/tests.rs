//! The gRPC server over loopback: status codes, authentication, blob verification,
//! message limits, and a whole job from upload to downloaded results.

use std::sync::Arc;
use std::time::Duration;

use foldtrain_proto::pb::coordinator_client::CoordinatorClient;
use foldtrain_proto::{BlobHash, CHUNK_SIZE, FoldState, JobConfig, JobState, pb};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::*;
use crate::config::ServeConfig;
use crate::scheduler::VirtualLauncher;

pub(super) struct TestServer {
    pub(super) dir: TempDir,
    pub(super) handle: ServerHandle,
    _stop: oneshot::Sender<()>,
}

async fn serve(token: Option<&str>, max_message_size: usize) -> TestServer {
    serve_with(ServeConfig {
        token: token.map(String::from),
        max_message_size,
        ..ServeConfig::default()
    })
    .await
}

/// A server on loopback port 0 and a fresh data directory, otherwise as `config` says.
pub(super) async fn serve_with(config: ServeConfig) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..config
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = start_with_launcher(config, Arc::new(VirtualLauncher::default()), async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    assert_ne!(handle.local_addr().port(), 0);
    TestServer {
        dir,
        handle,
        _stop: stop,
    }
}

#[derive(Clone)]
pub(super) struct Token(Option<String>);

impl Interceptor for Token {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        Ok(request)
    }
}

pub(super) type Client = CoordinatorClient<InterceptedService<Channel, Token>>;

pub(super) async fn client(server: &TestServer, token: Option<&str>) -> Client {
    let channel = Channel::from_shared(server.handle.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    CoordinatorClient::with_interceptor(channel, Token(token.map(String::from)))
        .max_decoding_message_size(foldtrain_proto::MAX_MESSAGE_SIZE)
        .max_encoding_message_size(foldtrain_proto::MAX_MESSAGE_SIZE)
}

pub(super) fn chunks_of(bytes: &[u8], hash: BlobHash) -> Vec<pb::BlobChunk> {
    foldtrain_proto::blob_chunks::chunks(hash, bytes).collect()
}

pub(super) async fn missing(c: &mut Client, hashes: &[BlobHash]) -> Vec<Vec<u8>> {
    c.missing_blobs(pb::MissingBlobsRequest {
        hashes: hashes.iter().map(|h| h.0.to_vec()).collect(),
    })
    .await
    .unwrap()
    .into_inner()
    .missing
}

#[tokio::test]
async fn unknown_jobs_are_not_found() {
    let server = serve(None, foldtrain_proto::MAX_MESSAGE_SIZE).await;
    let mut c = client(&server, None).await;
    let status = c
        .get_job(pb::GetJobRequest {
            job_id: "job-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "unknown job job-nope");
    let status = c
        .download_artifact(pb::DownloadArtifactRequest {
            job_id: "job-nope".into(),
            path: "predictions.csv".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    let status = c.get_job(pb::GetJobRequest::default()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("job_id"), "{}", status.message());
}

#[tokio::test]
async fn every_rpc_needs_the_token() {
    let server = serve(Some("s3cret"), foldtrain_proto::MAX_MESSAGE_SIZE).await;
    for token in [None, Some("wrong"), Some("s3cret2")] {
        let mut c = client(&server, token).await;
        let status = c.list_jobs(pb::ListJobsRequest {}).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{token:?}");
        let status = c
            .register_worker(pb::RegisterWorkerRequest {
                worker_id: "w".into(),
                address: "http://x".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    let mut c = client(&server, Some("s3cret")).await;
    assert!(
        c.list_jobs(pb::ListJobsRequest {})
            .await
            .unwrap()
            .into_inner()
            .jobs
            .is_empty()
    );
}

#[tokio::test]
async fn blobs_are_verified_before_they_become_visible() {
    let server = serve(None, foldtrain_proto::MAX_MESSAGE_SIZE).await;
    let mut c = client(&server, None).await;
    let data: Vec<u8> = (0..(2 * CHUNK_SIZE + 1000))
        .map(|i| (i % 253) as u8)
        .collect();
    let hash = BlobHash::of(&data);
    assert_eq!(missing(&mut c, &[hash]).await, vec![hash.0.to_vec()]);

    // A stream whose bytes do not match the hash it claims.
    let mut corrupted = chunks_of(&data, hash);
    corrupted[1].data[7] ^= 1;
    let status = c
        .upload_blobs(tokio_stream::iter(corrupted))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let mut tampered = data.clone();
    tampered[CHUNK_SIZE + 7] ^= 1;
    let expected = format!(
        "blob hash mismatch: expected {hash}, got {}",
        BlobHash::of(&tampered)
    );
    assert_eq!(status.message(), expected);
    assert_eq!(
        missing(&mut c, &[hash]).await.len(),
        1,
        "a rejected blob became visible"
    );
    assert_eq!(
        std::fs::read_dir(server.dir.path().join("blobs/tmp"))
            .unwrap()
            .count(),
        0
    );

    let response = c
        .upload_blobs(tokio_stream::iter(chunks_of(&data, hash)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.blobs, response.bytes), (1, data.len() as u64));
    assert!(missing(&mut c, &[hash]).await.is_empty());

    let mut stream = c
        .download_blobs(pb::DownloadBlobsRequest {
            hashes: vec![hash.0.to_vec()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut back = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(chunk.data.len() <= CHUNK_SIZE);
        assert_eq!(chunk.offset, back.len() as u64);
        back.extend(chunk.data);
    }
    assert_eq!(back, data);

    let oversized = pb::BlobChunk {
        hash: hash.0.to_vec(),
        offset: 0,
        data: vec![0; CHUNK_SIZE + 1],
        last: true,
    };
    let status = c
        .upload_blobs(tokio_stream::iter([oversized]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("exceeds the 1048576-byte limit"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let server = serve(None, 2 * 1024 * 1024).await;
    let mut c = client(&server, None).await;
    let hashes = (0..100_000u32)
        .map(|i| BlobHash::of(&i.to_le_bytes()).0.to_vec())
        .collect();
    let status = c
        .missing_blobs(pb::MissingBlobsRequest { hashes })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "{}",
        status.message()
    );
    // The server is still fine afterwards.
    assert!(missing(&mut c, &[]).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_from_upload_to_downloaded_results() {
    let server = serve(None, foldtrain_proto::MAX_MESSAGE_SIZE).await;
    let mut c = client(&server, None).await;
    let images: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("img{i}.jpg"), format!("bytes {i}").into_bytes()))
        .collect();
    let refs: Vec<pb::ImageRef> = images
        .iter()
        .enumerate()
        .map(|(i, (name, bytes))| pb::ImageRef {
            hash: BlobHash::of(bytes).0.to_vec(),
            name: name.clone(),
            label: (i < 15).then_some((i % 3) as u32),
            group: String::new(),
            size: bytes.len() as u64,
        })
        .collect();
    let mut config = JobConfig::default();
    config.split.folds = 3;
    config.train.epochs = 2;
    let request = pb::SubmitJobRequest {
        config: Some(pb::JobConfig {
            toml: config.to_toml(),
        }),
        class_names: vec!["a".into(), "b".into(), "c".into()],
        train: refs[..15].to_vec(),
        test: refs[15..].to_vec(),
        name: "demo".into(),
        ..Default::default()
    };

    let status = c.submit_job(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("20 images not uploaded yet"),
        "{}",
        status.message()
    );

    let uploads: Vec<pb::BlobChunk> = images
        .iter()
        .flat_map(|(_, b)| chunks_of(b, BlobHash::of(b)))
        .collect();
    assert_eq!(
        c.upload_blobs(tokio_stream::iter(uploads))
            .await
            .unwrap()
            .into_inner()
            .blobs,
        20
    );

    let mut bad = request.clone();
    bad.config = Some(pb::JobConfig {
        toml: "[train]\nepochs = 0\n".into(),
    });
    let status = c.submit_job(bad).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("train.epochs"),
        "{}",
        status.message()
    );

    let job = c.submit_job(request).await.unwrap().into_inner().job_id;
    // Acknowledged means committed: a separate connection already sees the job.
    let other = rusqlite::Connection::open(server.dir.path().join("state.sqlite")).unwrap();
    let stored: String = other
        .query_row("SELECT name FROM jobs WHERE id = ?1", [&job], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, "demo");

    let mut watch = c
        .watch_job(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    c.register_worker(pb::RegisterWorkerRequest {
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
    let mut last = None;
    let mut epochs_seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Some(update) = tokio::time::timeout_at(deadline, watch.message())
        .await
        .unwrap()
        .unwrap()
    {
        epochs_seen += usize::from(update.epoch.is_some());
        last = update.status;
    }
    let last = last.unwrap();
    assert_eq!(last.state(), JobState::Succeeded, "{}", last.message);
    assert_eq!(epochs_seen, 6, "3 folds x 2 epochs");
    assert!(last.summary_json.contains("macro_f1"));
    assert_eq!(last.folds.len(), 3);
    assert!(
        last.folds
            .iter()
            .all(|f| f.state() == FoldState::Done && f.attempts.len() == 1)
    );

    let paths = c
        .list_artifacts(pb::GetJobRequest {
            job_id: job.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .paths;
    for expected in [
        "predictions.csv",
        "probabilities.csv",
        "oof.csv",
        "metrics.json",
        "folds/2/best.safetensors",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} not in {paths:?}"
        );
    }
    let mut stream = c
        .download_artifact(pb::DownloadArtifactRequest {
            job_id: job.clone(),
            path: "predictions.csv".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend(chunk.data);
    }
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "filename,label");
    assert_eq!(lines.len(), 6);
    assert!(lines[1].starts_with("img15.jpg,"));

    let workers = c
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(workers.len(), 1);
    assert!(workers[0].alive && workers[0].busy_slots == 0);
    let known = c
        .heartbeat(pb::HeartbeatRequest {
            worker_id: "stranger".into(),
            busy_slots: 0,
            draining: false,
            call_token: "stranger-token".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .known;
    assert!(!known);
}
