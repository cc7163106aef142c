//! What can go wrong serving folds: configuration, binding, the blob cache, the
//! coordinator, and refused tasks; each with its gRPC code and, where it ends an
//! attempt, whether a retry elsewhere may succeed.

use std::net::SocketAddr;
use std::path::PathBuf;

use foldtrain_proto::FailureCause;
use foldtrain_proto::task::FoldFailure;
use foldtrain_proto::{BlobHash, ProtoError};
use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("blob cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Task(#[from] ProtoError),
    #[error("worker {worker} has no slot with device index {index}; its slots are {slots}")]
    NoSuchSlot {
        worker: String,
        index: i32,
        slots: String,
    },
    #[error("slot {slot} of worker {worker} is busy with {holder}")]
    SlotBusy {
        worker: String,
        slot: String,
        holder: String,
    },
    #[error("coordinator {url}: {message}")]
    Coordinator { url: String, message: String },
    #[error(
        "image {name} (blob {hash}) is not on the coordinator{}; upload the data set again",
        others_note(.others)
    )]
    MissingBlob {
        name: String,
        hash: BlobHash,
        others: usize,
    },
    #[error("coordinator sent a bad blob stream: {0}")]
    BadBlobStream(String),
    #[error("blob {hash} for image {name} arrived corrupt: its bytes hash to {actual}")]
    CorruptBlob {
        name: String,
        hash: BlobHash,
        actual: BlobHash,
    },
    #[error("serving gRPC on {addr}: {message}")]
    Serve { addr: SocketAddr, message: String },
    #[error("{what} failed: {message}")]
    Internal { what: &'static str, message: String },
}

fn others_note(others: &usize) -> String {
    match others {
        0 => String::new(),
        n => format!(", nor are {n} other image(s) of this fold"),
    }
}

impl WorkerError {
    pub fn cache(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Cache {
            path: path.into(),
            source,
        }
    }

    /// The status code a caller of `TrainFold` sees.
    pub fn code(&self) -> Code {
        match self {
            Self::Task(_) => Code::InvalidArgument,
            Self::NoSuchSlot { .. } | Self::Config(_) => Code::FailedPrecondition,
            Self::SlotBusy { .. } => Code::ResourceExhausted,
            Self::MissingBlob { .. } => Code::NotFound,
            Self::Coordinator { .. } => Code::Unavailable,
            Self::Bind { .. }
            | Self::Cache { .. }
            | Self::BadBlobStream(_)
            | Self::CorruptBlob { .. }
            | Self::Serve { .. }
            | Self::Internal { .. } => Code::Internal,
        }
    }

    /// The failure event of an attempt this error ended. Missing blobs stay missing and a
    /// malformed task stays malformed; network and disk trouble may pass.
    pub fn to_failure(&self) -> FoldFailure {
        let cause = match self {
            Self::MissingBlob { .. } => FailureCause::MissingBlob,
            Self::Task(_) | Self::Config(_) => FailureCause::BadTask,
            Self::NoSuchSlot { .. } => FailureCause::Rejected,
            Self::SlotBusy { .. } => FailureCause::Busy,
            Self::Coordinator { .. } | Self::BadBlobStream(_) | Self::CorruptBlob { .. } => {
                FailureCause::Io
            }
            Self::Bind { .. } | Self::Cache { .. } | Self::Serve { .. } => FailureCause::Io,
            Self::Internal { .. } => FailureCause::Internal,
        };
        FoldFailure::new(cause, self.to_string())
    }
}

impl From<WorkerError> for tonic::Status {
    fn from(err: WorkerError) -> Self {
        tonic::Status::new(err.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_is_at_fault() {
        let missing = WorkerError::MissingBlob {
            name: "train/a.jpg".into(),
            hash: BlobHash::of(b"a"),
            others: 2,
        };
        let text = missing.to_string();
        assert!(
            text.contains("train/a.jpg") && text.contains("2 other image(s)"),
            "{text}"
        );
        let failure = missing.to_failure();
        assert_eq!(
            (failure.cause.as_str(), failure.retryable()),
            ("missing_blob", false)
        );

        let busy = WorkerError::SlotBusy {
            worker: "w1".into(),
            slot: "cuda:0".into(),
            holder: "fold 2 of job j".into(),
        };
        assert_eq!(tonic::Status::from(busy).code(), Code::ResourceExhausted);
        let status = tonic::Status::from(WorkerError::Task(ProtoError::MissingField("job_id")));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("job_id"));
    }
}
