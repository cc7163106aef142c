//! How the client reports what it is doing without printing: the caller passes an
//! observer (the command line draws bars with it; tests pass [`Silent`]).

use foldtrain_proto::pb;

/// Told about an upload as it goes. Every method defaults to doing nothing.
pub trait UploadProgress: Send + Sync {
    /// `images` images of `bytes` bytes in all are about to be sent.
    fn start(&self, _images: usize, _bytes: u64) {}
    /// The image with this index (counting from 0) is being sent.
    fn image(&self, _index: usize) {}
    /// `bytes` more bytes went out.
    fn sent(&self, _bytes: u64) {}
    /// Every image was sent and stored.
    fn finish(&self) {}
}

/// Told about a job being followed. Every method defaults to doing nothing.
pub trait WatchEvents: Send + Sync {
    /// A fold finished an epoch.
    fn epoch(&self, _fold: u32, _metrics: &pb::EpochMetrics) {}
    /// The job's status changed.
    fn status(&self, _status: &pb::JobStatus) {}
    /// Something worth a line to a person: the coordinator was lost or came back.
    fn note(&self, _line: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl UploadProgress for Silent {}

impl WatchEvents for Silent {}
