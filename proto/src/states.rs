//! The typed life cycle of jobs, folds and attempts, and why attempts fail: the rules
//! (terminal, retryable) live here and nowhere else.
//!
//! The types are the generated wire enums of `foldtrain.v1`. Their text form (`as_str`)
//! is the one operators see in `status --json`, metrics labels and the store's columns.

use std::fmt;
use std::str::FromStr;

use crate::error::ProtoError;
pub use crate::pb::{AttemptState, FailureCause, FoldState, JobState};

/// Text names for a wire enum, in one table per type.
macro_rules! text_names {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// Every named value (without `Unspecified`).
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The lowercase name, e.g. `"succeeded"`; `"unspecified"` for the zero value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unspecified => "unspecified",
                }
            }

            /// The enum from a wire integer; unknown numbers are an error naming the type.
            pub fn from_wire(value: i32) -> Result<Self, ProtoError> {
                match Self::try_from(value) {
                    Ok(Self::Unspecified) | Err(_) => Err(ProtoError::InvalidEnum {
                        name: stringify!($name),
                        value: value.to_string(),
                    }),
                    Ok(v) => Ok(v),
                }
            }
        }

        impl FromStr for $name {
            type Err = ProtoError;

            fn from_str(text: &str) -> Result<Self, ProtoError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(ProtoError::InvalidEnum {
                        name: stringify!($name),
                        value: other.to_string(),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_names!(JobState {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
});

text_names!(FoldState {
    Queued => "queued",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Cancelled => "cancelled",
});

text_names!(AttemptState {
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    Lost => "lost",
    Cancelled => "cancelled",
});

text_names!(FailureCause {
    WorkerLost => "worker_lost",
    NanLoss => "nan_loss",
    BadImage => "bad_image",
    BadConfig => "bad_config",
    Io => "io",
    Cancelled => "cancelled",
    Data => "data",
    BadModel => "bad_model",
    BadCheckpoint => "bad_checkpoint",
    Device => "device",
    Torch => "torch",
    SinkClosed => "sink_closed",
    MissingBlob => "missing_blob",
    BadTask => "bad_task",
    Rejected => "rejected",
    Busy => "busy",
    Internal => "internal",
    BadResult => "bad_result",
    Coordinator => "coordinator",
    Protocol => "protocol",
    WorkerStopping => "worker_stopping",
});

impl JobState {
    /// A job in a terminal state never moves again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl FoldState {
    /// A fold in a terminal state gets no further attempt.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

impl AttemptState {
    /// Every state but `Running` is how an attempt ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Running | Self::Unspecified)
    }
}

impl FailureCause {
    /// Whether another attempt may succeed where this one failed. Lost workers, disk and
    /// network trouble, device faults and the coordinator's own trouble may pass; a NaN
    /// loss, a corrupt image, a bad config or a malformed task would fail again.
    pub fn is_retryable(self) -> bool {
        match self {
            Self::WorkerLost
            | Self::WorkerStopping
            | Self::Io
            | Self::Device
            | Self::Torch
            | Self::SinkClosed
            | Self::Busy
            | Self::Internal
            | Self::Coordinator => true,
            Self::Unspecified
            | Self::NanLoss
            | Self::BadImage
            | Self::BadConfig
            | Self::Cancelled
            | Self::Data
            | Self::BadModel
            | Self::BadCheckpoint
            | Self::MissingBlob
            | Self::BadTask
            | Self::Rejected
            | Self::BadResult
            | Self::Protocol => false,
        }
    }

    /// Whether a retry after this cause counts against the fold's attempt budget. A worker
    /// that hands its fold back on shutdown did nothing wrong, and neither did a busy slot
    /// that another slot may take.
    pub fn uses_retry_budget(self) -> bool {
        !matches!(self, Self::WorkerStopping | Self::Busy)
    }

    /// A lost worker ends its attempt as `lost`, every other cause as `failed`.
    pub fn attempt_state(self) -> AttemptState {
        if self == Self::WorkerLost {
            AttemptState::Lost
        } else {
            AttemptState::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_the_stored_text() {
        for &s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        for &s in FoldState::ALL {
            assert_eq!(s.as_str().parse::<FoldState>().unwrap(), s);
        }
        for &s in AttemptState::ALL {
            assert_eq!(s.as_str().parse::<AttemptState>().unwrap(), s);
        }
        for &c in FailureCause::ALL {
            assert_eq!(c.as_str().parse::<FailureCause>().unwrap(), c);
            // Causes become metric labels: short, lowercase, underscores only.
            assert!(c.as_str().len() <= 32);
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
        }
        assert_eq!(JobState::Succeeded.to_string(), "succeeded");
        assert_eq!(FailureCause::WorkerLost.as_str(), "worker_lost");
    }

    #[test]
    fn unknown_text_and_numbers_are_named_errors() {
        let err = "finished".parse::<JobState>().unwrap_err().to_string();
        assert!(
            err.contains("JobState") && err.contains("finished"),
            "{err}"
        );
        assert!(JobState::from_wire(0).is_err());
        assert!(FoldState::from_wire(99).is_err());
        assert_eq!(
            AttemptState::from_wire(AttemptState::Lost as i32).unwrap(),
            AttemptState::Lost
        );
    }

    #[test]
    fn terminal_states() {
        let terminal: Vec<_> = JobState::ALL.iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(
            terminal,
            [
                &JobState::Succeeded,
                &JobState::Failed,
                &JobState::Cancelled
            ]
        );
        assert!(FoldState::Done.is_terminal() && !FoldState::Queued.is_terminal());
        assert!(AttemptState::Lost.is_terminal() && !AttemptState::Running.is_terminal());
    }

    #[test]
    fn retry_rules() {
        assert!(FailureCause::WorkerLost.is_retryable());
        assert!(FailureCause::Io.is_retryable());
        assert!(FailureCause::Coordinator.is_retryable());
        assert!(!FailureCause::NanLoss.is_retryable());
        assert!(!FailureCause::BadImage.is_retryable());
        assert!(!FailureCause::MissingBlob.is_retryable());
        assert!(!FailureCause::Cancelled.is_retryable());
        assert!(FailureCause::WorkerStopping.is_retryable());
        assert!(!FailureCause::WorkerStopping.uses_retry_budget());
        assert!(FailureCause::WorkerLost.uses_retry_budget());
        assert_eq!(FailureCause::WorkerLost.attempt_state(), AttemptState::Lost);
        assert_eq!(FailureCause::NanLoss.attempt_state(), AttemptState::Failed);
    }
}
