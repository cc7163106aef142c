//! The coordinator's gRPC server: blobs, jobs, artifacts and worker registration,
//! behind bearer-token authentication and explicit message size limits.

mod artifacts;
mod auth;
mod blobs;
mod convert;
mod metrics;
mod service;
mod start;
mod status;

#[cfg(test)]
mod lock_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upload_tests;

pub use auth::{Role, RoleGate, RoleTokens};
pub use blobs::{MAX_UPLOAD_BLOB, UPLOAD_IDLE_TIMEOUT, UploadLimits};
pub use metrics::serve_coordinator_metrics;
pub use service::CoordinatorService;
pub use start::{ServerHandle, start, start_with_launcher};
pub use status::job_status;
