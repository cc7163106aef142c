//! One fold attempt from dispatch to outcome: start it on its slot, store what the worker
//! streams back, and say how it ended. What the outcome means for the job (retry, fail,
//! done) is the scheduler's decision, not the runner's.

use std::sync::Arc;
use std::time::Instant;

use foldtrain_proto::runtime::telemetry::mark_span_failed;
use foldtrain_proto::task::{CheckpointKind, EpochRecord, FoldFailure, FoldSummary};
use foldtrain_proto::{AttemptId, BlobHash, FailureCause, FoldEvent, FoldIndex, JobId};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use super::attempt_clock::AttemptClock;
use super::job_spec::fold_task;
use super::launcher::{FoldLauncher, SlotTarget};
use super::metrics::{CoordinatorMetrics, Direction};
use super::state::{FoldLive, StopReason};
use crate::error::{CoordinatorError, Result, run_blocking};
use crate::store::{
    self, AttemptRecord, AttemptState, JobRecord, ProbabilitySet, Store, StoredCheckpoint, now_ms,
};

/// A dispatch decided by the scheduler, ready to run.
pub(super) struct Launch {
    pub job: Arc<JobRecord>,
    pub fold: FoldIndex,
    pub attempt: AttemptId,
    /// Which dispatch of this fold it is, from 1.
    pub nth: u32,
    pub target: SlotTarget,
    pub resume: Option<StoredCheckpoint>,
    pub first_dispatch: bool,
    pub stop: watch::Receiver<Option<StopReason>>,
}

/// How an attempt ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Done(FoldSummary),
    Failed(FoldFailure),
    Stopped(StopReason),
    /// A newer attempt owns the fold; this one's results were dropped.
    Stale,
}

/// What the runner tells the scheduler while an attempt runs, and asks it: whether the
/// attempt still owns its fold (fencing).
pub(super) trait AttemptHost: Send + Sync {
    /// Whether `attempt` is still the one whose results count for its fold.
    fn is_current(&self, job: &JobId, fold: FoldIndex, attempt: AttemptId) -> bool;
    /// Applies live progress of a running fold.
    fn update_live(&self, job: &JobId, fold: FoldIndex, update: &dyn Fn(&mut FoldLive));
    /// An epoch was stored.
    fn epoch_done(&self, job: &JobId, fold: FoldIndex, record: EpochRecord);
    /// A newer checkpoint to resume the fold from was stored.
    fn latest_stored(&self, job: &JobId, fold: FoldIndex, checkpoint: StoredCheckpoint);
}

/// What the results received so far amount to.
#[derive(Default)]
struct Received {
    oof: bool,
    test: bool,
    best: bool,
}

/// The sizes the worker's probabilities must have.
#[derive(Clone, Copy)]
struct Expected {
    val_rows: usize,
    test_rows: usize,
    classes: usize,
}

/// Runs attempts: owns the store, the launcher and the metrics they count into.
pub(super) struct AttemptRunner {
    store: Store,
    launcher: Arc<dyn FoldLauncher>,
    metrics: CoordinatorMetrics,
}

impl AttemptRunner {
    pub fn new(store: Store, launcher: Arc<dyn FoldLauncher>, metrics: CoordinatorMetrics) -> Self {
        Self {
            store,
            launcher,
            metrics,
        }
    }

