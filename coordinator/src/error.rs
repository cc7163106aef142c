//! The coordinator's error type, with its one mapping to gRPC status codes.

use foldtrain_proto::{BlobHash, FoldIndex, JobId, ProtoError, WorkerId};

/// Everything the coordinator's store, scheduler, aggregation and server can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("unknown job {0}")]
    UnknownJob(JobId),
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Wire(#[from] ProtoError),
    #[error("blob hash mismatch: expected {expected}, got {actual}")]
    BlobHashMismatch {
        expected: BlobHash,
        actual: BlobHash,
    },
    #[error("blob {0} not found")]
    BlobNotFound(BlobHash),
    #[error("blob {hash} exceeds the {limit}-byte limit on one upload; nothing of it was stored")]
    BlobTooLarge { hash: BlobHash, limit: u64 },
    #[error(
        "the upload sent nothing for {} s{}; nothing unfinished was stored",
        idle.as_secs_f64(),
        blob.map(|b| format!(" in the middle of blob {b}")).unwrap_or_default()
    )]
    UploadIdle {
        idle: std::time::Duration,
        blob: Option<BlobHash>,
    },
    /// Another coordinator process (or this one, twice) has the data directory open.
    #[error(
        "another coordinator holds the data directory {} (lock file {}); stop it, or give this one another --data-dir",
        dir.display(),
        lock.display()
    )]
    DataDirLocked {
        dir: std::path::PathBuf,
        lock: std::path::PathBuf,
    },
    #[error("job references {count} images not uploaded yet (first: {first}); upload them first")]
    MissingImages { count: usize, first: String },
    #[error(
        "model.pretrained names blob {0}, which the coordinator does not hold; pass the weights \
         file with --pretrained on submit or run, which uploads it"
    )]
    MissingPretrained(foldtrain_proto::BlobHash),
    #[error("cannot split the training rows: {0}")]
    Split(#[from] crate::split::SplitError),
    #[error("artifact {path:?} of job {job} not found")]
    ArtifactNotFound { job: JobId, path: String },
    #[error("job {job} is {state}; {action} needs a {needed} job")]
    WrongJobState {
        job: JobId,
        state: String,
        action: &'static str,
        needed: &'static str,
    },
    /// A job or fold in a final state: it never moves again.
    #[error("{what} is already {state}, a final state; it was not moved to {wanted}")]
    AlreadyFinal {
        what: String,
        state: &'static str,
        wanted: &'static str,
    },
    #[error("stale attempt {attempt} of fold {fold} of job {job} (current: {current})")]
    StaleAttempt {
        job: JobId,
        fold: FoldIndex,
        attempt: foldtrain_proto::AttemptId,
        current: String,
    },
    #[error("worker {worker}: {message}")]
    WorkerStream { worker: WorkerId, message: String },
    #[error("fold {fold} of job {job}: {message}")]
    BadFoldResult {
        job: JobId,
        fold: FoldIndex,
        message: String,
    },
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    #[error(
        "worker id {0} is held by a live registration with another call token; a worker may \
         only renew its own registration (use another --worker-id, or wait for the lease to end)"
    )]
    WorkerIdTaken(WorkerId),
    #[error("database: {0}")]
    Database(#[from] rusqlite::Error),
    /// Only for data read back from the data directory that does not parse or fit.
    #[error(
        "stored data is corrupt: {0}; the data directory was changed or damaged outside foldtrain"
    )]
    Corrupt(String),
    /// A blocking task (database, blobs, aggregation) panicked or was cancelled: a bug.
    #[error(
        "internal error: the {task} task did not finish ({message}); the coordinator's log has the panic, please report it"
    )]
    TaskFailed { task: &'static str, message: String },
    /// Encoding something the coordinator produced (JSON, CSV, metrics text) failed.
    #[error("could not encode {what}: {message}")]
    Encode { what: &'static str, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid server configuration: {0}")]
    Config(String),
    #[error("the coordinator is shutting down")]
    ShuttingDown,
}

impl CoordinatorError {
    /// Wraps an I/O error with what was being done and to which path.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    /// A blocking task that did not run to its end.
    pub fn task_failed(task: &'static str, err: tokio::task::JoinError) -> Self {
        Self::TaskFailed {
            task,
            message: err.to_string(),
        }
    }

    pub fn encode(what: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Encode {
            what,
            message: err.to_string(),
        }
    }

    /// The gRPC status code this error travels as.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::UnknownJob(_)
            | Self::UnknownWorker(_)
            | Self::BlobNotFound(_)
            | Self::ArtifactNotFound { .. } => Code::NotFound,
            Self::InvalidArgument(_)
            | Self::Wire(_)
            | Self::BlobHashMismatch { .. }
            | Self::Split(_) => Code::InvalidArgument,
            Self::BlobTooLarge { .. } => Code::ResourceExhausted,
            Self::UploadIdle { .. } => Code::DeadlineExceeded,
            Self::DataDirLocked { .. } => Code::FailedPrecondition,
            Self::MissingImages { .. }
            | Self::MissingPretrained(_)
            | Self::WrongJobState { .. }
            | Self::AlreadyFinal { .. }
            | Self::StaleAttempt { .. } => Code::FailedPrecondition,
            Self::WorkerStream { .. } | Self::ShuttingDown => Code::Unavailable,
            Self::Unauthenticated => Code::Unauthenticated,
            Self::WorkerIdTaken(_) => Code::PermissionDenied,
            Self::BadFoldResult { .. }
            | Self::Database(_)
            | Self::Corrupt(_)
            | Self::TaskFailed { .. }
            | Self::Encode { .. }
            | Self::Io { .. }
            | Self::Config(_) => Code::Internal,
        }
    }
}

impl From<CoordinatorError> for tonic::Status {
    fn from(err: CoordinatorError) -> Self {
        tonic::Status::new(err.code(), err.to_string())
    }
}

pub type Result<T, E = CoordinatorError> = std::result::Result<T, E>;

/// Runs blocking work (SQLite, blob files, hashing) off the async runtime; a panic there
/// comes back as `TaskFailed` naming the task.
pub async fn run_blocking<T, F>(task: &'static str, work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| CoordinatorError::task_failed(task, e))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        let status: tonic::Status = CoordinatorError::UnknownJob(JobId::new("job-x")).into();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(status.message(), "unknown job job-x");
        let mismatch = CoordinatorError::BlobHashMismatch {
            expected: BlobHash::of(b"a"),
            actual: BlobHash::of(b"b"),
        };
        assert_eq!(mismatch.code(), tonic::Code::InvalidArgument);
        assert!(mismatch.to_string().contains(&BlobHash::of(b"a").to_hex()));
        assert_eq!(
            CoordinatorError::Unauthenticated.code(),
            tonic::Code::Unauthenticated
        );
    }

    #[tokio::test]
    async fn a_panicking_blocking_task_is_named_not_called_corrupt() {
        let err = run_blocking::<(), _>("aggregation", || panic!("boom"))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            CoordinatorError::TaskFailed {
                task: "aggregation",
                ..
            }
        ));
        let text = err.to_string();
        assert!(
            text.contains("aggregation") && text.contains("log"),
            "{text}"
        );
        assert!(!text.contains("corrupt"), "{text}");
    }
}
