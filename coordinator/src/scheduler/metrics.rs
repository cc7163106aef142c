//! The coordinator's Prometheus metrics: counters bumped where bytes stream and attempts
//! fail, and gauges (jobs, folds, workers, queue) computed from the scheduler and the
//! store at scrape time.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use rusqlite::Connection;

use super::core::Scheduler;
use crate::error::Result;
use crate::store::{FoldState, JobState};

/// Every job state, so a state with no jobs reads 0 rather than vanishing.
const JOB_STATES: [JobState; 5] = [
    JobState::Queued,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Cancelled,
];
const FOLD_STATES: [FoldState; 5] = [
    FoldState::Queued,
    FoldState::Running,
    FoldState::Done,
    FoldState::Failed,
    FoldState::Cancelled,
];

/// Which way bytes went through the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Blob chunks clients uploaded.
    Upload,
    /// Blob chunks sent to workers (and clients).
    Download,
    /// Checkpoints workers streamed back.
    Checkpoint,
    /// Result files clients downloaded.
    Artifact,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Upload => "upload",
            Self::Download => "download",
            Self::Checkpoint => "checkpoint",
            Self::Artifact => "artifact",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: String,
}

/// The coordinator's metrics registry; cheap to clone.
#[derive(Clone)]
pub struct CoordinatorMetrics {
    registry: Arc<Registry>,
    jobs: Family<StateLabel, Gauge>,
    folds: Family<StateLabel, Gauge>,
    workers_alive: Gauge,
    slots: Family<StateLabel, Gauge>,
    queued_folds: Gauge,
    streamed: Family<DirectionLabel, Counter>,
    attempt_failures: Family<CauseLabel, Counter>,
}

impl std::fmt::Debug for CoordinatorMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoordinatorMetrics").finish_non_exhaustive()
    }
}

impl Default for CoordinatorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CoordinatorMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("foldtrain");
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register("jobs", "Jobs by state", jobs.clone());
        let folds = Family::<StateLabel, Gauge>::default();
        registry.register("folds", "Folds of every job by state", folds.clone());
        let workers_alive = Gauge::default();
        registry.register(
            "workers_alive",
            "Workers registered and within their heartbeat lease",
            workers_alive.clone(),
        );
        let slots = Family::<StateLabel, Gauge>::default();
        registry.register(
            "worker_slots",
            "Slots of the live workers, busy or free",
            slots.clone(),
        );
        let queued_folds = Gauge::default();
        registry.register(
            "queued_folds",
            "Folds waiting for a free slot",
            queued_folds.clone(),
        );
        let streamed = Family::<DirectionLabel, Counter>::default();
        registry.register_with_unit(
            "streamed",
            "Bytes streamed through the coordinator: blob uploads and downloads, checkpoints from workers, result files",
            Unit::Bytes,
            streamed.clone(),
        );
        let attempt_failures = Family::<CauseLabel, Counter>::default();
        registry.register(
            "fold_attempt_failures",
            "Fold attempts that ended failed or lost, by cause",
            attempt_failures.clone(),
        );
        for direction in [
            Direction::Upload,
            Direction::Download,
            Direction::Checkpoint,
            Direction::Artifact,
        ] {
            let _ = streamed.get_or_create(&DirectionLabel {
                direction: direction.as_str(),
            });
        }
        Self {
            registry: Arc::new(registry),
            jobs,
            folds,
            workers_alive,
            slots,
            queued_folds,
            streamed,
            attempt_failures,
        }
    }

    /// Counts `bytes` that went `direction`.
    pub fn streamed(&self, direction: Direction, bytes: usize) {
        self.streamed
            .get_or_create(&DirectionLabel {
                direction: direction.as_str(),
            })
            .inc_by(bytes as u64);
    }

    /// Counts one attempt that ended failed or lost.
    pub fn attempt_failed(&self, cause: &str) {
        self.attempt_failures
            .get_or_create(&CauseLabel {
                cause: cause_label(cause),
            })
            .inc();
    }

    /// The exposition text, with the state gauges read from `scheduler` now.
    pub async fn render(&self, scheduler: &Scheduler) -> Result<String> {
        let (workers, busy, free, queued) = {
            let st = scheduler.lock();
            let workers = st.registry.workers();
            let slots = workers.iter().flat_map(|w| &w.slots);
            let busy = slots.clone().filter(|s| s.busy.is_some()).count();
            let free = slots.filter(|s| s.busy.is_none()).count();
            // Folds of a job stopped meanwhile stay in the queue until dispatch drops them.
            let queued = st
                .queue
                .iter()
                .filter(|(job, _)| st.jobs.get(job).is_some_and(|j| j.active()))
                .count();
            (workers.len(), busy, free, queued)
        };
        self.workers_alive.set(workers as i64);
        self.slots
            .get_or_create(&StateLabel { state: "busy" })
            .set(busy as i64);
        self.slots
            .get_or_create(&StateLabel { state: "free" })
            .set(free as i64);
        self.queued_folds.set(queued as i64);
        let (jobs, folds) = scheduler.store().db.call(count_states).await?;
        for (state, count) in JOB_STATES.iter().zip(jobs) {
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(count);
        }
        for (state, count) in FOLD_STATES.iter().zip(folds) {
            self.folds
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(count);
        }
        foldtrain_proto::metrics_http::encode_registry(&self.registry)
            .map_err(crate::error::CoordinatorError::Corrupt)
    }
}

/// Jobs and folds per state, in `JOB_STATES` / `FOLD_STATES` order.
fn count_states(conn: &mut Connection) -> Result<([i64; 5], [i64; 5])> {
    let mut jobs = [0; 5];
    let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, count) = row?;
        let state = JobState::parse(&state)?;
        if let Some(i) = JOB_STATES.iter().position(|s| *s == state) {
            jobs[i] = count;
        }
    }
    let mut folds = [0; 5];
    let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM folds GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, count) = row?;
        let state = FoldState::parse(&state)?;
        if let Some(i) = FOLD_STATES.iter().position(|s| *s == state) {
            folds[i] = count;
        }
    }
    Ok((jobs, folds))
}

/// Causes come from workers over the wire; anything but a short snake_case word is
/// folded into `other` so a misbehaving worker cannot blow up the label set.
fn cause_label(cause: &str) -> String {
    let ok = !cause.is_empty()
        && cause.len() <= 32
        && cause.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if ok {
        cause.to_owned()
    } else {
        "other".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_kept_short_and_tame() {
        assert_eq!(cause_label("worker_lost"), "worker_lost");
        assert_eq!(cause_label("nan_loss"), "nan_loss");
        assert_eq!(cause_label(""), "other");
        assert_eq!(cause_label("Robert'); DROP"), "other");
        assert_eq!(cause_label(&"a".repeat(33)), "other");
    }
}
