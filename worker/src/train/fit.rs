//! Fit: the epochs a fold has left and, after each, the callbacks' decisions (keep the best
//! weights, stop early, lower the learning rate) and the checkpoint events they lead to.
//!
//! The best weights are kept in memory (and inside every latest checkpoint), not streamed
//! at each improvement: only the final best is a result, and the engine sends it once
//! training is over.

use std::time::Instant;

use foldtrain_proto::FoldEvent;
use foldtrain_proto::task::{CheckpointKind, EpochRecord};
use tracing::info;

use super::callbacks::LrDecision;
use super::epoch::run_epoch;
use super::error::TrainError;
use super::options::FoldControl;
use super::setup::FoldRun;
use super::sink::EventSink;
use super::spans::{epoch_span, record_epoch};
use super::weights::Snapshot;

/// Trains the epochs left after the resume point. Returns whether early stopping ended
/// training, in this run or before the checkpoint it resumed from.
pub(crate) fn fit(
    run: &mut FoldRun<'_>,
    sink: &mut dyn EventSink,
    control: &FoldControl,
) -> Result<bool, TrainError> {
    let mut early_stopped = false;
    for epoch in run.state.epochs_done + 1..=run.task.config.train.epochs {
        if run.state.early_stopping.stopped_epoch > 0 {
            // Resumed from a checkpoint written after early stopping: nothing left to train.
            break;
        }
        let span = epoch_span(run.fold(), epoch);
        let _entered = span.enter();
        let record = run_epoch(run, epoch, sink, control)?;
        record_epoch(&span, &record);
        early_stopped = end_epoch(run, record, sink)?;
        if early_stopped {
            break;
        }
    }
    Ok(early_stopped || run.state.early_stopping.stopped_epoch > 0)
}

/// Applies the callbacks to a finished epoch and sends its events: the record, then, when
/// one is due (`train.checkpoint_interval_s`), the latest checkpoint (holding the best
/// weights so far). Returns whether to stop.
///
/// The latest checkpoint is encoded before the record goes out, so the record can say what
/// the epoch's checkpoints cost the training thread; it is still sent after the record,
/// which the coordinator must hold before any checkpoint that resumes past it.
fn end_epoch(
    run: &mut FoldRun<'_>,
    mut record: EpochRecord,
    sink: &mut dyn EventSink,
) -> Result<bool, TrainError> {
    let (fold, epoch) = (run.fold(), record.epoch);
    let checkpoints_started = Instant::now();
    if run.state.best.on_epoch_end(epoch, record.val_loss) {
        keep_best(run, epoch, record.val_loss);
    }
    let stop = run
        .state
        .early_stopping
        .on_epoch_end(epoch, record.val_loss);
    if stop {
        let wait = run.state.early_stopping.wait;
        info!(fold, epoch, wait, "early stopping");
    }
    let lr = run.learner.adam.lr();
    if let LrDecision::Reduce { from, to } = run.state.reduce_lr.on_epoch_end(record.val_loss, lr) {
        info!(
            fold,
            epoch, from, to, "reducing the learning rate on plateau"
        );
        run.learner.adam.set_lr(to);
    }
    run.state.epochs_done = epoch;
    run.state.history.push(record);
    let latest = if run.checkpoint_due(Instant::now()) {
        let bytes = run.latest_checkpoint(None)?;
        run.last_checkpoint = Instant::now();
        Some(bytes)
    } else {
        None
    };
    record.checkpoint_seconds = checkpoints_started.elapsed().as_secs_f64();
    if let Some(last) = run.state.history.last_mut() {
        last.checkpoint_seconds = record.checkpoint_seconds;
    }
    sink.send(FoldEvent::Epoch(record))?;
    if let Some(bytes) = latest {
        info!(
            fold,
            epoch,
            bytes = bytes.len(),
            seconds = record.checkpoint_seconds,
            "latest checkpoint saved"
        );
        sink.send(FoldEvent::Checkpoint {
            kind: CheckpointKind::Latest,
            epoch,
            bytes,
        })?;
    }
    Ok(stop)
}

