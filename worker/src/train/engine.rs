//! `run_fold`: trains one fold from a `FoldTask` (prepare, fit, then the best weights and
//! the out-of-fold and test probabilities they give), streaming its events and verdict to
//! an [`EventSink`].

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use foldtrain_proto::runtime::panic_message;
use foldtrain_proto::runtime::telemetry::mark_span_failed;
use foldtrain_proto::task::{CheckpointKind, FoldSummary};
use foldtrain_proto::{FoldEvent, FoldTask};
use tracing::{Span, info_span, warn};

use super::checkpoint::CheckpointError;
use super::error::TrainError;
use super::fit::fit;
use super::options::{FoldControl, RunOptions};
use super::predict::{PredictError, PredictOptions, softmax_rows};
use super::setup::FoldRun;
use super::sink::EventSink;
use crate::data::BlobSource;
use crate::model::save_weights;

/// Trains the fold on the calling thread. On success sends `Done`; on failure sends
/// `Failed` (unless the sink itself is gone) and returns the error, so a caller only
/// forwards events. Cancel and drain requests are checked before every batch.
pub fn run_fold(
    task: &FoldTask,
    source: Arc<dyn BlobSource>,
    sink: &mut dyn EventSink,
    control: &FoldControl,
    options: RunOptions,
) -> Result<FoldSummary, TrainError> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(task, source, sink, control, options)
    }))
    .unwrap_or_else(|panic| Err(TrainError::Panic(panic_message(panic.as_ref()))));
    // The model and optimizer are dropped by now, so the slot is free once the verdict
    // is out.
    match &outcome {
        Ok(summary) => sink.send(FoldEvent::Done(*summary))?,
        Err(TrainError::SinkClosed(_)) => {}
        Err(e) => {
            warn!(fold = task.fold.0, cause = e.cause().as_str(), error = %e, "fold failed");
            mark_span_failed(&Span::current(), e);
            let _ = sink.send(FoldEvent::Failed(e.to_failure()));
        }
    }
    outcome
}

fn train(
    task: &FoldTask,
    source: Arc<dyn BlobSource>,
    sink: &mut dyn EventSink,
    control: &FoldControl,
    options: RunOptions,
) -> Result<FoldSummary, TrainError> {
    let mut run = FoldRun::prepare(task, source, options)?;
    let early_stopped = fit(&mut run, sink, control)?;
    send_results(&run, sink, control.cancel_flag())?;
    Ok(FoldSummary {
        best_epoch: run.state.best.best_epoch,
        best_val_loss: run.state.best.best,
        epochs_run: run.state.epochs_done,
        early_stopped,
    })
}

