//! The worker's gRPC server: `TrainFold` with bearer-token checks, the content-addressed
//! blob cache filled from the coordinator, and registration with heartbeats.

mod attempt;
mod cache;
mod client;
mod config;
mod error;
mod fetch;
mod gpu_memory;
mod metrics;
mod metrics_endpoint;
mod register;
mod service;
mod shard;
mod slots;
mod start;

pub use cache::BlobCache;
pub use config::{DEFAULT_DRAIN_TIMEOUT, WorkerConfig, default_worker_id, hostname};
pub use error::WorkerError;
pub use fetch::BATCH as DOWNLOAD_BATCH;
pub use gpu_memory::{DeviceMemory, GpuMemory};
pub use metrics::{AttemptMetrics, WorkerMetrics};
pub use start::{WorkerHandle, start};
