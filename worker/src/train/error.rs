//! Why a fold failed, classified where the error is born: retryable or not, and a short
//! machine-readable cause that travels on the wire.

use foldtrain_proto::FailureCause;
use foldtrain_proto::task::FoldFailure;

use super::checkpoint::CheckpointError;
use super::sink::SinkClosed;
use crate::data::DataError;
use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("fold {fold} was cancelled")]
    Cancelled { fold: u32 },
    #[error(
        "loss is not finite in fold {fold}, epoch {epoch}, {phase} batch {batch} (value {value})"
    )]
    NanLoss {
        fold: u32,
        epoch: u32,
        batch: u32,
        phase: &'static str,
        value: f64,
    },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("resume {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("invalid task: {0}")]
    Config(String),
    #[error("device: {0}")]
    Device(String),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// A libtorch call panicked (tch unwraps its errors), e.g. CUDA out of memory.
    #[error("training thread panicked: {0}")]
    Panic(String),
    #[error(transparent)]
    SinkClosed(#[from] SinkClosed),
    /// The worker is shutting down and handed the fold back after `batches_done` batches
    /// of `epoch` (with a checkpoint, when any batch was new since the last one).
    #[error(
        "fold {fold} was handed back at epoch {epoch} after {batches_done} batches: the worker is shutting down"
    )]
    Drained {
        fold: u32,
        epoch: u32,
        batches_done: u32,
    },
}

impl TrainError {
    /// Why, as the wire's typed cause. Whether a retry may succeed is the cause's rule
    /// (`FailureCause::is_retryable`).
    pub fn cause(&self) -> FailureCause {
        match self {
            TrainError::Cancelled { .. } => FailureCause::Cancelled,
            TrainError::Drained { .. } => FailureCause::WorkerStopping,
            TrainError::NanLoss { .. } => FailureCause::NanLoss,
            TrainError::Data(DataError::Decode { .. } | DataError::InvalidName { .. }) => {
                FailureCause::BadImage
            }
            TrainError::Data(DataError::InvalidOption { .. }) => FailureCause::BadConfig,
            TrainError::Data(e) if e.retryable() => FailureCause::Io,
            TrainError::Data(_) => FailureCause::Data,
            TrainError::Model(_) => FailureCause::BadModel,
            TrainError::Checkpoint(_) => FailureCause::BadCheckpoint,
            TrainError::Config(_) => FailureCause::BadConfig,
            TrainError::Device(_) => FailureCause::Device,
            TrainError::Torch(_) | TrainError::Panic(_) => FailureCause::Torch,
            TrainError::SinkClosed(_) => FailureCause::SinkClosed,
        }
    }

    /// Whether running the fold again (elsewhere) may succeed.
    pub fn retryable(&self) -> bool {
        self.cause().is_retryable()
    }

    /// The wire form of this error.
    pub fn to_failure(&self) -> FoldFailure {
        FoldFailure::new(self.cause(), self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_causes_and_retries() {
        let nan = TrainError::NanLoss {
            fold: 1,
            epoch: 2,
            batch: 3,
            phase: "train",
            value: f64::NAN,
        };
        let f = nan.to_failure();
        assert_eq!((f.cause.as_str(), f.retryable()), ("nan_loss", false));
        assert!(
            f.message.contains("fold 1, epoch 2, train batch 3"),
            "{}",
            f.message
        );

        let bad = TrainError::from(DataError::Decode {
            name: "x.jpg".into(),
            reason: "truncated".into(),
        });
        assert_eq!(
            (bad.cause().as_str(), bad.retryable()),
            ("bad_image", false)
        );
        assert!(bad.to_string().contains("x.jpg"));

        let io = TrainError::from(DataError::Fetch {
            name: "y.jpg".into(),
            reason: "timed out".into(),
        });
        assert_eq!((io.cause().as_str(), io.retryable()), ("io", true));

        let cancelled = TrainError::Cancelled { fold: 0 };
        assert_eq!(
            (cancelled.cause().as_str(), cancelled.retryable()),
            ("cancelled", false)
        );
    }
}
