//! The coordinator's gRPC client library: connect, upload and submit a data set, follow a
//! job, query jobs and workers, download results. It prints nothing; callers see progress
//! through the [`UploadProgress`] and [`WatchEvents`] they pass in.

mod connection;
mod download;
mod error;
mod progress;
mod queries;
mod upload;
mod watch;

#[cfg(test)]
mod tests;

pub use connection::{Client, DEFAULT_COORDINATOR, RpcClient};
pub use download::{download_results, fetch_artifact, safe_relative};
pub use error::ClientError;
pub use progress::{Silent, UploadProgress, WatchEvents};
pub use upload::{
    SubmitOutcome, Uploaded, submit_dataset, submit_dataset_hashed_in, upload_dataset, upload_files,
};
pub use watch::{DEFAULT_GIVE_UP_AFTER, watch_job};
