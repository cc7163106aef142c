//! The job's time breakdown (metrics.json `timing`): what the client spent before the
//! job existed, where the folds' time went, and what aggregation and the report took.

use std::collections::BTreeMap;

use foldtrain_proto::FoldIndex;
use serde::{Deserialize, Serialize};

use crate::store::{AttemptRecord, Phase, PhaseSeconds};

/// Where a job's time went, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct JobTiming {
    /// From the coordinator accepting the job to its results and report written.
    pub wall_seconds: f64,
    /// On the submitting client, before the job existed (0 where the client did not say).
    pub client: ClientTiming,
    /// Summed over folds and their attempts. Folds train in parallel, so these add up to
    /// more than the wall time when several slots are busy.
    pub fold_seconds: FoldSeconds,
    /// The most folds that were running at one time.
    pub parallel_folds: u32,
    pub aggregation_seconds: f64,
    pub report_seconds: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ClientTiming {
    /// Reading, checking and hashing the data set.
    pub hashing_seconds: f64,
    /// Uploading the images the coordinator lacked.
    pub upload_seconds: f64,
}

/// Fold-seconds per phase.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct FoldSeconds {
    /// Queued, waiting for a free slot: before the first attempt, and between a failed
    /// attempt and its retry.
    pub waiting_for_worker: f64,
    /// Inside attempts, from dispatch to the attempt's end: the phases below.
    pub in_attempts: f64,
    /// The worker's training passes.
    pub training: f64,
    /// The worker's validation passes.
    pub validation: f64,
    /// The worker's training thread at epoch ends: copying the best weights when they
    /// improved, and encoding the latest checkpoint.
    pub checkpoint_encoding: f64,
    /// The coordinator waiting for checkpoint bytes: each latest checkpoint after its
    /// epoch's record, and the best weights (sent once) after the last latest checkpoint.
    pub checkpoint_streaming: f64,
    /// The coordinator writing checkpoints (blob file, fsync, database row). The worker
    /// trains on meanwhile, so this overlaps `training`.
    pub checkpoint_storage: f64,
    /// The coordinator waiting for the out-of-fold and test probabilities once the fold's
    /// last checkpoint was stored.
    pub prediction: f64,
    /// What the worker's phases and the coordinator's waits above leave of `in_attempts`:
    /// dispatch, blob fetch, model setup, and the stream standing still while the
    /// coordinator stored a checkpoint. (Storage itself runs beside training, so it is not
    /// taken off.) Never below 0.
    pub other: f64,
}

/// What the breakdown is computed from.
#[derive(Debug, Clone, Copy)]
pub struct TimingInputs<'a> {
    pub created_ms: i64,
    pub finished_ms: i64,
    /// Every attempt of the job, in any order.
    pub attempts: &'a [AttemptRecord],
    /// Every phase recorded for the job.
    pub phases: &'a [PhaseSeconds],
    pub aggregation_seconds: f64,
    pub report_seconds: f64,
}

impl JobTiming {
    pub fn compute(inputs: TimingInputs<'_>) -> Self {
        let TimingInputs {
            created_ms,
            finished_ms,
            attempts,
            phases,
            ..
        } = inputs;
        let sum = |phase: Phase| -> f64 {
            phases
                .iter()
                .filter(|p| p.phase == phase)
                .map(|p| p.seconds)
                .fold(0.0, |a, b| a + b)
        };
        let mut folds = FoldSeconds {
            waiting_for_worker: waiting_for_worker(created_ms, attempts),
            in_attempts: attempts
                .iter()
                .map(|a| seconds_between(a.started_ms, a.ended_ms.unwrap_or(finished_ms)))
                .fold(0.0, |a, b| a + b),
            training: sum(Phase::Training),
            validation: sum(Phase::Validation),
            checkpoint_encoding: sum(Phase::CheckpointEncoding),
            checkpoint_streaming: sum(Phase::CheckpointStreaming),
            checkpoint_storage: sum(Phase::CheckpointStorage),
            prediction: sum(Phase::Prediction),
            other: 0.0,
        };
        let accounted = folds.training
            + folds.validation
            + folds.checkpoint_encoding
            + folds.checkpoint_streaming
            + folds.prediction;
        folds.other = (folds.in_attempts - accounted).max(0.0);
        Self {
            wall_seconds: seconds_between(created_ms, finished_ms),
            client: ClientTiming {
                hashing_seconds: sum(Phase::ClientHashing),
                upload_seconds: sum(Phase::ClientUpload),
            },
            fold_seconds: folds,
            parallel_folds: parallel_folds(attempts, finished_ms),
            aggregation_seconds: inputs.aggregation_seconds,
            report_seconds: inputs.report_seconds,
        }
    }
}

fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms).max(0) as f64 / 1000.0
}

/// Per fold, the time from the job's acceptance to its first dispatch, plus from each
/// attempt's end to the next one's dispatch.
fn waiting_for_worker(created_ms: i64, attempts: &[AttemptRecord]) -> f64 {
    let mut by_fold: BTreeMap<FoldIndex, Vec<&AttemptRecord>> = BTreeMap::new();
    for a in attempts {
        by_fold.entry(a.fold).or_default().push(a);
    }
    by_fold
        .into_values()
        .map(|mut tries| {
            tries.sort_by_key(|a| (a.started_ms, a.id));
            let mut queued_since = created_ms;
            let mut waited = 0.0;
            for a in tries {
                waited += seconds_between(queued_since, a.started_ms);
                queued_since = a.ended_ms.unwrap_or(a.started_ms);
            }
            waited
        })
        .fold(0.0, |a, b| a + b)
}

