//! The gRPC launcher against an in-process fake worker over loopback: chunk reassembly,
//! auth and trace-context metadata, stale events, refusals and unreachable workers.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use foldtrain_proto::pb::worker_server::{Worker, WorkerServer};
use foldtrain_proto::task::{CheckpointKind, EpochRecord, FoldSummary};
use foldtrain_proto::wire_events::encode_fold_event;
use foldtrain_proto::{
    AttemptId, BlobHash, FoldEvent, FoldIndex, FoldTask, ImageRef, JobConfig, JobId, WorkerId, pb,
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
}

#[derive(Clone)]
struct FakeWorker {
    mode: Mode,
    /// (authorization, traceparent) of each call.
    seen: Arc<Mutex<Vec<(String, String)>>>,
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

async fn fake_worker(mode: Mode) -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let worker = FakeWorker {
        mode,
        seen: seen.clone(),
    };
    tokio::spawn(
        Server::builder()
            .add_service(WorkerServer::new(worker))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (format!("http://{addr}"), seen)
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

    let (address, seen) = fake_worker(Mode::Honest).await;
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
    let seen = seen.lock().unwrap().clone();
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