    /// Runs `launch` to its end. Errors of the coordinator's own become failures here:
    /// results that do not fit the task are not retried, trouble with the disk or the
    /// database may pass and is.
    pub async fn run(&self, launch: &mut Launch, host: &dyn AttemptHost) -> Outcome {
        let mut clock = AttemptClock::new(Instant::now());
        let driven = self.drive(launch, host, &mut clock).await;
        self.record_time(launch, &clock).await;
        let outcome = match driven {
            Ok(outcome) => outcome,
            // The job was cancelled or failed between dispatch and this write.
            Err(e @ CoordinatorError::AlreadyFinal { .. }) => {
                Outcome::Stopped(StopReason::JobStopped(e.to_string()))
            }
            Err(e @ CoordinatorError::BadFoldResult { .. }) => {
                Outcome::Failed(FoldFailure::new(FailureCause::BadResult, e.to_string()))
            }
            Err(e) => Outcome::Failed(FoldFailure::new(FailureCause::Coordinator, e.to_string())),
        };
        // The fold_attempt span turns red in trace viewers when the attempt failed.
        match &outcome {
            Outcome::Failed(f) => mark_span_failed(&Span::current(), f.to_string()),
            Outcome::Stopped(StopReason::WorkerLost(reason)) => {
                mark_span_failed(&Span::current(), reason)
            }
            _ => {}
        }
        outcome
    }

    /// Records the attempt, starts it and follows its events until one ends it.
    async fn drive(
        &self,
        launch: &mut Launch,
        host: &dyn AttemptHost,
        clock: &mut AttemptClock,
    ) -> Result<Outcome> {
        self.start(launch).await?;
        let job = launch.job.clone();
        let mut task = fold_task(
            &job,
            launch.fold,
            launch.attempt,
            launch.target.device_index,
        );
        if let Some(checkpoint) = launch.resume {
            let blobs = self.store.blobs.clone();
            task.resume =
                Some(run_blocking("checkpoint read", move || blobs.read(&checkpoint.blob)).await?);
        }
        info!(
            resume_epoch = launch.resume.map(|c| c.epoch),
            nth = launch.nth,
            "fold dispatched"
        );
        let expected = Expected {
            val_rows: task.val.len(),
            test_rows: task.test.len(),
            classes: task.class_names.len(),
        };
        let mut stream = self.launcher.launch(&launch.target, task);
        let mut received = Received::default();
        clock.waiting(Instant::now());
        loop {
            let item = tokio::select! {
                changed = launch.stop.changed() => {
                    let reason = launch.stop.borrow().clone();
                    match (changed, reason) {
                        (_, Some(reason)) => return Ok(Outcome::Stopped(reason)),
                        // The scheduler is gone: nothing will read the outcome.
                        (Err(_), None) => return Ok(Outcome::Stopped(StopReason::Shutdown)),
                        (Ok(()), None) => continue,
                    }
                }
                item = stream.next() => item,
            };
            let event = match item {
                None => {
                    let worker = &launch.target.worker;
                    return Ok(Outcome::Failed(lost(format!(
                        "worker {worker}: the event stream ended before the fold finished"
                    ))));
                }
                Some(Err(e)) => return Ok(Outcome::Failed(lost(e.to_string()))),
                Some(Ok(event)) => event,
            };
            clock.received(&event, Instant::now());
            if !host.is_current(&job.id, launch.fold, launch.attempt) {
                return Ok(Outcome::Stale);
            }
            let storing = Instant::now();
            let checkpoint = matches!(event, FoldEvent::Checkpoint { .. });
            if let Some(outcome) = self
                .record(launch, host, event, &mut received, expected)
                .await?
            {
                return Ok(outcome);
            }
            if checkpoint {
                clock.stored_checkpoint(storing.elapsed().as_secs_f64());
            }
            clock.waiting(Instant::now());
        }
    }

    /// Adds what the attempt spent per phase to its job's time breakdown, whatever the
    /// outcome: a lost attempt's work took time too. A failure here only loses numbers.
    async fn record_time(&self, launch: &Launch, clock: &AttemptClock) {
        let seconds = clock.totals();
        if seconds.is_empty() {
            return;
        }
        let (job, fold) = (launch.job.id.clone(), launch.fold);
        let stored = self
            .store
            .db
            .call(move |c| store::timing::add_seconds(c, &job, Some(fold), &seconds))
            .await;
        if let Err(e) = stored {
            warn!(error = %e, "recording the attempt's time breakdown failed");
        }
    }

