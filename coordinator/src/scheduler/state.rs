//! The scheduler's in-memory state: the queue, live jobs and folds, running attempts
//! (the worker registry keeps its own).
//! The database holds the durable truth; this holds what is needed to decide fast.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use foldtrain_proto::task::EpochRecord;
use foldtrain_proto::{AttemptId, FoldIndex, JobId, WorkerId};
use tokio::sync::watch;

use crate::store::{FoldState, JobRecord, JobState, StoredCheckpoint};

/// Why a running attempt is being stopped from the coordinator's side.
#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// The job failed or was cancelled; the fold is not retried.
    JobStopped(String),
    /// The worker missed its lease; the fold is retried elsewhere.
    WorkerLost(String),
    /// The coordinator is shutting down; the attempt is resumed after a restart.
    Shutdown,
}

/// Live numbers of a running fold, for status and watch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FoldLive {
    pub epoch: u32,
    pub epochs: u32,
    pub batch: u32,
    pub batches: u32,
    pub loss: f64,
    pub val_loss: f64,
    pub val_f1: f64,
    pub images_per_sec: f64,
    pub worker: Option<WorkerId>,
}

impl FoldLive {
    pub(super) fn record_epoch(&mut self, e: &EpochRecord) {
        self.epoch = e.epoch;
        self.loss = e.loss;
        self.val_loss = e.val_loss;
        self.val_f1 = e.val_f1;
        self.images_per_sec = e.images_per_sec;
    }
}

#[derive(Debug)]
pub(super) struct FoldRuntime {
    pub state: FoldState,
    pub attempts: u32,
    /// Attempts that used up the retry budget (failed, or lost with their worker).
    pub charged: u32,
    /// The attempt whose results are accepted; any other is stale.
    pub current: Option<AttemptId>,
    /// The checkpoint a re-dispatch resumes from.
    pub latest: Option<StoredCheckpoint>,
    pub live: FoldLive,
}

#[derive(Debug)]
pub(super) struct JobRuntime {
    pub record: Arc<JobRecord>,
    pub state: JobState,
    pub span: tracing::Span,
    pub folds: Vec<FoldRuntime>,
}

impl JobRuntime {
    pub fn active(&self) -> bool {
        !self.state.is_terminal()
    }
}

#[derive(Debug)]
pub(super) struct RunningAttempt {
    pub job: JobId,
    pub stop: watch::Sender<Option<StopReason>>,
}

#[derive(Debug, Default)]
pub(super) struct State {
    /// Folds waiting for a slot, oldest job first.
    pub queue: VecDeque<(JobId, FoldIndex)>,
    /// Jobs not yet finished.
    pub jobs: HashMap<JobId, JobRuntime>,
    pub running: HashMap<AttemptId, RunningAttempt>,
    pub next_attempt: u64,
    pub shutting_down: bool,
}

impl State {
    pub fn fold_mut(&mut self, job: &JobId, fold: FoldIndex) -> Option<&mut FoldRuntime> {
        self.jobs
            .get_mut(job)
            .and_then(|j| j.folds.get_mut(fold.0 as usize))
    }

    /// Whether `attempt` is still the one whose results count for its fold.
    pub fn is_current(&self, job: &JobId, fold: FoldIndex, attempt: AttemptId) -> bool {
        self.jobs
            .get(job)
            .filter(|j| j.active())
            .and_then(|j| j.folds.get(fold.0 as usize))
            .is_some_and(|f| f.current == Some(attempt))
    }

    /// Asks every running attempt of `job` to stop.
    pub fn stop_job_attempts(&mut self, job: &JobId, reason: &StopReason) {
        for running in self.running.values().filter(|r| &r.job == job) {
            running.stop.send_replace(Some(reason.clone()));
        }
        self.queue.retain(|(j, _)| j != job);
    }
}
