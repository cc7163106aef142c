//! The gRPC launcher against an in-process fake worker over loopback: chunk reassembly,
//! auth and trace-context metadata, stale events, refusals, unreachable workers, and
//! workers whose streams never end.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foldtrain_proto::pb::worker_server::{Worker, WorkerServer};
use foldtrain_proto::task::{CheckpointKind, EpochRecord, FoldSummary};
use foldtrain_proto::wire_events::encode_fold_event;
use foldtrain_proto::{
    AttemptId, BlobHash, CHUNK_SIZE, FoldEvent, FoldIndex, FoldTask, ImageRef, JobConfig, JobId,
    WorkerId, pb,
};
use futures::{Stream, StreamExt};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use super::*;
use crate::error::CoordinatorError;
use crate::scheduler::CallToken;

#[derive(Clone, Copy)]
enum Mode {
    Honest,
    WrongAttempt,
    Refuse,
    /// One checkpoint whose chunks never end.
    EndlessPayload,
    /// A new unfinished checkpoint every message, one epoch after another.
    EndlessOpenPayloads,
}

#[derive(Clone)]
struct FakeWorker {
    mode: Mode,
    /// (authorization, traceparent) of each call.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    /// Messages the endless modes produced so far.
    sent: Arc<AtomicUsize>,
}

impl FakeWorker {
    /// Checkpoint chunks without end: message `i` is `chunk(i)` of epoch `epoch(i)`.
    fn endless(
        &self,
        task: &FoldTask,
        epoch: fn(u64) -> u32,
        chunk: fn(u64) -> pb::Chunk,
    ) -> <Self as Worker>::TrainFoldStream {
        let (job_id, fold, attempt) = (task.job_id.to_string(), task.fold.0, task.attempt.0);
        let sent = self.sent.clone();
        Box::pin(futures::stream::iter(0u64..).map(move |i| {
            sent.fetch_add(1, Ordering::SeqCst);
            Ok(pb::FoldEvent {
                job_id: job_id.clone(),
                fold,
                attempt,
                event: Some(pb::fold_event::Event::Checkpoint(pb::CheckpointChunk {
                    kind: pb::CheckpointKind::Latest as i32,
                    epoch: epoch(i),
                    chunk: Some(chunk(i)),
                })),
            })
        }))
    }
}

fn big_checkpoint() -> Vec<u8> {
    (0..(2 * foldtrain_proto::CHUNK_SIZE + 17))
        .map(|i| (i % 241) as u8)
        .collect()
}

#[tonic::async_trait]
impl Worker for FakeWorker {
    type TrainFoldStream = Pin<Box<dyn Stream<Item = Result<pb::FoldEvent, Status>> + Send>>;
    type PredictShardStream = Pin<Box<dyn Stream<Item = Result<pb::ShardEvent, Status>> + Send>>;

    async fn predict_shard(
        &self,
        _: Request<pb::ShardTask>,
    ) -> Result<Response<Self::PredictShardStream>, Status> {
        Err(Status::unimplemented("the fake worker only trains"))
    }

    async fn train_fold(
        &self,
        request: Request<pb::FoldTask>,
    ) -> Result<Response<Self::TrainFoldStream>, Status> {
        let header = |k: &str| {
            request
                .metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        self.seen
            .lock()
            .unwrap()
            .push((header("authorization"), header("traceparent")));
        if let Mode::Refuse = self.mode {
            return Err(Status::invalid_argument("train: no training images"));
        }
        let task = FoldTask::try_from(request.into_inner())?;
        match self.mode {
            Mode::EndlessPayload => {
                return Ok(Response::new(self.endless(
                    &task,
                    |_| 1,
                    |i| unfinished(i * CHUNK_SIZE as u64, CHUNK_SIZE),
                )));
            }
            Mode::EndlessOpenPayloads => {
                return Ok(Response::new(self.endless(
                    &task,
                    |i| i as u32,
                    |_| unfinished(0, 10),
                )));
            }
            _ => {}
        }
        let attempt = match self.mode {
            Mode::WrongAttempt => AttemptId(task.attempt.0 + 1),
            _ => task.attempt,
        };
        let events = [
            FoldEvent::Epoch(EpochRecord {
                epoch: 1,
                val_loss: 0.5,
                ..Default::default()
            }),
            FoldEvent::Checkpoint {
                kind: CheckpointKind::Best,
                epoch: 1,
                bytes: big_checkpoint(),
            },
            FoldEvent::Test {
                rows: 1,
                classes: 2,
                probs: vec![0.25, 0.75],
            },
            FoldEvent::Done(FoldSummary {
                best_epoch: 1,
                best_val_loss: 0.5,
                epochs_run: 1,
                early_stopped: false,
            }),
        ];
        let wire: Vec<Result<pb::FoldEvent, Status>> = events
            .iter()
            .flat_map(|e| encode_fold_event(&task.job_id, task.fold, attempt, e))
            .map(Ok)
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(wire))))
    }
}

/// A chunk of `len` zeros at `offset` that is not its payload's last.
fn unfinished(offset: u64, len: usize) -> pb::Chunk {
    pb::Chunk {
        offset,
        data: vec![0; len],
        ..Default::default()
    }
}

