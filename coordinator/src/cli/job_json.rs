//! The stable JSON shapes of `status --json`, `cancel --json` and `workers --json`:
//! scripts depend on these names, so they are spelled out, not derived from the wire.

use foldtrain_proto::pb;
use serde::{Deserialize, Serialize};

/// A job: its state and, from `status JOB`, every fold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobJson {
    pub job_id: String,
    pub name: String,
    pub state: String,
    pub message: String,
    pub created_unix_ms: i64,
    pub finished_unix_ms: Option<i64>,
    pub folds: Vec<FoldJson>,
    /// CV mean and std and the OOF scores, once the job succeeded.
    pub summary: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldJson {
    pub fold: u32,
    pub state: String,
    pub epoch: u32,
    pub epochs: u32,
    pub batch: u32,
    pub batches: u32,
    pub best_epoch: Option<u32>,
    pub loss: f64,
    pub val_loss: f64,
    pub val_f1: f64,
    pub images_per_sec: f64,
    pub worker_id: Option<String>,
    pub attempts: Vec<AttemptJson>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptJson {
    pub attempt: u64,
    pub worker_id: String,
    pub state: String,
    pub reason: Option<String>,
    pub started_unix_ms: i64,
    pub ended_unix_ms: Option<i64>,
    pub resumed_from_epoch: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerJson {
    pub worker_id: String,
    pub address: String,
    pub alive: bool,
    pub busy_slots: u32,
    pub slots: Vec<SlotJson>,
    pub last_seen_unix_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotJson {
    /// The GPU index; negative for a CPU slot.
    pub device_index: i32,
    pub device_name: String,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn non_zero<T: Default + PartialEq>(v: T) -> Option<T> {
    (v != T::default()).then_some(v)
}

impl From<&pb::JobStatus> for JobJson {
    fn from(s: &pb::JobStatus) -> Self {
        Self {
            job_id: s.job_id.clone(),
            name: s.name.clone(),
            state: s.state().as_str().to_string(),
            message: s.message.clone(),
            created_unix_ms: s.created_unix_ms,
            finished_unix_ms: non_zero(s.finished_unix_ms),
            folds: s.folds.iter().map(FoldJson::from).collect(),
            summary: serde_json::from_str(&s.summary_json).ok(),
        }
    }
}

impl From<&pb::FoldStatus> for FoldJson {
    fn from(f: &pb::FoldStatus) -> Self {
        Self {
            fold: f.fold,
            state: f.state().as_str().to_string(),
            epoch: f.epoch,
            epochs: f.epochs,
            batch: f.batch,
            batches: f.batches,
            best_epoch: non_zero(f.best_epoch),
            loss: f.loss,
            val_loss: f.val_loss,
            val_f1: f.val_f1,
            images_per_sec: f.images_per_sec,
            worker_id: non_empty(&f.worker_id),
            attempts: f
                .attempts
                .iter()
                .map(|a| AttemptJson {
                    attempt: a.attempt,
                    worker_id: a.worker_id.clone(),
                    state: a.state().as_str().to_string(),
                    reason: non_empty(&a.reason),
                    started_unix_ms: a.started_unix_ms,
                    ended_unix_ms: non_zero(a.ended_unix_ms),
                    resumed_from_epoch: non_zero(a.resumed_from_epoch),
                })
                .collect(),
        }
    }
}

impl From<&pb::WorkerStatus> for WorkerJson {
    fn from(w: &pb::WorkerStatus) -> Self {
        Self {
            worker_id: w.worker_id.clone(),
            address: w.address.clone(),
            alive: w.alive,
            busy_slots: w.busy_slots,
            slots: w
                .slots
                .iter()
                .map(|s| SlotJson {
                    device_index: s.device_index,
                    device_name: s.device_name.clone(),
                })
                .collect(),
            last_seen_unix_ms: w.last_seen_unix_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use foldtrain_proto::{FoldState, JobState};

    use super::*;

    #[test]
    fn unset_wire_fields_become_null_and_summary_is_an_object() {
        let status = pb::JobStatus {
            job_id: "job-1".into(),
            state: JobState::Running.into(),
            folds: vec![pb::FoldStatus {
                fold: 0,
                state: FoldState::Queued.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = serde_json::to_value(JobJson::from(&status)).unwrap();
        assert_eq!(json["folds"][0]["best_epoch"], serde_json::Value::Null);
        assert_eq!(json["folds"][0]["worker_id"], serde_json::Value::Null);
        assert_eq!(json["summary"], serde_json::Value::Null);
        let done = pb::JobStatus {
            summary_json: r#"{"oof":{"mcc":0.5}}"#.into(),
            finished_unix_ms: 5,
            ..status
        };
        let json = serde_json::to_value(JobJson::from(&done)).unwrap();
        assert_eq!(json["summary"]["oof"]["mcc"], 0.5);
        assert_eq!(json["finished_unix_ms"], 5);
    }
}
