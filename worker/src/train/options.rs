//! How a fold is run on this machine (not part of the job): device override, progress
//! cadence, and the dedicated training thread.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use foldtrain_proto::FoldTask;
use foldtrain_proto::task::FoldSummary;

use super::engine::run_fold;
use super::error::TrainError;
use super::sink::EventSink;
use crate::data::BlobSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    /// Overrides the task's `device_index` (None: CUDA index from the task, else CPU).
    pub device: Option<tch::Device>,
    /// A Progress event every this many training batches (and after the last one).
    pub progress_every: u32,
    /// A `batch` span for every this many training batches; 0 (the default) for none.
    pub batch_span_every: u32,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            device: None,
            progress_every: 10,
            batch_span_every: 0,
        }
    }
}

/// Runs [`run_fold`] on a dedicated OS thread named after the fold. Training never runs on
/// an async runtime: the thread owns the model and optimizer and blocks on the sink.
pub fn spawn_fold(
    task: FoldTask,
    source: Arc<dyn BlobSource>,
    mut sink: Box<dyn EventSink>,
    cancel: Arc<AtomicBool>,
    options: RunOptions,
) -> std::io::Result<JoinHandle<Result<FoldSummary, TrainError>>> {
    std::thread::Builder::new()
        .name(format!("fold-{}", task.fold.0))
        .spawn(move || run_fold(&task, source, sink.as_mut(), &cancel, options))
}