    /// Stores the running attempt (and the job's first start) before the worker hears of it.
    async fn start(&self, launch: &Launch) -> Result<()> {
        let record = AttemptRecord {
            id: launch.attempt,
            job: launch.job.id.clone(),
            fold: launch.fold,
            worker: launch.target.worker.clone(),
            slot: launch.target.slot as i32,
            state: AttemptState::Running,
            reason: String::new(),
            started_ms: now_ms(),
            ended_ms: None,
            resumed_from_epoch: launch.resume.map_or(0, |c| c.epoch),
        };
        let first = launch.first_dispatch;
        self.store
            .db
            .call(move |c| store::folds::start_attempt(c, &record, first))
            .await
    }

    /// Stores one event; returns the outcome when the event ends the attempt.
    async fn record(
        &self,
        launch: &Launch,
        host: &dyn AttemptHost,
        event: FoldEvent,
        received: &mut Received,
        expected: Expected,
    ) -> Result<Option<Outcome>> {
        let (job, fold) = (&launch.job.id, launch.fold);
        match event {
            FoldEvent::Progress {
                epoch,
                batch,
                batches,
                loss,
                images_per_sec,
                ..
            } => host.update_live(job, fold, &|live| {
                live.epoch = epoch;
                live.batch = batch;
                live.batches = batches;
                live.loss = loss;
                live.images_per_sec = images_per_sec;
            }),
            FoldEvent::Epoch(record) => self.record_epoch(launch, host, record).await?,
            FoldEvent::Checkpoint { kind, epoch, bytes } => {
                let blob = self.store_checkpoint(launch, kind, epoch, bytes).await?;
                match kind {
                    CheckpointKind::Latest => {
                        host.latest_stored(job, fold, StoredCheckpoint { blob, epoch });
                    }
                    CheckpointKind::Best => received.best = true,
                }
            }
            FoldEvent::Oof {
                rows,
                classes,
                probs,
            } => {
                self.check_shape(
                    launch,
                    "out-of-fold",
                    rows,
                    classes,
                    expected.val_rows,
                    expected,
                )?;
                self.store_probabilities(launch, ProbabilitySet::Oof, &probs)
                    .await?;
                received.oof = true;
            }
            FoldEvent::Test {
                rows,
                classes,
                probs,
            } => {
                self.check_shape(launch, "test", rows, classes, expected.test_rows, expected)?;
                self.store_probabilities(launch, ProbabilitySet::Test, &probs)
                    .await?;
                received.test = true;
            }
            FoldEvent::Done(summary) => {
                return self.finish(launch, received, summary).await.map(Some);
            }
            FoldEvent::Failed(failure) => return Ok(Some(Outcome::Failed(failure))),
        }
        Ok(None)
    }

    async fn record_epoch(
        &self,
        launch: &Launch,
        host: &dyn AttemptHost,
        record: EpochRecord,
    ) -> Result<()> {
        let (id, fold, attempt) = (launch.job.id.clone(), launch.fold, launch.attempt);
        let stored = record;
        self.store
            .db
            .call(move |c| store::folds::record_epoch(c, &id, fold, attempt, &stored))
            .await?;
        info!(
            epoch = record.epoch,
            loss = record.loss,
            val_loss = record.val_loss,
            val_f1 = record.val_f1,
            "epoch done"
        );
        host.epoch_done(&launch.job.id, fold, record);
        Ok(())
    }

    async fn store_checkpoint(
        &self,
        launch: &Launch,
        kind: CheckpointKind,
        epoch: u32,
        bytes: Vec<u8>,
    ) -> Result<BlobHash> {
        self.metrics.streamed(Direction::Checkpoint, bytes.len());
        let span = info_span!("store_checkpoint", ?kind, epoch, bytes = bytes.len());
        let (id, fold) = (launch.job.id.clone(), launch.fold);
        let blobs = self.store.blobs.clone();
        self.store_blob(bytes, move |c, blob| {
            let superseded = store::folds::set_checkpoint(c, &id, fold, kind, blob, epoch)?;
            release(&blobs, superseded);
            Ok(blob)
        })
        .instrument(span)
        .await
    }

