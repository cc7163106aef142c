//! The `Worker` gRPC service: checks a `TrainFold` request (task, slot) up front, then
//! runs the attempt in the background and streams its events back.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use foldtrain_proto::runtime::propagation::adopt_trace_context;
use foldtrain_proto::runtime::telemetry::mark_span_failed;
use foldtrain_proto::{BlobHash, FoldTask, ProtoError, pb};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, field, info, info_span};

use super::WorkerError;
use super::attempt::{Attempt, run_attempt};
use super::cache::BlobCache;
use super::client::Coordinator;
use super::metrics::WorkerMetrics;
use super::slots::SlotTable;
use crate::train::RunOptions;

/// What every attempt and the registration loop share.
pub struct Shared {
    pub worker_id: String,
    pub coordinator_url: String,
    pub client: Coordinator,
    pub slots: SlotTable,
    pub cache: Arc<BlobCache>,
    pub run_options: RunOptions,
    /// Set once shutdown begins: no new attempts, running ones end as lost.
    pub stopping: Arc<AtomicBool>,
    /// Counted from every attempt's events; served when `--metrics-listen` is set.
    pub metrics: WorkerMetrics,
}

impl Shared {
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.slots.cancel_all();
    }
}

/// Events buffered per attempt; a full buffer blocks the training thread.
const STREAM_BUFFER: usize = 16;

#[derive(Clone)]
pub struct WorkerService {
    shared: Arc<Shared>,
}

impl WorkerService {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::FoldEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    type TrainFoldStream = EventStream;

    async fn train_fold(
        &self,
        request: Request<pb::FoldTask>,
    ) -> Result<Response<Self::TrainFoldStream>, Status> {
        let shared = &self.shared;
        if shared.stopping.load(Ordering::Relaxed) {
            return Err(Status::unavailable(format!(
                "worker {} is shutting down",
                shared.worker_id
            )));
        }
        let (metadata, _, wire) = request.into_parts();
        let resume_blob = match wire.resume_blob.as_slice() {
            [] => None,
            bytes => Some(BlobHash::from_slice(bytes).map_err(|_| {
                WorkerError::Task(ProtoError::invalid(
                    "resume_blob",
                    format!("expected 32 bytes, got {}", bytes.len()),
                ))
            })?),
        };
        let device_index = wire.device_index;
        let task = FoldTask::try_from(wire).map_err(WorkerError::from)?;
        let span = info_span!(
            "train_fold",
            job = %task.job_id,
            fold = task.fold.0,
            attempt = task.attempt.0,
            worker = %shared.worker_id,
            device = field::Empty,
        );
        // Before the span is first entered: a started span can no longer change parent.
        adopt_trace_context(&span, &metadata);
        let cancel = Arc::new(AtomicBool::new(false));
        let what = format!(
            "fold {} of job {} (attempt {})",
            task.fold, task.job_id, task.attempt
        );
        let lease = shared
            .slots
            .acquire(device_index, what, cancel.clone())
            .inspect_err(|e| {
                span.in_scope(|| info!(error = %e, "task refused"));
                mark_span_failed(&span, e);
            })?;
        span.record("device", lease.slot().name().as_str());
        span.in_scope(|| {
            info!(
                slot = %lease.slot().name(),
                train = task.train.len(),
                val = task.val.len(),
                test = task.test.len(),
                resume = task.resume.is_some() || resume_blob.is_some(),
                "fold accepted"
            )
        });
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let attempt = Attempt {
            task,
            resume_blob,
            lease,
            cancel,
            tx,
        };
        tokio::spawn(run_attempt(shared.clone(), attempt).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
