//! The contract the foldtrain coordinator and workers share: the generated wire types,
//! the domain types they convert to and the metric functions both sides must agree on.
//! The `runtime` feature adds the `runtime` module: the plumbing both binaries share.

pub mod blob_chunks;
pub mod config;
pub mod error;
pub mod ids;
pub mod metrics;
pub mod rng;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod shard;
pub mod states;
pub mod task;
pub mod wire_events;

/// How many cases each property test runs: `default`, or `PROPTEST_CASES` when set, so
/// `make fuzz` (and CI) can run the same properties far deeper than `make test` does.
#[cfg(any(test, feature = "test-util"))]
pub fn property_cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// Generated gRPC types and services (`foldtrain.v1`).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("foldtrain.v1");
}

pub use config::JobConfig;
pub use error::ProtoError;
pub use ids::{AttemptId, BlobHash, FoldIndex, JobId, WorkerId};
pub use shard::ShardTask;
pub use states::{AttemptState, FailureCause, FoldState, JobState};
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
