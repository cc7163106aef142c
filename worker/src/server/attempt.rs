//! One fold attempt on this worker: fetch the blobs it lacks, train on a dedicated
//! thread, and forward every event, chunked, into the `TrainFold` response stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use foldtrain_proto::runtime::panic_message;
use foldtrain_proto::task::{FoldFailure, FoldSummary};
use foldtrain_proto::wire_events::encode_fold_event;
use foldtrain_proto::{AttemptId, BlobHash, FoldEvent, FoldIndex, FoldTask, JobId, pb};
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use super::WorkerError;
use super::fetch::{Wanted, fetch_missing};
use super::metrics::AttemptMetrics;
use super::service::Shared;
use super::slots::SlotLease;
use crate::data::HashDirSource;
use crate::train::{EventSink, FoldControl, SinkClosed, TrainError, spawn_fold};

pub type EventSender = mpsc::Sender<Result<pb::FoldEvent, Status>>;

/// Everything one accepted attempt needs.
pub struct Attempt {
    pub task: FoldTask,
    pub resume_blob: Option<BlobHash>,
    pub lease: SlotLease,
    pub control: Arc<FoldControl>,
    pub tx: EventSender,
}

/// The training thread's view of the response stream. Blocks while the stream is full,
/// so checkpoints are never dropped and memory stays bounded.
struct WireSink {
    tx: EventSender,
    job: JobId,
    fold: FoldIndex,
    attempt: AttemptId,
    lease: Option<SlotLease>,
    stopping: Arc<AtomicBool>,
    metrics: AttemptMetrics,
}

impl WireSink {
    fn new(shared: &Shared, task: &FoldTask, lease: SlotLease, tx: EventSender) -> Self {
        let metrics =
            shared
                .metrics
                .attempt(lease.slot(), task.config.train.batch_size, task.train.len());
        Self {
            tx,
            job: task.job_id.clone(),
            fold: task.fold,
            attempt: task.attempt,
            lease: Some(lease),
            stopping: shared.stopping.clone(),
            metrics,
        }
    }
}

impl EventSink for WireSink {
    fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
        // A worker whose drain ran out of time ends its streams without a verdict, so
        // the coordinator counts the attempt as lost and retries it elsewhere. (A
        // draining fold still sends its checkpoint and verdict through here.)
        if self.stopping.load(Ordering::Relaxed) {
            return Err(SinkClosed);
        }
        self.metrics.observe(&event);
        if matches!(event, FoldEvent::Done(_) | FoldEvent::Failed(_)) {
            // run_fold sends its verdict after the model and optimizer are dropped: the
            // slot is free now, and must be before the coordinator hears of it, since
            // it may dispatch the next fold to this slot at once.
            self.lease = None;
        }
        for wire in encode_fold_event(&self.job, self.fold, self.attempt, &event) {
            self.tx.blocking_send(Ok(wire)).map_err(|_| SinkClosed)?;
        }
        Ok(())
    }
}

/// The blobs of every image of the task, of its pretrained weights, and of the resume
/// checkpoint when it comes by reference.
fn wanted(task: &FoldTask, resume_blob: Option<BlobHash>) -> Vec<Wanted> {
    let images = task.train.iter().chain(&task.val).chain(&task.test);
    let mut wanted: Vec<Wanted> = images
        .map(|i| Wanted {
            hash: i.hash,
            name: i.name.clone(),
        })
        .collect();
    if let Some(hash) = task.config.model.pretrained {
        wanted.push(Wanted {
            hash,
            name: format!("pretrained weights (model.pretrained = blake3:{hash})"),
        });
    }
    if let Some(hash) = resume_blob {
        wanted.push(Wanted {
            hash,
            name: format!("resume checkpoint of fold {}", task.fold),
        });
    }
    wanted
}

async fn send_failure(
    tx: &EventSender,
    (job, fold, attempt): &(JobId, FoldIndex, AttemptId),
    failure: FoldFailure,
) {
    for wire in encode_fold_event(job, *fold, *attempt, &FoldEvent::Failed(failure)) {
        if tx.send(Ok(wire)).await.is_err() {
            return;
        }
    }
}

