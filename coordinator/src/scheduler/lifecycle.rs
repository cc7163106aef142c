//! A fold's way through the scheduler: dispatch to a free slot, the attempt run by the
//! attempt runner, and what its outcome means for the job — done (and finalized when it
//! was the last fold), retried from its latest checkpoint, or the job failed.

use foldtrain_proto::task::{EpochRecord, FoldFailure};
use foldtrain_proto::{AttemptId, FailureCause, FoldIndex, JobId};
use tokio::sync::watch;
use tracing::{Instrument, error, info, info_span, warn};

use super::attempt::{AttemptHost, Launch, Outcome};
use super::core::Scheduler;
use super::launcher::SlotTarget;
use super::state::{FoldLive, RunningAttempt, State, StopReason};
use crate::error::{CoordinatorError, Result};
use crate::store::folds::Charge;
use crate::store::{self, AttemptState, FoldState, JobState, StoredCheckpoint};

impl Scheduler {
    /// Hands queued folds to free slots until one or the other runs out.
    pub fn dispatch(&self) {
        let mut launches = Vec::new();
        {
            let mut st = self.lock();
            if st.shutting_down {
                return;
            }
            while self.inner.workers.has_free_slot() {
                let Some((job_id, fold)) = next_queued(&mut st) else {
                    break;
                };
                let attempt = AttemptId(st.next_attempt);
                // A worker may have expired since the look: the fold waits at the front.
                let Some(target) = self.inner.workers.claim_slot(attempt) else {
                    st.queue.push_front((job_id, fold));
                    break;
                };
                match prepare_launch(&mut st, job_id, fold, attempt, target.clone()) {
                    Some(launch) => launches.push(launch),
                    None => self.inner.workers.release(&target, attempt),
                }
            }
        }
        for (launch, job_span) in launches {
            let span = info_span!(
                parent: &job_span,
                "fold_attempt",
                job = %launch.job.id,
                fold = launch.fold.0,
                attempt = launch.attempt.0,
                worker = %launch.target.worker,
                device = %launch.target.device(),
            );
            let scheduler = self.clone();
            tokio::spawn(async move { scheduler.run_attempt(launch).await }.instrument(span));
        }
    }

    async fn run_attempt(self, mut launch: Launch) {
        let outcome = self.inner.runner.run(&mut launch, &self).await;
        if let Err(e) = self.conclude(&launch, outcome).await {
            warn!(error = %e, "recording the attempt outcome failed");
        }
        self.dispatch();
    }

    /// Applies an attempt's outcome: fold done, retried, job failed, or nothing (stale).
    async fn conclude(&self, launch: &Launch, outcome: Outcome) -> Result<()> {
        let attempt = launch.attempt;
        self.inner.workers.release(&launch.target, attempt);
        self.lock().running.remove(&attempt);
        let db = &self.inner.store.db;
        // None of these ends uses up the fold's retry budget.
        let end = |state: AttemptState, reason: &str| {
            let reason = reason.to_string();
            db.call(move |c| store::folds::end_attempt(c, attempt, state, &reason, Charge::Free))
        };
        match outcome {
            Outcome::Done(summary) => {
                info!(
                    best_epoch = summary.best_epoch,
                    best_val_loss = summary.best_val_loss,
                    "fold done"
                );
                self.fold_done(launch).await;
            }
            Outcome::Stale => end(AttemptState::Lost, "superseded by a newer attempt").await?,
            Outcome::Stopped(StopReason::JobStopped(reason)) => {
                end(AttemptState::Cancelled, &reason).await?;
            }
            Outcome::Stopped(StopReason::Shutdown) => {
                end(AttemptState::Lost, "coordinator shut down").await?;
            }
            Outcome::Stopped(StopReason::WorkerLost(reason)) => {
                let failure = FoldFailure::new(FailureCause::WorkerLost, reason);
                self.fail_attempt(launch, failure).await?;
            }
            Outcome::Failed(failure) => self.fail_attempt(launch, failure).await?,
        }
        Ok(())
    }