/// Keeps this epoch's weights in memory as the best so far.
fn keep_best(run: &mut FoldRun<'_>, epoch: u32, val_loss: f64) {
    info!(
        fold = run.fold(),
        epoch, val_loss, "val_loss improved; keeping the best weights"
    );
    run.best = Some(Snapshot::take(&run.learner.vs));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::checkpoint::decode;
    use crate::train::options::RunOptions;
    use crate::train::test_fold::{shared, tiny_fold};

    /// Each event reduced to a short tag: `epoch1`, `latest1`, `progress`.
    fn tags(events: &[FoldEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                FoldEvent::Progress { .. } => "progress".to_owned(),
                FoldEvent::Epoch(r) => format!("epoch{}", r.epoch),
                FoldEvent::Checkpoint {
                    kind: CheckpointKind::Latest,
                    epoch,
                    ..
                } => format!("latest{epoch}"),
                other => panic!("fit sent {other:?}"),
            })
            .filter(|t| t != "progress")
            .collect()
    }

    #[test]
    fn each_epoch_ends_with_its_record_and_latest_checkpoint() {
        let (task, source) = tiny_fold(8, 3, 1, 2);
        let mut run = FoldRun::prepare(&task, shared(source), RunOptions::default()).unwrap();
        let mut events = Vec::new();
        let never = FoldControl::default();
        let early_stopped = fit(&mut run, &mut events, &never).unwrap();

        assert!(!early_stopped);
        // No best checkpoint goes out during training: the best weights (the first finite
        // val_loss always improves on none) ride inside each latest checkpoint.
        assert_eq!(tags(&events), ["epoch1", "latest1", "epoch2", "latest2"]);
        assert_eq!(run.state.epochs_done, 2);
        assert_eq!(run.state.history.len(), 2);
        assert!(run.best.is_some());
        let Some(FoldEvent::Checkpoint { bytes, .. }) = events.last() else {
            panic!("the last event is not a checkpoint");
        };
        let (state, tensors) = decode(bytes).unwrap();
        assert_eq!(state.epochs_done, 2);
        assert!(tensors.keys().any(|n| n.starts_with("best.")));
        // The record says what the epoch's checkpoints cost, outside its own seconds.
        let records: Vec<EpochRecord> = events
            .iter()
            .filter_map(|e| match e {
                FoldEvent::Epoch(r) => Some(*r),
                _ => None,
            })
            .collect();
        for r in &records {
            assert!(r.checkpoint_seconds > 0.0, "{r:?}");
            assert!(r.val_seconds > 0.0 && r.val_seconds < r.seconds, "{r:?}");
        }
    }

    #[test]
    fn latest_checkpoints_wait_for_the_interval() {
        let (mut task, source) = tiny_fold(8, 3, 1, 3);
        task.config.train.checkpoint_interval_s = 3600;
        let mut run = FoldRun::prepare(&task, shared(source), RunOptions::default()).unwrap();
        let mut events = Vec::new();
        let never = FoldControl::default();
        fit(&mut run, &mut events, &never).unwrap();
        // No hour has passed: no latest checkpoint, the best weights still kept.
        assert_eq!(tags(&events), ["epoch1", "epoch2", "epoch3"]);
        assert!(run.best.is_some());

        // An attempt whose last checkpoint is an hour old writes one after its next epoch,
        // and the hour starts again from there.
        let (mut task, source) = tiny_fold(8, 3, 1, 3);
        task.config.train.checkpoint_interval_s = 3600;
        let mut run = FoldRun::prepare(&task, shared(source), RunOptions::default()).unwrap();
        run.last_checkpoint = Instant::now() - std::time::Duration::from_secs(3601);
        let mut events = Vec::new();
        fit(&mut run, &mut events, &never).unwrap();
        assert_eq!(tags(&events), ["epoch1", "latest1", "epoch2", "epoch3"]);
    }

    #[test]
    fn plateaus_lower_the_rate_and_stop_training_early() {
        let (task, source) = tiny_fold(8, 3, 1, 4);
        let mut run = FoldRun::prepare(&task, shared(source), RunOptions::default()).unwrap();
        // Nothing can beat a best of -inf: every epoch is a plateau.
        let s = &mut run.state;
        s.best.best = f64::NEG_INFINITY;
        (s.early_stopping.best, s.early_stopping.patience) = (f64::NEG_INFINITY, 1);
        (s.reduce_lr.best, s.reduce_lr.patience) = (f64::NEG_INFINITY, 1);
        let mut events = Vec::new();
        let never = FoldControl::default();
        assert!(fit(&mut run, &mut events, &never).unwrap());

        // Early stopping never stops after the first epoch.
        assert_eq!(tags(&events), ["epoch1", "latest1", "epoch2", "latest2"]);
        let lr = task.config.train.lr;
        let rates: Vec<f64> = run.state.history.iter().map(|r| r.lr).collect();
        assert_eq!(rates, [lr, lr * 0.1]);
        assert!((run.learner.adam.lr() - lr * 0.01).abs() < 1e-15);
        assert!(run.best.is_none());

        // A fold resumed after early stopping has nothing left to train.
        events.clear();
        assert!(fit(&mut run, &mut events, &never).unwrap());
        assert!(events.is_empty());
    }
}
