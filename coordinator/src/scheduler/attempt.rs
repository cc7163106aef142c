//! One fold attempt from dispatch to outcome: store what the worker streams back,
//! then retry, fail the job, or count the fold done.

use std::sync::Arc;

use foldtrain_proto::task::{CheckpointKind, FoldFailure, FoldSummary};
use foldtrain_proto::telemetry::mark_span_failed;
use foldtrain_proto::{AttemptId, FoldEvent, FoldIndex};
use futures::StreamExt;
use tokio::sync::watch;
use tracing::{Instrument, Span, info, info_span, warn};

use super::core::Scheduler;
use super::job_spec::fold_task;
use super::launcher::SlotTarget;
use super::metrics::Direction;
use super::state::StopReason;
use crate::error::{CoordinatorError, Result};
use crate::store::{
    self, AttemptRecord, AttemptState, FoldState, JobRecord, JobState, ProbabilitySet,
    StoredCheckpoint, now_ms,
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
enum Outcome {
    Done(FoldSummary),
    Failed(FoldFailure),
    Stopped(StopReason),
    /// A newer attempt owns the fold; this one's results were dropped.
    Stale,
}

/// What the results received so far amount to.
#[derive(Default)]
struct Received {
    oof: bool,
    test: bool,
    best: bool,
}

impl Scheduler {
    pub(super) async fn run_attempt(self, mut launch: Launch) {
        let outcome = match self.drive(&mut launch).await {
            Ok(outcome) => outcome,
            // Results that do not fit the task would not fit on a retry either.
            Err(e @ CoordinatorError::BadFoldResult { .. }) => Outcome::Failed(FoldFailure {
                message: e.to_string(),
                retryable: false,
                cause: "bad_result".into(),
            }),
            // The coordinator's own trouble (disk, database) may pass: retry the fold.
            Err(e) => Outcome::Failed(FoldFailure {
                message: e.to_string(),
                retryable: true,
                cause: "coordinator".into(),
            }),
        };
        // The fold_attempt span turns red in trace viewers when the attempt failed.
        match &outcome {
            Outcome::Failed(f) => {
                mark_span_failed(&Span::current(), format!("{}: {}", f.cause, f.message))
            }
            Outcome::Stopped(StopReason::WorkerLost(reason)) => {
                mark_span_failed(&Span::current(), reason)
            }
            _ => {}
        }
        if let Err(e) = self.conclude(&launch, outcome).await {
            warn!(error = %e, "recording the attempt outcome failed");
        }
        self.dispatch();
    }

    async fn drive(&self, launch: &mut Launch) -> Result<Outcome> {
        let job = launch.job.clone();
        let (fold, attempt) = (launch.fold, launch.attempt);
        let record = AttemptRecord {
            id: attempt,
            job: job.id.clone(),
            fold,
            worker: launch.target.worker.clone(),
            slot: launch.target.slot as i32,
            state: AttemptState::Running,
            reason: String::new(),
            started_ms: now_ms(),
            ended_ms: None,
            resumed_from_epoch: launch.resume.map_or(0, |c| c.epoch),
        };
        let first = launch.first_dispatch;
        self.inner
            .store
            .db
            .call(move |c| {
                store::folds::start_attempt(c, &record)?;
                if first {
                    store::jobs::set_job_state(c, &record.job, JobState::Running, "")?;
                }
                Ok(())
            })
            .await?;
        let mut task = fold_task(&job, fold, attempt, launch.target.device_index);
        if let Some(checkpoint) = launch.resume {
            let blobs = self.inner.store.blobs.clone();
            task.resume = Some(
                tokio::task::spawn_blocking(move || blobs.read(&checkpoint.blob))
                    .await
                    .map_err(|e| CoordinatorError::Corrupt(e.to_string()))??,
            );
        }
        info!(
            resume_epoch = launch.resume.map(|c| c.epoch),
            nth = launch.nth,
            "fold dispatched"
        );
        let (val_rows, test_rows, classes) =
            (task.val.len(), task.test.len(), task.class_names.len());
        let mut stream = self.inner.launcher.launch(&launch.target, task);
        let mut received = Received::default();
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
            if self.check_current(&job.id, fold, attempt).is_err() {
                return Ok(Outcome::Stale);
            }
            if let Some(outcome) = self
                .record(launch, event, &mut received, (val_rows, test_rows, classes))
                .await?
            {
                return Ok(outcome);
            }
        }
    }

    /// Stores one event; returns the outcome when the event ends the attempt.
    async fn record(
        &self,
        launch: &Launch,
        event: FoldEvent,
        received: &mut Received,
        (val_rows, test_rows, classes): (usize, usize, usize),
    ) -> Result<Option<Outcome>> {
        let (job, fold, attempt) = (launch.job.id.clone(), launch.fold, launch.attempt);
        let db = &self.inner.store.db;
        let bad = |message: String| CoordinatorError::BadFoldResult {
            job: job.clone(),
            fold,
            message,
        };
        match event {
            FoldEvent::Progress {
                epoch,
                batch,
                batches,
                loss,
                images_per_sec,
                ..
            } => {
                if let Some(f) = self.lock().fold_mut(&job, fold) {
                    f.live.epoch = epoch;
                    f.live.batch = batch;
                    f.live.batches = batches;
                    f.live.loss = loss;
                    f.live.images_per_sec = images_per_sec;
                }
            }
            FoldEvent::Epoch(record) => {
                let id = job.clone();
                db.call(move |c| store::folds::record_epoch(c, &id, fold, attempt, &record))
                    .await?;
                if let Some(f) = self.lock().fold_mut(&job, fold) {
                    f.live.record_epoch(&record);
                }
                info!(
                    epoch = record.epoch,
                    loss = record.loss,
                    val_loss = record.val_loss,
                    val_f1 = record.val_f1,
                    "epoch done"
                );
                self.notify(&job, Some(fold), Some(record));
            }
            FoldEvent::Checkpoint { kind, epoch, bytes } => {
                self.metrics().streamed(Direction::Checkpoint, bytes.len());
                let span = info_span!("store_checkpoint", ?kind, epoch, bytes = bytes.len());
                let blob = async {
                    let blob = self.put_blob(bytes).await?;
                    let id = job.clone();
                    db.call(move |c| store::folds::set_checkpoint(c, &id, fold, kind, blob, epoch))
                        .await?;
                    Ok::<_, CoordinatorError>(blob)
                }
                .instrument(span)
                .await?;
                match kind {
                    CheckpointKind::Latest => {
                        if let Some(f) = self.lock().fold_mut(&job, fold) {
                            f.latest = Some(StoredCheckpoint { blob, epoch });
                        }
                    }
                    CheckpointKind::Best => received.best = true,
                }
            }
            FoldEvent::Oof {
                rows,
                classes: c,
                probs,
            }
            | FoldEvent::Test {
                rows,
                classes: c,
                probs,
            } if c as usize != classes => {
                let _ = (rows, probs);
                return Err(bad(format!(
                    "probabilities have {c} classes, the job has {classes}"
                )));
            }
            FoldEvent::Oof { rows, probs, .. } => {
                if rows as usize != val_rows {
                    return Err(bad(format!(
                        "{rows} out-of-fold rows for {val_rows} validation images"
                    )));
                }
                self.store_probabilities(&job, fold, ProbabilitySet::Oof, &probs)
                    .await?;
                received.oof = true;
            }
            FoldEvent::Test { rows, probs, .. } => {
                if rows as usize != test_rows {
                    return Err(bad(format!("{rows} test rows for {test_rows} test images")));
                }
                self.store_probabilities(&job, fold, ProbabilitySet::Test, &probs)
                    .await?;
                received.test = true;
            }
            FoldEvent::Done(summary) => {
                let missing: Vec<&str> = [
                    (!received.oof).then_some("out-of-fold probabilities"),
                    (!received.test).then_some("test probabilities"),
                    (!received.best).then_some("a best checkpoint"),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !missing.is_empty() {
                    return Ok(Some(Outcome::Failed(FoldFailure {
                        message: format!("finished without {}", missing.join(", ")),
                        retryable: false,
                        cause: "protocol".into(),
                    })));
                }
                let id = job.clone();
                db.call(move |c| store::folds::finish_fold(c, &id, fold, attempt, &summary))
                    .await?;
                return Ok(Some(Outcome::Done(summary)));
            }
            FoldEvent::Failed(failure) => return Ok(Some(Outcome::Failed(failure))),
        }
        Ok(None)
    }

    async fn put_blob(&self, bytes: Vec<u8>) -> Result<foldtrain_proto::BlobHash> {
        let blobs = self.inner.store.blobs.clone();
        tokio::task::spawn_blocking(move || blobs.put(&bytes))
            .await
            .map_err(|e| CoordinatorError::Corrupt(e.to_string()))?
    }

    async fn store_probabilities(
        &self,
        job: &foldtrain_proto::JobId,
        fold: FoldIndex,
        set: ProbabilitySet,
        probs: &[f32],
    ) -> Result<()> {
        if let Some(bad) = probs.iter().find(|p| !p.is_finite()) {
            return Err(CoordinatorError::BadFoldResult {
                job: job.clone(),
                fold,
                message: format!("probability {bad} is not finite"),
            });
        }
        let bytes: Vec<u8> = probs.iter().flat_map(|p| p.to_le_bytes()).collect();
        let blob = self.put_blob(bytes).await?;
        let id = job.clone();
        self.inner
            .store
            .db
            .call(move |c| store::folds::set_probabilities(c, &id, fold, set, blob))
            .await
    }

    /// Applies an attempt's outcome: fold done, retried, job failed, or nothing (stale).
    async fn conclude(&self, launch: &Launch, outcome: Outcome) -> Result<()> {
        let (job, fold, attempt) = (&launch.job.id, launch.fold, launch.attempt);
        let max_attempts = launch.job.config.train.max_attempts;
        {
            let mut st = self.lock();
            st.registry.release(&launch.target, attempt);
            st.running.remove(&attempt);
        }
        let db = &self.inner.store.db;
        let end = |state: AttemptState, reason: String| {
            let id = attempt;
            db.call(move |c| store::folds::end_attempt(c, id, state, &reason))
        };
        match outcome {
            Outcome::Done(summary) => {
                info!(
                    best_epoch = summary.best_epoch,
                    best_val_loss = summary.best_val_loss,
                    "fold done"
                );
                // The fold's files go to disk now, so a job that is later cancelled or
                // fails still hands back what was finished. Aggregation rewrites them and
                // reports a lasting write error.
                let (store, record) = (self.inner.store.clone(), launch.job.clone());
                let written = tokio::task::spawn_blocking(move || {
                    super::finalize::write_finished_fold(&store, &record, fold)
                })
                .await
                .map_err(|e| CoordinatorError::Corrupt(e.to_string()))
                .and_then(|r| r);
                if let Err(e) = written {
                    warn!(error = %e, "writing the finished fold's files failed");
                }
                let all_done = {
                    let mut st = self.lock();
                    if !st.is_current(job, fold, attempt) {
                        return Ok(());
                    }
                    let runtime = st
                        .jobs
                        .get_mut(job)
                        .expect("current attempts belong to live jobs");
                    let f = &mut runtime.folds[fold.0 as usize];
                    f.state = FoldState::Done;
                    f.current = None;
                    runtime.folds.iter().all(|f| f.state == FoldState::Done)
                };
                self.notify(job, Some(fold), None);
                if all_done {
                    self.spawn_finalize(job.clone());
                }
            }
            Outcome::Stale => {
                end(AttemptState::Lost, "superseded by a newer attempt".into()).await?;
            }
            Outcome::Stopped(StopReason::JobStopped(reason)) => {
                end(AttemptState::Cancelled, reason).await?;
            }
            Outcome::Stopped(StopReason::Shutdown) => {
                end(AttemptState::Lost, "coordinator shut down".into()).await?;
            }
            Outcome::Stopped(StopReason::WorkerLost(reason)) => {
                let failure = FoldFailure {
                    message: reason,
                    retryable: true,
                    cause: "worker_lost".into(),
                };
                self.fail_attempt(launch, failure, max_attempts).await?;
            }
            Outcome::Failed(failure) => self.fail_attempt(launch, failure, max_attempts).await?,
        }
        Ok(())
    }

    /// Retries the fold when the failure allows and attempts remain; fails the job otherwise.
    async fn fail_attempt(
        &self,
        launch: &Launch,
        failure: FoldFailure,
        max_attempts: u32,
    ) -> Result<()> {
        let (job, fold, attempt) = (&launch.job.id, launch.fold, launch.attempt);
        self.metrics().attempt_failed(&failure.cause);
        let state = if failure.cause == "worker_lost" {
            // Until the worker is heard from again, the retry goes elsewhere.
            self.lock().registry.suspect(&launch.target.worker);
            AttemptState::Lost
        } else {
            AttemptState::Failed
        };
        let reason = format!("{}: {}", failure.cause, failure.message);
        let db = &self.inner.store.db;
        db.call({
            let reason = reason.clone();
            move |c| store::folds::end_attempt(c, attempt, state, &reason)
        })
        .await?;
        if !self.lock().is_current(job, fold, attempt) {
            return Ok(());
        }
        let worker = &launch.target.worker;
        if failure.retryable && launch.nth < max_attempts {
            warn!(cause = %failure.cause, error = %failure.message, "fold attempt failed; retrying");
            let id = job.clone();
            let message =
                format!("attempt {attempt} on worker {worker} failed ({reason}); retrying");
            db.call(move |c| {
                store::folds::set_fold_state(c, &id, fold, FoldState::Queued)?;
                store::folds::add_event(c, &id, Some(fold), Some(attempt), "retry", &message)
            })
            .await?;
            let mut st = self.lock();
            if let Some(f) = st.fold_mut(job, fold)
                && f.current == Some(attempt)
            {
                f.state = FoldState::Queued;
                f.current = None;
                // A retry goes first: its job is older than anything queued behind it.
                st.queue.push_front((job.clone(), fold));
            }
            return Ok(());
        }
        let message = if failure.retryable {
            format!(
                "fold {fold} failed {} times; last on worker {worker}: {}: {}",
                launch.nth, failure.cause, failure.message
            )
        } else {
            format!(
                "fold {fold} failed on worker {worker}: {}: {}",
                failure.cause, failure.message
            )
        };
        self.stop_job(job, JobState::Failed, message).await
    }
}

fn lost(message: String) -> FoldFailure {
    FoldFailure {
        message,
        retryable: true,
        cause: "worker_lost".into(),
    }
}
