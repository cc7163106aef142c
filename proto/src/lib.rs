//! The contract the foldtrain coordinator and workers share: the generated wire types,
//! the domain types they convert to, the metric functions both sides must agree on, and
//! the telemetry setup both binaries use.

pub mod auth;
pub mod config;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod metrics_http;
pub mod propagation;
pub mod task;
pub mod telemetry;
pub mod wire_events;

/// Generated gRPC types and services (`foldtrain.v1`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("foldtrain.v1");
}

pub use config::JobConfig;
pub use error::ProtoError;
pub use ids::{AttemptId, BlobHash, FoldIndex, JobId, WorkerId};
pub use task::{FoldEvent, FoldTask, ImageRef};

/// Largest chunk of any streamed payload (checkpoints, blobs, probabilities).
pub const CHUNK_SIZE: usize = 1024 * 1024;

/// HTTP/2 flow-control windows set on every client and server. h2's 64 KiB default makes
/// each 1 MiB chunk wait for window updates; these keep several chunks in flight.
pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;

/// Message size limit set on every client and server: one chunk plus generous room for
/// framing and the non-chunked messages (a FoldTask for 50k images is about 6 MiB).
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
