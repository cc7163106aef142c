//! How a fold is run on this machine (not part of the job): device override, progress
//! cadence, how the worker asks it to stop, and the dedicated training thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// How the worker asks a running fold to stop; checked before every training batch.
///
/// - **Cancel**: the job was cancelled or the caller went away; the fold stops and ends as
///   `cancelled`.
/// - **Drain**: the worker is shutting down (SIGTERM). At the end of the current batch the
///   fold sends a latest checkpoint of the epoch in progress and ends as `worker_stopping`,
///   so another worker resumes it from that batch and less than an epoch is lost.
#[derive(Debug, Default)]
pub struct FoldControl {
    cancel: AtomicBool,
    drain: AtomicBool,
}

impl FoldControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn drain(&self) {
        self.drain.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub fn is_draining(&self) -> bool {
        self.drain.load(Ordering::Relaxed)
    }

    /// The cancel flag alone, for passes that stop only on cancel (validation, prediction).
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// Runs [`run_fold`] on a dedicated OS thread named after the fold, within the caller's
/// current span. Training never runs on an async runtime: the thread owns the model and
/// optimizer and blocks on the sink.
pub fn spawn_fold(
    task: FoldTask,
    source: Arc<dyn BlobSource>,
    mut sink: impl EventSink + 'static,
    control: Arc<FoldControl>,
    options: RunOptions,
) -> std::io::Result<JoinHandle<Result<FoldSummary, TrainError>>> {
    // Spans do not follow a thread by themselves: carry the caller's in, so the training
    // logs join its trace.
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(format!("fold-{}", task.fold))
        .spawn(move || span.in_scope(|| run_fold(&task, source, &mut sink, &control, options)))
}

#[cfg(test)]
mod tests {
    use foldtrain_proto::FoldEvent;

    use super::*;
    use crate::train::sink::SinkClosed;
    use crate::train::test_fold::{shared, tiny_fold};

    /// Records the name of the thread each event is sent from.
    struct ThreadNames(std::sync::mpsc::Sender<(Option<String>, FoldEvent)>);

    impl EventSink for ThreadNames {
        fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
            let name = std::thread::current().name().map(str::to_owned);
            self.0.send((name, event)).map_err(|_| SinkClosed)
        }
    }

    #[test]
    fn the_fold_runs_on_its_own_named_thread() {
        let (mut task, source) = tiny_fold(4, 2, 1, 1);
        task.fold = foldtrain_proto::FoldIndex(3);
        let (tx, rx) = std::sync::mpsc::channel();
        let control = FoldControl::new();
        control.cancel();
        let thread = spawn_fold(
            task,
            shared(source),
            ThreadNames(tx),
            control,
            RunOptions::default(),
        )
        .unwrap();
        let err = thread.join().unwrap().unwrap_err();
        assert!(matches!(err, TrainError::Cancelled { fold: 3 }), "{err}");
        let (name, event) = rx.recv().unwrap();
        assert_eq!(name.as_deref(), Some("fold-3"));
        assert!(matches!(event, FoldEvent::Failed(_)), "{event:?}");
    }
}