/// The most attempts running at one moment.
fn parallel_folds(attempts: &[AttemptRecord], finished_ms: i64) -> u32 {
    // Ends sort before starts at the same millisecond: a slot handed straight on is one.
    let mut edges: Vec<(i64, i32)> = attempts
        .iter()
        .flat_map(|a| [(a.started_ms, 1), (a.ended_ms.unwrap_or(finished_ms), -1)])
        .collect();
    edges.sort();
    let (mut running, mut most) = (0i32, 0i32);
    for (_, step) in edges {
        running += step;
        most = most.max(running);
    }
    most as u32
}

#[cfg(test)]
mod tests {
    use foldtrain_proto::{AttemptId, JobId, WorkerId};

    use super::*;
    use crate::store::AttemptState;

    fn attempt(id: u64, fold: u32, started_ms: i64, ended_ms: i64) -> AttemptRecord {
        AttemptRecord {
            id: AttemptId(id),
            job: JobId::new("job"),
            fold: FoldIndex(fold),
            worker: WorkerId::new("w"),
            slot: 0,
            state: AttemptState::Succeeded,
            reason: String::new(),
            started_ms,
            ended_ms: Some(ended_ms),
            resumed_from_epoch: 0,
        }
    }

    fn phase(fold: Option<u32>, phase: Phase, seconds: f64) -> PhaseSeconds {
        PhaseSeconds {
            fold: fold.map(FoldIndex),
            phase,
            seconds,
        }
    }

    #[test]
    fn two_slots_three_folds_and_a_retry() {
        // Folds 0 and 1 start at once; fold 2 waits for fold 0's slot. Fold 1's first
        // attempt is lost at 4 s and retried at 6 s.
        let attempts = [
            attempt(1, 0, 1_000, 11_000),
            attempt(2, 1, 1_000, 4_000),
            attempt(3, 2, 11_000, 21_000),
            attempt(4, 1, 6_000, 16_000),
        ];
        let phases = [
            phase(None, Phase::ClientHashing, 0.5),
            phase(None, Phase::ClientUpload, 0.25),
            phase(Some(0), Phase::Training, 6.0),
            phase(Some(1), Phase::Training, 9.0),
            phase(Some(2), Phase::Training, 6.0),
            phase(Some(0), Phase::Validation, 1.0),
            phase(Some(0), Phase::CheckpointEncoding, 0.5),
            phase(Some(0), Phase::CheckpointStreaming, 0.25),
            phase(Some(0), Phase::CheckpointStorage, 0.75),
            phase(Some(2), Phase::Prediction, 0.5),
        ];
        let t = JobTiming::compute(TimingInputs {
            created_ms: 0,
            finished_ms: 23_000,
            attempts: &attempts,
            phases: &phases,
            aggregation_seconds: 1.5,
            report_seconds: 0.5,
        });
        assert_eq!(t.wall_seconds, 23.0);
        assert_eq!(t.client.hashing_seconds, 0.5);
        assert_eq!(t.client.upload_seconds, 0.25);
        let f = t.fold_seconds;
        // 1 (fold 0) + 1 + 2 (fold 1, before each attempt) + 11 (fold 2).
        assert_eq!(f.waiting_for_worker, 15.0);
        assert_eq!(f.in_attempts, 10.0 + 3.0 + 10.0 + 10.0);
        assert_eq!(f.training, 21.0);
        assert_eq!(f.validation, 1.0);
        assert_eq!(f.checkpoint_encoding, 0.5);
        assert_eq!(f.checkpoint_streaming, 0.25);
        assert_eq!(f.checkpoint_storage, 0.75);
        assert_eq!(f.prediction, 0.5);
        assert_eq!(f.other, 33.0 - 23.25);
        assert_eq!(t.parallel_folds, 2);
        assert_eq!((t.aggregation_seconds, t.report_seconds), (1.5, 0.5));
    }

    #[test]
    fn overlapping_phases_never_leave_a_negative_rest() {
        // Clocks on two machines: the worker's seconds may exceed the coordinator's.
        let attempts = [attempt(1, 0, 0, 2_000)];
        let phases = [
            phase(Some(0), Phase::Training, 2.1),
            phase(Some(0), Phase::CheckpointStorage, 0.5),
        ];
        let t = JobTiming::compute(TimingInputs {
            created_ms: 0,
            finished_ms: 2_500,
            attempts: &attempts,
            phases: &phases,
            aggregation_seconds: 0.0,
            report_seconds: 0.0,
        });
        assert_eq!(t.fold_seconds.other, 0.0);
        assert_eq!(t.parallel_folds, 1);
        // Phases nobody measured are 0, printed as 0.0 and not -0.0 (an empty f64 sum).
        assert!(t.fold_seconds.prediction.is_sign_positive());
        assert!(t.fold_seconds.waiting_for_worker.is_sign_positive());
        // Nothing from the client: zeros, not a guess.
        assert_eq!(t.client, ClientTiming::default());
    }

    #[test]
    fn a_slot_handed_straight_on_counts_once() {
        let attempts = [attempt(1, 0, 0, 5_000), attempt(2, 1, 5_000, 9_000)];
        assert_eq!(parallel_folds(&attempts, 9_000), 1);
        assert_eq!(parallel_folds(&[], 9_000), 0);
    }
}
