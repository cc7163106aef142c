//! Why a fold failed, classified where the error is born: retryable or not, and a short
//! machine-readable cause that travels on the wire.

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
}

impl TrainError {
    /// Whether running the fold again (elsewhere) may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            TrainError::Cancelled { .. }
            | TrainError::NanLoss { .. }
            | TrainError::Model(_)
            | TrainError::Checkpoint(_)
            | TrainError::Config(_) => false,
            TrainError::Data(e) => e.retryable(),
            TrainError::Device(_)
            | TrainError::Torch(_)
            | TrainError::Panic(_)
            | TrainError::SinkClosed(_) => true,
        }
    }

    pub fn cause(&self) -> &'static str {
        match self {
            TrainError::Cancelled { .. } => "cancelled",
            TrainError::NanLoss { .. } => "nan_loss",
            TrainError::Data(DataError::Decode { .. } | DataError::InvalidName { .. }) => {
                "bad_image"
            }
            TrainError::Data(DataError::InvalidOption { .. }) => "bad_config",
            TrainError::Data(e) if e.retryable() => "io",
            TrainError::Data(_) => "data",
            TrainError::Model(_) => "bad_model",
            TrainError::Checkpoint(_) => "bad_checkpoint",
            TrainError::Config(_) => "bad_config",
            TrainError::Device(_) => "device",
            TrainError::Torch(_) | TrainError::Panic(_) => "torch",
            TrainError::SinkClosed(_) => "sink_closed",
        }
    }

    /// The wire form of this error.
    pub fn to_failure(&self) -> FoldFailure {
        FoldFailure {
            message: self.to_string(),
            retryable: self.retryable(),
            cause: self.cause().to_string(),
        }
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
        assert_eq!((f.cause.as_str(), f.retryable), ("nan_loss", false));
        assert!(
            f.message.contains("fold 1, epoch 2, train batch 3"),
            "{}",
            f.message
        );

        let bad = TrainError::from(DataError::Decode {
            name: "x.jpg".into(),
            reason: "truncated".into(),
        });
        assert_eq!((bad.cause(), bad.retryable()), ("bad_image", false));
        assert!(bad.to_string().contains("x.jpg"));

        let io = TrainError::from(DataError::Fetch {
            name: "y.jpg".into(),
            reason: "timed out".into(),
        });
        assert_eq!((io.cause(), io.retryable()), ("io", true));

        let cancelled = TrainError::Cancelled { fold: 0 };
        assert_eq!(
            (cancelled.cause(), cancelled.retryable()),
            ("cancelled", false)
        );
    }
}