/// Sends the best weights, once, and the out-of-fold and test probabilities they give.
/// Every attempt sends them, a resumed one too, whether or not it improved on the best
/// its checkpoint carried.
fn send_results(
    run: &FoldRun<'_>,
    sink: &mut dyn EventSink,
    cancel: &AtomicBool,
) -> Result<(), TrainError> {
    let best = run
        .best
        .as_ref()
        .ok_or_else(|| CheckpointError("no epoch produced a finite val_loss".into()))?;
    best.restore_into(&run.learner.vs)
        .map_err(CheckpointError)?;
    sink.send(FoldEvent::Checkpoint {
        kind: CheckpointKind::Best,
        epoch: run.state.best.best_epoch,
        bytes: save_weights(&run.learner.vs)?,
    })?;
    let (task, fold, classes) = (run.task, run.fold(), run.classes());
    let options = PredictOptions {
        device: run.learner.device,
        batch_size: run.batch_size(),
        amp: run.learner.amp(),
    };
    let predict = |loader| softmax_rows(&run.learner.model, classes, loader, options, cancel);
    let span = info_span!(
        "predict",
        fold,
        val = task.val.len(),
        test = task.test.len()
    );
    let (oof, test) = span
        .in_scope(|| -> Result<_, PredictError> {
            Ok((predict(&run.loaders.val)?, predict(&run.loaders.test)?))
        })
        .map_err(|e| e.in_fold(fold))?;
    sink.send(FoldEvent::Oof {
        rows: task.val.len() as u32,
        classes: classes as u32,
        probs: oof.into_values(),
    })?;
    sink.send(FoldEvent::Test {
        rows: task.test.len() as u32,
        classes: classes as u32,
        probs: test.into_values(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use foldtrain_proto::FailureCause;

    use super::*;
    use crate::train::sink::SinkClosed;
    use crate::train::test_fold::{shared, tiny_fold};

    #[test]
    fn a_fold_streams_epochs_then_probabilities_then_its_summary() {
        let (task, source) = tiny_fold(8, 5, 3, 2);
        let mut events = Vec::new();
        let never = FoldControl::default();
        let summary = run_fold(
            &task,
            shared(source),
            &mut events,
            &never,
            RunOptions::default(),
        )
        .unwrap();

        assert_eq!(summary.epochs_run, 2);
        assert!((1..=2).contains(&summary.best_epoch));
        assert!(!summary.early_stopped);
        let n = events.len();
        assert!(matches!(
            &events[n - 5],
            FoldEvent::Checkpoint {
                kind: CheckpointKind::Latest,
                epoch: 2,
                ..
            }
        ));
        // The best weights go out once, after training, tagged with their epoch.
        let bests: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                FoldEvent::Checkpoint {
                    kind: CheckpointKind::Best,
                    epoch,
                    ..
                } => Some(*epoch),
                _ => None,
            })
            .collect();
        assert_eq!(bests, [summary.best_epoch]);
        assert!(matches!(
            &events[n - 4],
            FoldEvent::Checkpoint {
                kind: CheckpointKind::Best,
                ..
            }
        ));
        let FoldEvent::Oof {
            rows: 5,
            classes: 3,
            probs,
        } = &events[n - 3]
        else {
            panic!("expected the out-of-fold rows, got {:?}", events[n - 3]);
        };
        assert!(
            matches!(&events[n - 2], FoldEvent::Test { rows: 3, classes: 3, probs } if probs.len() == 9)
        );
        assert_eq!(events[n - 1], FoldEvent::Done(summary));
        for row in probs.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    /// The best weights of an event stream.
    fn best_bytes(events: &[FoldEvent]) -> Option<&Vec<u8>> {
        events.iter().find_map(|e| match e {
            FoldEvent::Checkpoint {
                kind: CheckpointKind::Best,
                bytes,
                ..
            } => Some(bytes),
            _ => None,
        })
    }

    #[test]
    fn a_resumed_fold_with_nothing_left_to_train_still_sends_its_best_weights() {
        let (task, source) = tiny_fold(8, 5, 3, 2);
        let source = shared(source);
        let never = FoldControl::default();
        let mut full = Vec::new();
        let summary = run_fold(
            &task,
            source.clone(),
            &mut full,
            &never,
            RunOptions::default(),
        )
        .unwrap();
        let last_latest = full
            .iter()
            .rev()
            .find_map(|e| match e {
                FoldEvent::Checkpoint {
                    kind: CheckpointKind::Latest,
                    bytes,
                    ..
                } => Some(bytes.clone()),
                _ => None,
            })
            .unwrap();

        // Lost after its last epoch: the retry only predicts, and the coordinator still
        // needs the best weights from it.
        let mut resumed_task = task.clone();
        resumed_task.resume = Some(last_latest);
        let mut resumed = Vec::new();
        let again = run_fold(
            &resumed_task,
            source,
            &mut resumed,
            &never,
            RunOptions::default(),
        )
        .unwrap();
        assert_eq!(again, summary);
        assert!(!resumed.iter().any(|e| matches!(e, FoldEvent::Epoch(_))));
        assert_eq!(best_bytes(&resumed), best_bytes(&full));
        assert!(best_bytes(&resumed).is_some());
    }

    /// Panics on the first progress event; forwards everything else.
    struct PanickingSink(Vec<FoldEvent>);

    impl EventSink for PanickingSink {
        fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
            if matches!(event, FoldEvent::Progress { .. }) {
                panic!("sink exploded at {event:?}");
            }
            self.0.push(event);
            Ok(())
        }
    }

    #[test]
    fn failures_and_panics_end_in_a_failed_event() {
        let (task, mut source) = tiny_fold(8, 3, 1, 1);
        source.corrupt("train05.png");
        let mut events = Vec::new();
        let never = FoldControl::default();
        let err = run_fold(
            &task,
            shared(source),
            &mut events,
            &never,
            RunOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.cause(), FailureCause::BadImage, "{err}");
        match events.last() {
            Some(FoldEvent::Failed(f)) => assert!(f.message.contains("train05.png"), "{f:?}"),
            other => panic!("expected Failed, got {other:?}"),
        }

        let (task, source) = tiny_fold(8, 3, 1, 1);
        let mut sink = PanickingSink(Vec::new());
        let err = run_fold(
            &task,
            shared(source),
            &mut sink,
            &never,
            RunOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TrainError::Panic(m) if m.contains("sink exploded")),
            "{err}"
        );
        assert!(err.retryable());
        assert!(matches!(sink.0.last(), Some(FoldEvent::Failed(_))));
    }

    #[test]
    fn a_closed_sink_stops_the_fold_without_a_verdict() {
        struct Closed;
        impl EventSink for Closed {
            fn send(&mut self, _: FoldEvent) -> Result<(), SinkClosed> {
                Err(SinkClosed)
            }
        }
        let (task, source) = tiny_fold(8, 3, 1, 1);
        let never = FoldControl::default();
        let err = run_fold(
            &task,
            shared(source),
            &mut Closed,
            &never,
            RunOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, TrainError::SinkClosed(_)), "{err}");
    }
}
