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

use crate::error::Result;
use crate::store::{FoldState, JobState, Store, parse_column};
use foldtrain_proto::FailureCause;

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
    /// A `FailureCause` name: the type keeps the label set small and tame.
    cause: &'static str,
}

/// The scheduler's live numbers at the moment of a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveGauges {
    pub workers: usize,
    pub busy_slots: usize,
    pub free_slots: usize,
    pub queued_folds: usize,
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
    pub fn attempt_failed(&self, cause: FailureCause) {
        self.attempt_failures
            .get_or_create(&CauseLabel {
                cause: cause.as_str(),
            })
            .inc();
    }

    /// The exposition text, with the live gauges given and the job and fold counts read
    /// from `store` now.
    pub async fn render(&self, gauges: LiveGauges, store: &Store) -> Result<String> {
        self.workers_alive.set(gauges.workers as i64);
        self.slots
            .get_or_create(&StateLabel { state: "busy" })
            .set(gauges.busy_slots as i64);
        self.slots
            .get_or_create(&StateLabel { state: "free" })
            .set(gauges.free_slots as i64);
        self.queued_folds.set(gauges.queued_folds as i64);
        let (jobs, folds) = store.db.call(count_states).await?;
        for (state, count) in JobState::ALL.iter().zip(jobs) {
            self.jobs
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(count);
        }
        for (state, count) in FoldState::ALL.iter().zip(folds) {
            self.folds
                .get_or_create(&StateLabel {
                    state: state.as_str(),
                })
                .set(count);
        }
        foldtrain_proto::runtime::metrics_http::encode_registry(&self.registry)
            .map_err(|e| crate::error::CoordinatorError::encode("metrics", e))
    }
}

/// Jobs and folds per state, in `JobState::ALL` / `FoldState::ALL` order; a state with
/// no jobs reads 0 rather than vanishing.
fn count_states(conn: &mut Connection) -> Result<([i64; 5], [i64; 5])> {
    let mut jobs = [0; 5];
    let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, count) = row?;
        let state: JobState = parse_column("jobs.state", &state)?;
        if let Some(i) = JobState::ALL.iter().position(|s| *s == state) {
            jobs[i] = count;
        }
    }
    let mut folds = [0; 5];
    let mut stmt = conn.prepare_cached("SELECT state, count(*) FROM folds GROUP BY state")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    for row in rows {
        let (state, count) = row?;
        let state: FoldState = parse_column("folds.state", &state)?;
        if let Some(i) = FoldState::ALL.iter().position(|s| *s == state) {
            folds[i] = count;
        }
    }
    Ok((jobs, folds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_kept_short_and_tame() {
        // A worker can only send a known cause (an unknown number decodes as
        // `unspecified`), so the label set is the enum's names and nothing else.
        let metrics = CoordinatorMetrics::new();
        for &cause in FailureCause::ALL {
            metrics.attempt_failed(cause);
        }
        metrics.attempt_failed(FailureCause::Unspecified);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("foldtrain_fold_attempt_failures_total{"))
            .map(|l| l.split('"').nth(1).unwrap())
            .collect();
        assert_eq!(labels.len(), FailureCause::ALL.len() + 1, "{text}");
        for label in labels {
            assert!(!label.is_empty() && label.len() <= 32, "{label}");
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
        }
        assert!(text.contains(r#"cause="worker_lost""#), "{text}");
    }
}