/// Serves a fake worker on loopback; returns its address and a handle on what it saw.
async fn fake_worker(mode: Mode) -> (String, FakeWorker) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let worker = FakeWorker {
        mode,
        seen: Arc::new(Mutex::new(Vec::new())),
        sent: Arc::new(AtomicUsize::new(0)),
    };
    tokio::spawn(
        Server::builder()
            .add_service(WorkerServer::new(worker.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (format!("http://{addr}"), worker)
}

fn task() -> FoldTask {
    let image = |name: &str, label| ImageRef {
        hash: BlobHash::of(name.as_bytes()),
        name: name.into(),
        label,
        group: String::new(),
        size: 1,
    };
    FoldTask {
        job_id: JobId::new("job-g"),
        fold: FoldIndex(1),
        attempt: AttemptId(41),
        config: JobConfig::default(),
        class_names: vec!["a".into(), "b".into()],
        train: vec![image("t.jpg", Some(0))],
        val: vec![image("v.jpg", Some(1))],
        test: vec![image("x.jpg", None)],
        resume: None,
        pretrained: None,
        device_index: Some(0),
    }
}

fn target(address: String) -> SlotTarget {
    SlotTarget {
        worker: WorkerId::new("fake"),
        address,
        call_token: CallToken::new("tok"),
        slot: 0,
        device_index: 0,
    }
}

async fn collect(stream: FoldEventStream) -> Vec<Result<FoldEvent, CoordinatorError>> {
    stream.collect().await
}

#[tokio::test]
async fn events_arrive_whole_with_auth_and_trace_context() {
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // Single-threaded runtime: the default subscriber covers the spawned pump too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let (address, fake) = fake_worker(Mode::Honest).await;
    let launcher = GrpcLauncher::new();
    let span = tracing::info_span!("fold_attempt");
    let trace_id = span.context().span().span_context().trace_id();
    let stream = span.in_scope(|| launcher.launch(&target(address), task()));
    let events: Vec<FoldEvent> = collect(stream)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(events.len(), 4);
    assert!(
        matches!(&events[1], FoldEvent::Checkpoint { bytes, .. } if *bytes == big_checkpoint())
    );
    assert!(matches!(&events[2], FoldEvent::Test { probs, .. } if *probs == vec![0.25, 0.75]));
    let seen = fake.seen.lock().unwrap().clone();
    assert_eq!(seen[0].0, "Bearer tok");
    assert!(
        seen[0].1.contains(&trace_id.to_string()),
        "traceparent {:?} lacks {trace_id}",
        seen[0].1
    );
}

#[tokio::test]
async fn events_of_another_attempt_are_rejected() {
    let (address, _) = fake_worker(Mode::WrongAttempt).await;
    let events = collect(GrpcLauncher::new().launch(&target(address), task())).await;
    assert_eq!(events.len(), 1);
    let err = events.into_iter().next().unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            CoordinatorError::StaleAttempt {
                attempt: AttemptId(42),
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_refused_task_is_a_permanent_failure() {
    let (address, _) = fake_worker(Mode::Refuse).await;
    let events = collect(GrpcLauncher::new().launch(&target(address), task())).await;
    match &events[..] {
        [Ok(FoldEvent::Failed(f))] => {
            assert!(!f.retryable());
            assert!(
                f.message.contains("worker fake rejected the task")
                    && f.message.contains("no training images")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_worker_is_lost_not_failed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let events = collect(GrpcLauncher::new().launch(&target(address), task())).await;
    let err = events.into_iter().next().unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(
        err.to_string().starts_with("worker fake: cannot connect"),
        "{err}"
    );
}

/// Waits until the fake worker stops producing: the launcher has dropped its stream.
async fn settled(sent: &AtomicUsize) -> usize {
    let mut last = sent.load(Ordering::SeqCst);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("the worker's stream was never cancelled: {last} messages and counting");
}

#[tokio::test]
async fn a_payload_that_never_ends_fails_the_attempt_at_the_limit() {
    let (address, fake) = fake_worker(Mode::EndlessPayload).await;
    let limit = 8 * CHUNK_SIZE as u64;
    let launcher = GrpcLauncher::new().with_payload_limits(limit, MAX_OPEN_PAYLOADS);
    let events = collect(launcher.launch(&target(address), task())).await;
    let [Err(err)] = &events[..] else {
        panic!("expected one error, got {events:?}");
    };
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "worker fake: stream over its limits: the latest checkpoint of epoch 1 ({} bytes \
             received so far) exceeds the {limit}-byte limit on one payload",
            limit + CHUNK_SIZE as u64
        )
    );
    // The call was cancelled: the worker stopped after what the flow-control windows
    // (8 MiB per stream, 32 MiB per connection) and the channels let it run ahead.
    let sent = settled(&fake.sent).await;
    assert!((9..=64).contains(&sent), "{sent} chunks sent");
}

#[tokio::test]
async fn payloads_begun_without_end_fail_the_attempt_at_the_limit() {
    let (address, fake) = fake_worker(Mode::EndlessOpenPayloads).await;
    let events = collect(GrpcLauncher::new().launch(&target(address), task())).await;
    let [Err(err)] = &events[..] else {
        panic!("expected one error, got {events:?}");
    };
    assert_eq!(
        err.to_string(),
        "worker fake: stream over its limits: the latest checkpoint of epoch 4, begun while 4 \
         other payloads were unfinished (the latest checkpoint of epoch 0, the latest \
         checkpoint of epoch 1, the latest checkpoint of epoch 2, the latest checkpoint of \
         epoch 3) exceeds the limit of 4 unfinished payloads at once"
    );
    assert!(settled(&fake.sent).await > MAX_OPEN_PAYLOADS);
}
