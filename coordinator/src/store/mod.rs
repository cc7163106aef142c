//! Durable coordinator state: SQLite for jobs, folds, attempts, workers, events and
//! per-epoch metrics; content-addressed blobs on disk; crash-safe artifact files.

mod blobs;
mod db;
mod files;
pub mod folds;
pub mod jobs;
mod lock;
mod records;
pub mod refs;
mod schema;
pub mod timing;
pub mod workers;

#[cfg(test)]
mod tests;

pub use blobs::{BlobStore, BlobWriter};
pub use db::Db;
pub use files::{write_atomic, write_atomic_with};
pub use folds::ProbabilitySet;
pub use lock::{DataDirLock, LOCK_FILE};
pub(crate) use records::parse_column;
pub use records::{
    AttemptRecord, AttemptState, FoldRecord, FoldState, JobRecord, JobState, JobSummary,
    StoredCheckpoint, WorkerRecord, now_ms,
};
pub use schema::SCHEMA_VERSION;
pub use timing::{Phase, PhaseSeconds};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{CoordinatorError, Result};

/// The data directory: `state.sqlite`, `blobs/` and `jobs/<id>/` artifacts, locked to
/// this store (and its clones) until the last of them is dropped.
#[derive(Debug, Clone)]
pub struct Store {
    pub db: Db,
    pub blobs: BlobStore,
    root: PathBuf,
    _lock: Arc<DataDirLock>,
}

impl Store {
    /// Opens (creating and migrating as needed) the store in `root`. A data directory
    /// another open store holds, in this process or another, is refused before anything
    /// in it is touched.
    pub fn open(root: &Path) -> Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| CoordinatorError::io(format!("creating {}", root.display()), e))?;
        let lock = DataDirLock::acquire(root)?;
        Ok(Self {
            db: Db::open(&root.join("state.sqlite"))?,
            blobs: BlobStore::open(root.join("blobs"))?,
            root: root.to_path_buf(),
            _lock: Arc::new(lock),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the artifacts of `job` are written.
    pub fn job_dir(&self, job: &foldtrain_proto::JobId) -> PathBuf {
        self.root.join("jobs").join(job.as_str())
    }
}