    /// Counts a fold done, and finalizes the job when it was the last.
    async fn fold_done(&self, launch: &Launch) {
        let (job, fold, attempt) = (&launch.job.id, launch.fold, launch.attempt);
        // The fold's files go to disk now, so a job that is later cancelled or fails
        // still hands back what was finished. Aggregation rewrites them and reports a
        // lasting write error.
        let written = self
            .inner
            .finalizer
            .write_finished_fold(launch.job.clone(), fold)
            .await;
        if let Err(e) = written {
            warn!(error = %e, "writing the finished fold's files failed");
        }
        let all_done = {
            let mut st = self.lock();
            if !st.is_current(job, fold, attempt) {
                return;
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

    /// Retries the fold when the failure allows and attempts remain; fails the job otherwise.
    async fn fail_attempt(&self, launch: &Launch, failure: FoldFailure) -> Result<()> {
        let (job, fold, attempt) = (&launch.job.id, launch.fold, launch.attempt);
        self.metrics().attempt_failed(failure.cause);
        let state = failure.cause.attempt_state();
        if state == AttemptState::Lost {
            // Until the worker is heard from again, the retry goes elsewhere.
            self.inner.workers.suspect(&launch.target.worker);
        }
        // A busy slot or a stopping worker says nothing about the fold: it is retried
        // without using up the budget.
        let charge = if failure.cause.uses_retry_budget() {
            Charge::Counted
        } else {
            Charge::Free
        };
        let reason = failure.to_string();
        let db = &self.inner.store.db;
        db.call({
            let reason = reason.clone();
            move |c| store::folds::end_attempt(c, attempt, state, &reason, charge)
        })
        .await?;
        let charged = {
            let mut st = self.lock();
            if !st.is_current(job, fold, attempt) {
                return Ok(());
            }
            let Some(f) = st.fold_mut(job, fold) else {
                return Ok(());
            };
            if charge == Charge::Counted {
                f.charged += 1;
            }
            f.charged
        };
        let worker = &launch.target.worker;
        if failure.retryable() && charged < launch.job.config.train.max_attempts {
            warn!(cause = %failure.cause, error = %failure.message, "fold attempt failed; retrying");
            let message =
                format!("attempt {attempt} on worker {worker} failed ({reason}); retrying");
            self.requeue(job, fold, attempt, message).await?;
            return Ok(());
        }
        let message = if failure.retryable() {
            format!("fold {fold} failed {charged} times; last on worker {worker}: {failure}")
        } else {
            format!("fold {fold} failed on worker {worker}: {failure}")
        };
        self.stop_job(job, JobState::Failed, message).await
    }

    /// Puts a fold back at the front of the queue for its next attempt.
    async fn requeue(
        &self,
        job: &JobId,
        fold: FoldIndex,
        attempt: AttemptId,
        message: String,
    ) -> Result<()> {
        let id = job.clone();
        let stored = self
            .inner
            .store
            .db
            .call(move |c| {
                store::folds::set_fold_state(c, &id, fold, FoldState::Queued)?;
                store::folds::add_event(c, &id, Some(fold), Some(attempt), "retry", &message)
            })
            .await;
        match stored {
            Ok(()) => {}
            // The job was stopped meanwhile: its folds are over, none is queued again.
            Err(CoordinatorError::AlreadyFinal { .. }) => return Ok(()),
            Err(e) => return Err(e),
        }
        let mut st = self.lock();
        if let Some(f) = st.fold_mut(job, fold)
            && f.current == Some(attempt)
        {
            f.state = FoldState::Queued;
            f.current = None;
            // A retry goes first: its job is older than anything queued behind it.
            st.queue.push_front((job.clone(), fold));
        }
        Ok(())
    }

    /// Aggregates a job whose folds are all done, in the background.
    pub(super) fn spawn_finalize(&self, job: JobId) {
        let Some((record, span)) = self
            .lock()
            .jobs
            .get(&job)
            .map(|j| (j.record.clone(), j.span.clone()))
        else {
            return;
        };
        let scheduler = self.clone();
        let finalize = info_span!(parent: &span, "finalize", folds = record.folds());
        tokio::spawn(
            async move {
                match scheduler.inner.finalizer.finalize(record).await {
                    Ok(true) => {
                        scheduler.lock().jobs.remove(&job);
                        scheduler.notify(&job, None, None);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        error!(error = %e, "aggregating results failed");
                        let message = format!("aggregating results: {e}");
                        if let Err(e) = scheduler.stop_job(&job, JobState::Failed, message).await {
                            error!(error = %e, "recording the job's failure failed");
                        }
                    }
                }
            }
            .instrument(finalize),
        );
    }
}

impl AttemptHost for Scheduler {
    fn is_current(&self, job: &JobId, fold: FoldIndex, attempt: AttemptId) -> bool {
        self.lock().is_current(job, fold, attempt)
    }

    fn update_live(&self, job: &JobId, fold: FoldIndex, update: &dyn Fn(&mut FoldLive)) {
        if let Some(f) = self.lock().fold_mut(job, fold) {
            update(&mut f.live);
        }
    }

    fn epoch_done(&self, job: &JobId, fold: FoldIndex, record: EpochRecord) {
        if let Some(f) = self.lock().fold_mut(job, fold) {
            f.live.record_epoch(&record);
        }
        self.notify(job, Some(fold), Some(record));
    }

    fn latest_stored(&self, job: &JobId, fold: FoldIndex, checkpoint: StoredCheckpoint) {
        if let Some(f) = self.lock().fold_mut(job, fold) {
            f.latest = Some(checkpoint);
        }
    }
}

/// The next queued fold of a job that is still active.
fn next_queued(st: &mut State) -> Option<(JobId, FoldIndex)> {
    while let Some((job, fold)) = st.queue.pop_front() {
        if st.jobs.get(&job).is_some_and(|j| j.active()) {
            return Some((job, fold));
        }
    }
    None
}

/// Marks the fold running under `attempt` on `target` and builds its launch, with the
/// job's span to parent the attempt's.
fn prepare_launch(
    st: &mut State,
    job_id: JobId,
    fold: FoldIndex,
    attempt: AttemptId,
    target: SlotTarget,
) -> Option<(Launch, tracing::Span)> {
    let job = st.jobs.get_mut(&job_id)?;
    let first_dispatch = job.state == JobState::Queued;
    job.state = JobState::Running;
    let span = job.span.clone();
    let record = job.record.clone();
    let f = &mut job.folds[fold.0 as usize];
    f.state = FoldState::Running;
    f.attempts += 1;
    f.current = Some(attempt);
    f.live = FoldLive {
        epochs: record.config.train.epochs,
        worker: Some(target.worker.clone()),
        ..FoldLive::default()
    };
    let (nth, resume) = (f.attempts, f.latest);
    st.next_attempt += 1;
    let (stop, stop_rx) = watch::channel(None);
    st.running
        .insert(attempt, RunningAttempt { job: job_id, stop });
    let launch = Launch {
        job: record,
        fold,
        attempt,
        nth,
        target,
        resume,
        first_dispatch,
        stop: stop_rx,
    };
    Some((launch, span))
}