    /// Probabilities must have the task's rows and the job's classes.
    fn check_shape(
        &self,
        launch: &Launch,
        what: &str,
        rows: u32,
        classes: u32,
        want_rows: usize,
        expected: Expected,
    ) -> Result<()> {
        let message = if classes as usize != expected.classes {
            format!(
                "probabilities have {classes} classes, the job has {}",
                expected.classes
            )
        } else if rows as usize != want_rows {
            match what {
                "test" => format!("{rows} test rows for {want_rows} test images"),
                _ => format!("{rows} out-of-fold rows for {want_rows} validation images"),
            }
        } else {
            return Ok(());
        };
        Err(CoordinatorError::BadFoldResult {
            job: launch.job.id.clone(),
            fold: launch.fold,
            message,
        })
    }

    /// A `Done` counts only with every result in hand.
    async fn finish(
        &self,
        launch: &Launch,
        received: &Received,
        summary: FoldSummary,
    ) -> Result<Outcome> {
        let missing: Vec<&str> = [
            (!received.oof).then_some("out-of-fold probabilities"),
            (!received.test).then_some("test probabilities"),
            (!received.best).then_some("a best checkpoint"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !missing.is_empty() {
            return Ok(Outcome::Failed(FoldFailure::new(
                FailureCause::Protocol,
                format!("finished without {}", missing.join(", ")),
            )));
        }
        let (id, fold, attempt) = (launch.job.id.clone(), launch.fold, launch.attempt);
        let blobs = self.store.blobs.clone();
        self.store
            .db
            .call(move |c| {
                let latest = store::folds::finish_fold(c, &id, fold, attempt, &summary)?;
                release(&blobs, latest);
                Ok(())
            })
            .await?;
        Ok(Outcome::Done(summary))
    }

    /// Writes `bytes` as a blob, then lets `refer` point the store at it. Blobs are only
    /// removed inside a database call, once nothing refers to them; `refer` runs in one
    /// too, after making sure the blob is still there (an identical blob released
    /// meanwhile is written again), so a stored reference never names a missing blob.
    async fn store_blob<R: Send + 'static>(
        &self,
        bytes: Vec<u8>,
        refer: impl FnOnce(&mut rusqlite::Connection, BlobHash) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let blobs = self.store.blobs.clone();
        // The slow part, the write and its fsync, stays outside the database lock.
        let (blob, bytes) =
            run_blocking("blob write", move || Ok((blobs.put(&bytes)?, bytes))).await?;
        let blobs = self.store.blobs.clone();
        self.store
            .db
            .call(move |c| {
                if !blobs.contains(&blob) {
                    blobs.put(&bytes)?;
                }
                refer(c, blob)
            })
            .await
    }

    async fn store_probabilities(
        &self,
        launch: &Launch,
        set: ProbabilitySet,
        probs: &[f32],
    ) -> Result<()> {
        let (id, fold) = (launch.job.id.clone(), launch.fold);
        if let Some(bad) = probs.iter().find(|p| !p.is_finite()) {
            return Err(CoordinatorError::BadFoldResult {
                job: id,
                fold,
                message: format!("probability {bad} is not finite"),
            });
        }
        let bytes: Vec<u8> = probs.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.store_blob(bytes, move |c, blob| {
            store::folds::set_probabilities(c, &id, fold, set, blob)
        })
        .await
    }
}

fn lost(message: String) -> FoldFailure {
    FoldFailure::new(FailureCause::WorkerLost, message)
}

/// Removes a checkpoint blob nothing refers to any more; called inside the database call
/// that let go of it. Failing only costs disk, so it is logged, not fatal.
fn release(blobs: &store::BlobStore, blob: Option<BlobHash>) {
    let Some(blob) = blob else {
        return;
    };
    match blobs.remove(&blob) {
        Ok(bytes) => debug!(%blob, bytes, "superseded checkpoint removed"),
        Err(e) => warn!(%blob, error = %e, "removing a superseded checkpoint failed"),
    }
}
