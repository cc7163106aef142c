//! How a fold attempt reaches a worker: a trait, so scheduling can be tested against a
//! virtual worker and run against real ones over gRPC.

use foldtrain_proto::{FoldEvent, FoldTask, WorkerId};
use futures::stream::BoxStream;

use crate::error::CoordinatorError;

/// One slot of one worker: where an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotTarget {
    pub worker: WorkerId,
    /// The worker's advertised gRPC address (e.g. `http://10.0.0.7:50052`).
    pub address: String,
    /// Position of the slot in the worker's registration.
    pub slot: usize,
    /// GPU index on the worker, or -1 for its CPU.
    pub device_index: i32,
}

/// The events of one attempt, whole (not chunked). An `Err` item or the end of the
/// stream without `Done`/`Failed` means the worker was lost: the fold is retried.
pub type FoldEventStream = BoxStream<'static, Result<FoldEvent, CoordinatorError>>;

/// Starts fold attempts on worker slots.
pub trait FoldLauncher: Send + Sync + 'static {
    /// Starts `task` on `target`. Dropping the returned stream abandons the attempt.
    fn launch(&self, target: &SlotTarget, task: FoldTask) -> FoldEventStream;
}