/// Runs the attempt to its end; every outcome reaches the caller as an event or status.
pub async fn run_attempt(shared: Arc<Shared>, attempt: Attempt) {
    let Attempt {
        task,
        resume_blob,
        lease,
        control,
        tx,
    } = attempt;
    // The caller dropping the stream (an abandoned attempt) stops training.
    let watcher = cancel_when_closed(&tx, &control);
    let ids = (task.job_id.clone(), task.fold, task.attempt);
    if let Err(e) = train(&shared, task, resume_blob, lease, &control, &tx).await {
        warn!(error = %e, "fold attempt failed before training");
        foldtrain_proto::runtime::telemetry::mark_span_failed(&tracing::Span::current(), &e);
        send_failure(&tx, &ids, e.to_failure()).await;
    }
    watcher.abort();
}

async fn train(
    shared: &Arc<Shared>,
    mut task: FoldTask,
    resume_blob: Option<BlobHash>,
    lease: SlotLease,
    control: &Arc<FoldControl>,
    tx: &EventSender,
) -> Result<(), WorkerError> {
    let started = Instant::now();
    fetch_inputs(shared, &mut task, resume_blob).await?;
    let source = Arc::new(HashDirSource::new(shared.cache.dir()));
    let sink = WireSink::new(shared, &task, lease, tx.clone());
    let thread = spawn_fold(task, source, sink, control.clone(), shared.run_options)
        .map_err(|e| internal("starting the training thread", e))?;
    let joined = tokio::task::spawn_blocking(move || thread.join())
        .await
        .map_err(|e| internal("waiting for the training thread", e))?;
    let outcome =
        joined.map_err(|panic| internal("the training thread", panic_message(panic.as_ref())))?;
    report_outcome(shared, outcome, started, tx).await;
    Ok(())
}

/// Downloads the blobs the task lacks and puts the resume checkpoint and the pretrained
/// weights into it.
async fn fetch_inputs(
    shared: &Arc<Shared>,
    task: &mut FoldTask,
    resume_blob: Option<BlobHash>,
) -> Result<(), WorkerError> {
    let started = Instant::now();
    let mut client = shared.client.clone();
    let downloaded = fetch_missing(
        &mut client,
        &shared.coordinator_url,
        &shared.cache,
        wanted(task, resume_blob),
    )
    .await?;
    info!(
        downloaded,
        seconds = started.elapsed().as_secs_f64(),
        "blobs ready"
    );
    if let Some(hash) = resume_blob {
        let cache = shared.cache.clone();
        let bytes = tokio::task::spawn_blocking(move || cache.read(&hash))
            .await
            .map_err(|e| internal("reading the resume checkpoint", e))??;
        task.resume = Some(bytes);
    }
    if let Some(hash) = task.config.model.pretrained {
        let cache = shared.cache.clone();
        let bytes = tokio::task::spawn_blocking(move || cache.read(&hash))
            .await
            .map_err(|e| internal("reading the pretrained weights", e))??;
        task.pretrained = Some(bytes);
    }
    Ok(())
}

/// Logs how training ended. The fold's own events already told the caller, except when
/// the worker's drain ran out of time: then the stream ends as unavailable, so the
/// attempt counts as lost and is retried elsewhere.
async fn report_outcome(
    shared: &Shared,
    outcome: Result<FoldSummary, TrainError>,
    started: Instant,
    tx: &EventSender,
) {
    match outcome {
        Ok(summary) => info!(
            best_epoch = summary.best_epoch,
            epochs_run = summary.epochs_run,
            seconds = started.elapsed().as_secs_f64(),
            "fold done"
        ),
        Err(e) if shared.stopping.load(Ordering::Relaxed) => {
            info!(error = %e, "fold stopped: the worker is shutting down");
            let _ = tx
                .send(Err(Status::unavailable(format!(
                    "worker {} is shutting down",
                    shared.worker_id
                ))))
                .await;
        }
        // run_fold has already sent the failure, or the caller is gone.
        Err(TrainError::SinkClosed(_)) => info!("fold stopped: the caller went away"),
        Err(e @ TrainError::Drained { .. }) => info!(
            seconds = started.elapsed().as_secs_f64(),
            "{e}; the coordinator resumes it elsewhere"
        ),
        Err(e) => info!(cause = e.cause().as_str(), "fold failed"),
    }
}

/// Cancels `control` once the caller drops the response stream behind `tx`; abort the
/// returned task when the work ends first.
pub fn cancel_when_closed<T: Send + 'static>(
    tx: &mpsc::Sender<T>,
    control: &Arc<FoldControl>,
) -> tokio::task::JoinHandle<()> {
    let (tx, control) = (tx.clone(), control.clone());
    tokio::spawn(async move {
        tx.closed().await;
        control.cancel();
    })
}

fn internal(what: &'static str, e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Internal {
        what,
        message: e.to_string(),
    }
}
