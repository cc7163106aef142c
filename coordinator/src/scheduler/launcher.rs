//! How a fold attempt reaches a worker: a trait, so scheduling can be tested against a
//! virtual worker and run against real ones over gRPC.

use foldtrain_proto::{FoldEvent, FoldTask, WorkerId};
use futures::stream::BoxStream;

use crate::error::CoordinatorError;

/// The secret a worker made when it registered: the coordinator presents it when it
/// calls that worker, and the worker takes calls from no one else. Never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CallToken(std::sync::Arc<str>);

impl CallToken {
    pub fn new(token: impl Into<std::sync::Arc<str>>) -> Self {
        Self(token.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CallToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallToken(<redacted>)")
    }
}

/// One slot of one worker: where an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTarget {
    pub worker: WorkerId,
    /// The worker's advertised gRPC address (e.g. `http://10.0.0.7:50052`).
    pub address: String,
    /// What to present when calling the worker.
    pub call_token: CallToken,
    /// Position of the slot in the worker's registration.
    pub slot: usize,
    /// GPU index on the worker, or -1 for its CPU.
    pub device_index: i32,
}

impl SlotTarget {
    /// The slot's device as operators name it: `cuda:1`, or `cpu`.
    pub fn device(&self) -> String {
        match self.device_index {
            i if i >= 0 => format!("cuda:{i}"),
            _ => "cpu".to_string(),
        }
    }
}

/// The events of one attempt, whole (not chunked). An `Err` item or the end of the
/// stream without `Done`/`Failed` means the worker was lost: the fold is retried.
pub type FoldEventStream = BoxStream<'static, Result<FoldEvent, CoordinatorError>>;

/// Starts fold attempts on worker slots.
pub trait FoldLauncher: Send + Sync + 'static {
    /// Starts `task` on `target`. Dropping the returned stream abandons the attempt.
    fn launch(&self, target: &SlotTarget, task: FoldTask) -> FoldEventStream;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_devices_are_named_as_operators_name_them() {
        let slot = |device_index| SlotTarget {
            call_token: CallToken::default(),
            worker: WorkerId::new("w".to_string()),
            address: "http://127.0.0.1:1".into(),
            slot: 0,
            device_index,
        };
        assert_eq!(slot(1).device(), "cuda:1");
        assert_eq!(slot(-1).device(), "cpu");
    }
}
