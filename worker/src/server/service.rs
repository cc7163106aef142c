//! The `Worker` gRPC service: checks a `TrainFold` request (task, slot) up front, then
//! runs the attempt in the background and streams its events back.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use foldtrain_proto::runtime::health::Health;
use foldtrain_proto::runtime::propagation::adopt_trace_context;
use foldtrain_proto::runtime::telemetry::mark_span_failed;
use foldtrain_proto::{BlobHash, FoldTask, ProtoError, ShardTask, pb};
use futures::Stream;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{Instrument, field, info, info_span, warn};

use super::WorkerError;
use super::attempt::{Attempt, run_attempt};
use super::cache::BlobCache;
use super::client::Coordinator;
use super::metrics::WorkerMetrics;
use super::shard::{EnsembleCache, ShardAttempt, run_shard};
use super::slots::SlotTable;
use crate::train::{FoldControl, RunOptions};

/// What every attempt and the registration loop share.
pub struct Shared {
    pub worker_id: String,
    /// The secret made for this run: the coordinator presents it on every call, and it
    /// goes with the registration and every heartbeat.
    pub call_token: String,
    pub coordinator_url: String,
    pub client: Coordinator,
    pub slots: SlotTable,
    pub cache: Arc<BlobCache>,
    pub run_options: RunOptions,
    /// Set once shutdown begins: no new attempts, and running ones hand their folds back
    /// with a checkpoint at the end of their current batch.
    pub draining: AtomicBool,
    /// Wakes the registration loop when draining begins, so the coordinator hears of it
    /// at once.
    pub drain_started: Notify,
    /// Set when draining ran out of time: running attempts end as lost.
    pub stopping: Arc<AtomicBool>,
    /// Counted from every attempt's events; served when `--metrics-listen` is set.
    pub metrics: WorkerMetrics,
    /// NOT_SERVING until registered, and again once draining begins.
    pub health: Health,
    /// Each slot's last ensemble, kept across the shards of a prediction.
    pub ensembles: EnsembleCache,
}

impl Shared {
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// New work is refused, as unavailable, once shutdown has begun.
    fn refuse_if_draining(&self) -> Result<(), Status> {
        if self.is_draining() {
            return Err(Status::unavailable(format!(
                "worker {} is shutting down",
                self.worker_id
            )));
        }
        Ok(())
    }

    /// Shutdown, step one: refuse new folds, tell the health service and the coordinator,
    /// and ask running folds to hand themselves back.
    pub async fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.health.set(false).await;
        self.drain_started.notify_one();
        let busy = self.slots.busy();
        info!(
            busy,
            "draining: running folds hand back a checkpoint at the end of their batch"
        );
        self.slots.drain_all();
    }

    /// Shutdown, step two, when draining took longer than `timeout`: stop what still runs.
    pub async fn stop_after(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
        let busy = self.slots.busy();
        if busy > 0 {
            warn!(
                busy,
                timeout_s = timeout.as_secs_f64(),
                "draining took too long; stopping the folds still running"
            );
        }
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
type ShardStream = Pin<Box<dyn Stream<Item = Result<pb::ShardEvent, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::worker_server::Worker for WorkerService {
    type TrainFoldStream = EventStream;
    type PredictShardStream = ShardStream;

    async fn predict_shard(
        &self,
        request: Request<pb::ShardTask>,
    ) -> Result<Response<Self::PredictShardStream>, Status> {
        let shared = &self.shared;
        shared.refuse_if_draining()?;
        let (metadata, _, wire) = request.into_parts();
        let device_index = wire.device_index;
        let task = ShardTask::try_from(wire).map_err(WorkerError::from)?;
        let span = info_span!(
            "predict_shard",
            run = %task.run_id,
            shard = task.shard,
            images = task.images.len(),
            worker = %shared.worker_id,
        );
        adopt_trace_context(&span, &metadata);
        let control = FoldControl::new();
        let what = format!("shard {} of prediction {}", task.shard, task.run_id);
        let lease = shared
            .slots
            .acquire(device_index, what, control.clone())
            .inspect_err(|e| span.in_scope(|| info!(error = %e, "shard refused")))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let attempt = ShardAttempt {
            task,
            lease,
            control,
            tx,
        };
        tokio::spawn(run_shard(shared.clone(), attempt).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn train_fold(
        &self,
        request: Request<pb::FoldTask>,
    ) -> Result<Response<Self::TrainFoldStream>, Status> {
        let shared = &self.shared;
        shared.refuse_if_draining()?;
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
        let control = FoldControl::new();
        let what = format!(
            "fold {} of job {} (attempt {})",
            task.fold, task.job_id, task.attempt
        );
        let lease = shared
            .slots
            .acquire(device_index, what, control.clone())
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
            control,
            tx,
        };
        tokio::spawn(run_attempt(shared.clone(), attempt).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
