//! Fold scheduling: the worker registry with heartbeat leases, a FIFO queue of folds,
//! one attempt per free slot, retries from the latest checkpoint, and the hand-off to
//! aggregation when a job's folds are all done.

mod attempt;
mod attempt_clock;
mod core;
mod finalize;
mod grpc_launcher;
mod job_spec;
mod launcher;
mod lifecycle;
mod metrics;
mod recover;
mod registry;
mod state;
mod virtual_worker;
mod workers;

#[cfg(test)]
mod grpc_tests;
#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod storage_tests;
#[cfg(test)]
mod tests;

pub use core::{JobDeletion, JobEvent, Scheduler, SchedulerOptions};
pub(crate) use grpc_launcher::authorize;
pub use grpc_launcher::{GrpcLauncher, MAX_EVENT_PAYLOAD, MAX_OPEN_PAYLOADS};
pub use job_spec::{ClientSeconds, JobSpec, assign_folds, fold_task};
pub use launcher::{CallToken, FoldEventStream, FoldLauncher, SlotTarget};
pub use metrics::{CoordinatorMetrics, Direction, LiveGauges};
pub use registry::{LiveWorker, Registration, Slot};
pub use state::FoldLive;
pub use virtual_worker::{VirtualBehaviour, VirtualLaunch, VirtualLauncher};
