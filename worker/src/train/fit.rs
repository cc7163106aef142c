//! Fit: the epochs a fold has left and, after each, the callbacks' decisions (keep the best
//! weights, stop early, lower the learning rate) and the checkpoint events they lead to.

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
use crate::model::save_weights;

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

/// Applies the callbacks to a finished epoch and sends its events: the best weights when
/// val_loss improved, the record, then the latest checkpoint. Returns whether to stop.
fn end_epoch(
    run: &mut FoldRun<'_>,
    record: EpochRecord,
    sink: &mut dyn EventSink,
) -> Result<bool, TrainError> {
    let (fold, epoch) = (run.fold(), record.epoch);
    if run.state.best.on_epoch_end(epoch, record.val_loss) {
        keep_best(run, epoch, record.val_loss, sink)?;
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
    sink.send(FoldEvent::Epoch(record))?;
    let bytes = run.latest_checkpoint(None)?;
    info!(fold, epoch, bytes = bytes.len(), "latest checkpoint saved");
    sink.send(FoldEvent::Checkpoint {
        kind: CheckpointKind::Latest,
        epoch,
        bytes,
    })?;
    Ok(stop)
}

/// Keeps this epoch's weights in memory and sends them as the best checkpoint.
fn keep_best(
    run: &mut FoldRun<'_>,
    epoch: u32,
    val_loss: f64,
    sink: &mut dyn EventSink,
) -> Result<(), TrainError> {
    info!(
        fold = run.fold(),
        epoch, val_loss, "val_loss improved; saving the best weights"
    );
    run.best = Some(Snapshot::take(&run.learner.vs));
    sink.send(FoldEvent::Checkpoint {
        kind: CheckpointKind::Best,
        epoch,
        bytes: save_weights(&run.learner.vs)?,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::checkpoint::decode;
    use crate::train::options::RunOptions;
    use crate::train::test_fold::{shared, tiny_fold};

    /// Each event reduced to a short tag: `best1`, `epoch1`, `latest1`, `progress`.
    fn tags(events: &[FoldEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                FoldEvent::Progress { .. } => "progress".to_owned(),
                FoldEvent::Epoch(r) => format!("epoch{}", r.epoch),
                FoldEvent::Checkpoint {
                    kind: CheckpointKind::Best,
                    epoch,
                    ..
                } => format!("best{epoch}"),
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
        // The first finite val_loss always improves on none; the second may or may not.
        let tags = tags(&events);
        assert_eq!(tags[..3], ["best1", "epoch1", "latest1"]);
        assert_eq!(tags.last().unwrap(), "latest2");
        assert_eq!(run.state.epochs_done, 2);
        assert_eq!(run.state.history.len(), 2);
        assert!(run.best.is_some());
        let Some(FoldEvent::Checkpoint { bytes, .. }) = events.last() else {
            panic!("the last event is not a checkpoint");
        };
        let (state, tensors) = decode(bytes).unwrap();
        assert_eq!(state.epochs_done, 2);
        assert!(tensors.keys().any(|n| n.starts_with("best.")));
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
