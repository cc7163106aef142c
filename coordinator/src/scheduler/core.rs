//! The scheduler: accepts jobs, keeps the worker registry, and hands one queued fold to
//! each free slot, oldest job first.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldtrain_proto::{AttemptId, FoldIndex, JobId, WorkerId};
use tokio::sync::broadcast;
use tracing::{info, info_span, warn};

use super::attempt::AttemptRunner;
use super::finalize::Finalizer;
use super::job_spec::JobSpec;
use super::launcher::{CallToken, FoldLauncher};
use super::metrics::{CoordinatorMetrics, LiveGauges};
use super::registry::{LiveWorker, Registration};
use super::state::{FoldLive, FoldRuntime, JobRuntime, State, StopReason};
use super::workers::WorkerRegistry;
use crate::error::{CoordinatorError, Result, run_blocking};
use crate::store::{self, FoldState, JobState, Phase, Store, now_ms};

/// Something happened to a job: watchers re-read its status.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    pub job: JobId,
    pub fold: Option<FoldIndex>,
    /// Set when a fold finished an epoch.
    pub epoch: Option<foldtrain_proto::task::EpochRecord>,
}

/// Scheduling knobs that are not part of any one job.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// How long a worker counts as alive after its last heartbeat.
    pub lease: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
        }
    }
}

/// A cheap, clonable handle to the scheduler.
#[derive(Clone)]
pub struct Scheduler {
    pub(super) inner: Arc<Inner>,
}

/// The scheduler composes its collaborators: the queue and live jobs (`state`), the
/// worker registry, the attempt runner and the finalizer, each owning its own state.
pub(super) struct Inner {
    pub state: Mutex<State>,
    pub store: Store,
    pub workers: WorkerRegistry,
    pub runner: AttemptRunner,
    pub finalizer: Finalizer,
    pub events: broadcast::Sender<JobEvent>,
    pub metrics: CoordinatorMetrics,
    /// Submissions hold it shared from their blob check to their insert; a deletion holds
    /// it alone, so no job is accepted on an image that is being removed.
    pub blob_gc: tokio::sync::RwLock<()>,
}

/// What deleting a job freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobDeletion {
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    /// Blobs other jobs still refer to, which stayed.
    pub blobs_kept: u64,
}

