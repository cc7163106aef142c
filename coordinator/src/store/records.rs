//! The rows the store reads and writes, as typed records.

use foldtrain_proto::{AttemptId, BlobHash, FoldIndex, ImageRef, JobConfig, JobId, WorkerId};

use crate::error::{CoordinatorError, Result};

pub use foldtrain_proto::states::{AttemptState, FoldState, JobState};

/// Reads a state or cause from its text column: the one place stored text becomes a type.
pub(crate) fn parse_column<T>(column: &'static str, text: &str) -> Result<T>
where
    T: std::str::FromStr<Err = foldtrain_proto::ProtoError>,
{
    text.parse()
        .map_err(|e| CoordinatorError::Corrupt(format!("column {column}: {e}")))
}

/// A submitted job as stored: its manifest, config and the fold of every training row.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: JobId,
    pub name: String,
    pub state: JobState,
    pub message: String,
    pub config: JobConfig,
    /// Sorted class names; image labels index into them.
    pub class_names: Vec<String>,
    pub train: Vec<ImageRef>,
    pub test: Vec<ImageRef>,
    /// The fold of each training row, in row order.
    pub fold_of: Vec<u32>,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub summary_json: String,
}

impl JobRecord {
    /// The training rows validated by `fold`, in input order.
    pub fn val_rows(&self, fold: FoldIndex) -> Vec<usize> {
        (0..self.train.len())
            .filter(|&i| self.fold_of[i] == fold.0)
            .collect()
    }

    pub fn folds(&self) -> u32 {
        self.config.split.folds
    }
}

/// The short form of a job for listings.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    pub id: JobId,
    pub name: String,
    pub state: JobState,
    pub message: String,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
    pub summary_json: String,
}

/// A stored checkpoint: its blob and the epoch it was taken after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub blob: BlobHash,
    pub epoch: u32,
}

/// One fold's durable state and results.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldRecord {
    pub fold: FoldIndex,
    pub state: FoldState,
    /// Dispatches made so far.
    pub attempts: u32,
    /// Attempts that used up the fold's retry budget (`train.max_attempts`): the failed
    /// ones and those whose worker was lost.
    pub charged_attempts: u32,
    pub best_epoch: Option<u32>,
    pub best_val_loss: Option<f64>,
    pub epochs_run: Option<u32>,
    pub early_stopped: bool,
    pub latest_checkpoint: Option<StoredCheckpoint>,
    pub best_checkpoint: Option<StoredCheckpoint>,
    pub oof_blob: Option<BlobHash>,
    pub test_blob: Option<BlobHash>,
}

/// One dispatch of a fold to a worker slot.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub id: AttemptId,
    pub job: JobId,
    pub fold: FoldIndex,
    pub worker: WorkerId,
    pub slot: i32,
    pub state: AttemptState,
    pub reason: String,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub resumed_from_epoch: u32,
}

/// A registered worker as last seen.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRecord {
    pub id: WorkerId,
    pub address: String,
    pub hostname: String,
    /// (device index, device name); -1 is the CPU.
    pub slots: Vec<(i32, String)>,
    pub registered_ms: i64,
    pub last_seen_ms: i64,
}

/// Milliseconds since the Unix epoch, as stored in every `*_ms` column.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub(crate) fn blob_from_column(value: Option<Vec<u8>>) -> Result<Option<BlobHash>> {
    value
        .map(|bytes| {
            BlobHash::from_slice(&bytes).map_err(|e| CoordinatorError::Corrupt(e.to_string()))
        })
        .transpose()
}