impl Scheduler {
    /// A scheduler over `store`; jobs left unfinished by a previous run are queued again,
    /// each fold resuming from its latest stored checkpoint.
    pub async fn new(
        store: Store,
        launcher: Arc<dyn FoldLauncher>,
        options: SchedulerOptions,
    ) -> Result<Self> {
        let (events, _) = broadcast::channel(1024);
        let (state, finished) = super::recover::recover(&store).await?;
        let metrics = CoordinatorMetrics::new();
        let scheduler = Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                workers: WorkerRegistry::new(store.clone(), options.lease),
                runner: AttemptRunner::new(store.clone(), launcher, metrics.clone()),
                finalizer: Finalizer::new(store.clone()),
                store,
                events,
                metrics,
                blob_gc: tokio::sync::RwLock::new(()),
            }),
        };
        for job in finished {
            scheduler.spawn_finalize(job);
        }
        Ok(scheduler)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn lease(&self) -> Duration {
        self.inner.workers.lease()
    }

    /// The Prometheus metrics this scheduler and its server count into.
    pub fn metrics(&self) -> &CoordinatorMetrics {
        &self.inner.metrics
    }

    /// The metrics exposition text, with the state gauges read now.
    pub async fn render_metrics(&self) -> Result<String> {
        let slots = self.inner.workers.slot_counts();
        // Folds of a job stopped meanwhile stay in the queue until dispatch drops them.
        let queued = {
            let st = self.lock();
            st.queue
                .iter()
                .filter(|(job, _)| st.jobs.get(job).is_some_and(|j| j.active()))
                .count()
        };
        let gauges = LiveGauges {
            workers: slots.workers,
            busy_slots: slots.busy,
            free_slots: slots.free,
            queued_folds: queued,
        };
        self.inner.metrics.render(gauges, &self.inner.store).await
    }

    /// Registers (or re-registers) a worker and its slots; returns the lease it must renew.
    pub async fn register_worker(&self, registration: Registration) -> Result<Duration> {
        let lease = self.inner.workers.register(registration).await?;
        self.dispatch();
        Ok(lease)
    }

    /// Renews a worker's lease; false when the worker is unknown and must register. A
    /// draining worker keeps its lease (its folds are still handing back) but gets no new
    /// fold.
    pub async fn heartbeat(
        &self,
        id: &WorkerId,
        call_token: &CallToken,
        draining: bool,
    ) -> Result<bool> {
        let beat = self
            .inner
            .workers
            .heartbeat(id, call_token, draining)
            .await?;
        if beat.cleared {
            // The worker is alive after all: its free slots take folds again.
            self.dispatch();
        }
        Ok(beat.known)
    }

    /// Workers currently registered, in registration order.
    pub fn live_workers(&self) -> Vec<LiveWorker> {
        self.inner.workers.workers()
    }

    /// Removes workers whose lease ran out; their folds are retried elsewhere.
    pub fn expire_leases(&self) {
        let expired = self.inner.workers.expire(Instant::now());
        let st = self.lock();
        for (worker, attempts) in expired {
            warn!(worker = %worker, attempts = attempts.len(), "worker lease expired");
            let reason = format!("worker {worker} missed its heartbeat lease");
            for attempt in attempts {
                if let Some(running) = st.running.get(&attempt) {
                    running
                        .stop
                        .send_replace(Some(StopReason::WorkerLost(reason.clone())));
                }
            }
        }
    }

    /// Checks leases every quarter lease until the returned task is aborted or the
    /// scheduler is dropped. The task holds no reference of its own, so the scheduler (and
    /// with it the store's lock on the data directory) goes when its last user does.
    pub fn spawn_lease_monitor(&self) -> tokio::task::JoinHandle<()> {
        let scheduler = Arc::downgrade(&self.inner);
        let period = (self.lease() / 4).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let Some(inner) = scheduler.upgrade() else {
                    return;
                };
                Scheduler { inner }.expire_leases();
            }
        })
    }

    /// Listens to job events (epochs, state changes).
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.inner.events.subscribe()
    }

    pub(super) fn notify(
        &self,
        job: &JobId,
        fold: Option<FoldIndex>,
        epoch: Option<foldtrain_proto::task::EpochRecord>,
    ) {
        // No subscriber is fine: nobody is watching.
        let _ = self.inner.events.send(JobEvent {
            job: job.clone(),
            fold,
            epoch,
        });
    }

    /// Validates and stores a job, then queues its folds. Returns once the job is
    /// committed to the database: an acknowledged job survives a crash.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobId> {
        if self.lock().shutting_down {
            return Err(CoordinatorError::ShuttingDown);
        }
        let _no_deletion = self.inner.blob_gc.read().await;
        let id = new_job_id();
        let client = spec.client;
        let blobs = self.inner.store.blobs.clone();
        let job_id = id.clone();
        // Splitting and checking thousands of blobs is blocking work.
        let record = run_blocking("job validation", move || {
            let record = spec.into_record(job_id, now_ms())?;
            let missing: Vec<&foldtrain_proto::ImageRef> = record
                .train
                .iter()
                .chain(&record.test)
                .filter(|i| !blobs.contains(&i.hash))
                .collect();
            if let Some(first) = missing.first() {
                return Err(CoordinatorError::MissingImages {
                    count: missing.len(),
                    first: format!("{} ({})", first.name, first.hash),
                });
            }
            if let Some(blob) = record.config.model.pretrained
                && !blobs.contains(&blob)
            {
                return Err(CoordinatorError::MissingPretrained(blob));
            }
            Ok(record)
        })
        .await?;
        let stored = record.clone();
        self.inner
            .store
            .db
            .call(move |c| {
                store::jobs::insert_job(c, &stored)?;
                let client = [
                    (Phase::ClientHashing, client.hashing),
                    (Phase::ClientUpload, client.upload),
                ];
                store::timing::add_seconds(c, &stored.id, None, &client)
            })
            .await?;
        // Every job is a trace of its own, whatever request happened to submit it.
        let span = info_span!(parent: None, "job", job = %id);
        span.in_scope(|| {
            info!(
                train = record.train.len(),
                test = record.test.len(),
                folds = record.folds(),
                "job submitted"
            )
        });
        {
            let mut st = self.lock();
            let folds = record.folds();
            for k in 0..folds {
                st.queue.push_back((id.clone(), FoldIndex(k)));
            }
            st.jobs.insert(id.clone(), new_job_runtime(record, span));
        }
        self.notify(&id, None, None);
        self.dispatch();
        Ok(id)
    }

    /// The state of a job the scheduler is still working on.
    pub fn live_job_state(&self, job: &JobId) -> Option<JobState> {
        self.lock().jobs.get(job).map(|j| j.state)
    }

    /// Live numbers of each fold of a running job.
    pub fn live_folds(&self, job: &JobId) -> Option<Vec<(FoldState, FoldLive)>> {
        self.lock()
            .jobs
            .get(job)
            .map(|j| j.folds.iter().map(|f| (f.state, f.live.clone())).collect())
    }

    /// Fails with `StaleAttempt` unless `attempt` is the one whose results count.
    pub fn check_current(&self, job: &JobId, fold: FoldIndex, attempt: AttemptId) -> Result<()> {
        let st = self.lock();
        if st.is_current(job, fold, attempt) {
            return Ok(());
        }
        let current = st
            .jobs
            .get(job)
            .and_then(|j| j.folds.get(fold.0 as usize))
            .and_then(|f| f.current)
            .map_or_else(|| "none".to_string(), |a| a.to_string());
        Err(CoordinatorError::StaleAttempt {
            job: job.clone(),
            fold,
            attempt,
            current,
        })
    }

    /// Cancels a job: queued folds are dropped and running attempts stopped.
    pub async fn cancel(&self, job: &JobId) -> Result<()> {
        let summary = {
            let id = job.clone();
            self.inner
                .store
                .db
                .call(move |c| store::jobs::job_summary(c, &id))
                .await?
        };
        if summary.state.is_terminal() {
            return Ok(());
        }
        self.stop_job(job, JobState::Cancelled, "cancelled by request".into())
            .await
    }

    /// Deletes a finished job: its rows, its result files and every blob of it that no
    /// other job refers to. A job still queued, running or being aggregated is refused.
    pub async fn delete_job(&self, job: &JobId) -> Result<JobDeletion> {
        let refuse = |state: JobState| CoordinatorError::WrongJobState {
            job: job.clone(),
            state: state.as_str().into(),
            action: "delete",
            needed: "finished (succeeded, failed or cancelled)",
        };
        if let Some(state) = self.live_job_state(job) {
            return Err(refuse(state));
        }
        let _alone = self.inner.blob_gc.write().await;
        let (id, blobs) = (job.clone(), self.inner.store.blobs.clone());
        // Blobs go inside the database call that released them, as everywhere: no
        // reference to one can be stored between the check and the removal.
        let (deleted, bytes_freed) = self
            .inner
            .store
            .db
            .call(move |c| {
                let deleted = store::jobs::delete_job(c, &id)?;
                let mut freed = 0;
                for blob in &deleted.released {
                    freed += blobs.remove(blob)?;
                }
                Ok((deleted, freed))
            })
            .await?;
        let dir = self.inner.store.job_dir(job);
        let released = deleted.released.len() as u64;
        run_blocking("job deletion", move || {
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CoordinatorError::io(
                    format!("removing {}", dir.display()),
                    e,
                )),
                _ => Ok(()),
            }
        })
        .await?;
        let deletion = JobDeletion {
            blobs_removed: released,
            bytes_freed,
            blobs_kept: deleted.kept as u64,
        };
        info!(job = %job, ?deletion, "job deleted");
        Ok(deletion)
    }

    /// Moves an active job to a terminal failure state and stops its attempts.
    pub(super) async fn stop_job(
        &self,
        job: &JobId,
        state: JobState,
        message: String,
    ) -> Result<()> {
        let span = {
            let mut st = self.lock();
            let Some(runtime) = st.jobs.get_mut(job) else {
                return Ok(());
            };
            if !runtime.active() {
                return Ok(());
            }
            runtime.state = state;
            let span = runtime.span.clone();
            st.stop_job_attempts(job, &StopReason::JobStopped(message.clone()));
            span
        };
        span.in_scope(|| warn!(state = %state, %message, "job stopped"));
        if state != JobState::Cancelled {
            foldtrain_proto::runtime::telemetry::mark_span_failed(&span, &message);
        }
        let id = job.clone();
        let fold_state = if state == JobState::Cancelled {
            FoldState::Cancelled
        } else {
            FoldState::Failed
        };
        let msg = message.clone();
        let stored = self
            .inner
            .store
            .db
            .call(move |c| {
                let tx = c.transaction()?;
                store::jobs::set_job_state(&tx, &id, state, &msg)?;
                store::folds::close_open_folds(&tx, &id, fold_state)?;
                Ok(tx.commit()?)
            })
            .await;
        match stored {
            Ok(()) => {}
            // Aggregation recorded the job's success first: that end holds.
            Err(e @ CoordinatorError::AlreadyFinal { .. }) => {
                span.in_scope(|| info!(error = %e, "the job ended before it could be stopped"));
            }
            Err(e) => return Err(e),
        }
        self.lock().jobs.remove(job);
        self.notify(job, None, None);
        Ok(())
    }

    /// The state of a job, from memory when live, else from the database.
    pub async fn job_state(&self, job: &JobId) -> Result<JobState> {
        if let Some(state) = self.lock().jobs.get(job).map(|j| j.state) {
            return Ok(state);
        }
        let id = job.clone();
        Ok(self
            .inner
            .store
            .db
            .call(move |c| store::jobs::job_summary(c, &id))
            .await?
            .state)
    }

    /// Waits until a job reaches a terminal state and returns it.
    pub async fn wait_job(&self, job: &JobId) -> Result<JobState> {
        let mut events = self.subscribe();
        loop {
            let state = self.job_state(job).await?;
            if state.is_terminal() {
                return Ok(state);
            }
            match tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(CoordinatorError::ShuttingDown);
                }
                _ => continue,
            }
        }
    }

    /// Stops dispatching and abandons running attempts; they resume after a restart.
    pub fn shutdown(&self) {
        let mut st = self.lock();
        st.shutting_down = true;
        for running in st.running.values() {
            running.stop.send_replace(Some(StopReason::Shutdown));
        }
    }
}

/// A submitted job as live state: every fold queued.
fn new_job_runtime(record: store::JobRecord, span: tracing::Span) -> JobRuntime {
    let folds = record.folds();
    JobRuntime {
        state: JobState::Queued,
        span,
        folds: (0..folds)
            .map(|_| FoldRuntime {
                state: FoldState::Queued,
                attempts: 0,
                charged: 0,
                current: None,
                latest: None,
                live: FoldLive::default(),
            })
            .collect(),
        record: Arc::new(record),
    }
}

/// A fresh job id: time-ordered, with random bits so two coordinators never collide.
fn new_job_id() -> JobId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = blake3::Hasher::new();
    h.update(&nanos.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let suffix = &h.finalize().to_hex()[..8];
    JobId::new(format!("job-{}-{suffix}", now_ms() / 1000))
}
