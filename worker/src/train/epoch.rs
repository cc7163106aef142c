//! One epoch: the training pass over the shuffled train split (its meter, progress events
//! and sampled batch spans), then the validation pass, summed up as an `EpochRecord`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use foldtrain_proto::FoldEvent;
use foldtrain_proto::task::EpochRecord;
use tracing::{debug, info_span};

use super::error::TrainError;
use super::evaluate::{Validation, validate};
use super::meter::EpochMeter;
use super::setup::FoldRun;
use super::sink::EventSink;
use super::spans::BatchSpans;
use crate::data::{epoch_order, epoch_seed};

/// Trains epoch `epoch` (one-based) and validates after it.
pub(crate) fn run_epoch(
    run: &mut FoldRun<'_>,
    epoch: u32,
    sink: &mut dyn EventSink,
    cancel: &AtomicBool,
) -> Result<EpochRecord, TrainError> {
    let started = Instant::now();
    let meter = train_pass(run, epoch, sink, cancel, started)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let classes = run.classes();
    let train = meter.finish(classes);
    let pass = Validation {
        fold: run.fold(),
        epoch,
        batch_size: run.batch_size(),
        cancel,
    };
    let val = info_span!("evaluate", fold = pass.fold, epoch)
        .in_scope(|| validate(&run.learner, &run.loaders.val, &pass))?
        .finish(classes);
    Ok(EpochRecord {
        epoch,
        loss: train.loss,
        accuracy: train.accuracy,
        f1: train.f1,
        val_loss: val.loss,
        val_accuracy: val.accuracy,
        val_f1: val.f1,
        lr: run.learner.adam.lr(),
        images_per_sec: train.rows as f64 / train_seconds.max(1e-9),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One step per batch of the epoch's shuffled, augmented train split, checking for
/// cancellation before each and reporting progress every `progress_every` batches.
fn train_pass(
    run: &mut FoldRun<'_>,
    epoch: u32,
    sink: &mut dyn EventSink,
    cancel: &AtomicBool,
    started: Instant,
) -> Result<EpochMeter, TrainError> {
    let (fold, seed) = (run.fold(), run.task.config.split.seed);
    let order = epoch_order(run.task.train.len(), seed, fold, epoch);
    let augment_seed = Some(epoch_seed(seed, fold, epoch));
    let batches = run
        .loaders
        .train
        .batches(order, run.batch_size(), augment_seed);
    let num_batches = batches.num_batches() as u32;
    let spans = BatchSpans::every(run.options.batch_span_every);
    let mut meter = EpochMeter::default();
    for (b, batch) in batches.enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Cancelled { fold });
        }
        let batch = batch?;
        if batch.len() == 1 && num_batches > 1 {
            // BatchNorm cannot normalise a single row in training mode (libtorch raises);
            // a lone trailing row is left out of this epoch's update instead.
            debug!(fold, epoch, "skipping a trailing batch of one image");
            continue;
        }
        let batch_span = spans.span(epoch, b, batch.len());
        let _in_batch = batch_span.enter();
        let output = run.learner.step(&batch);
        batch_span.record("loss", output.loss);
        let done = b as u32 + 1;
        if !output.loss.is_finite() {
            return Err(TrainError::NanLoss {
                fold,
                epoch,
                batch: done,
                phase: "train",
                value: output.loss,
            });
        }
        meter.add_logits(output.loss, &batch.labels, &output.logits)?;
        if done.is_multiple_of(run.options.progress_every.max(1)) || done == num_batches {
            sink.send(progress(epoch, done, num_batches, &meter, started))?;
        }
    }
    Ok(meter)
}

/// The running epoch's mean loss and throughput after `done` of `batches` batches.
fn progress(
    epoch: u32,
    done: u32,
    batches: u32,
    meter: &EpochMeter,
    started: Instant,
) -> FoldEvent {
    FoldEvent::Progress {
        epoch,
        batch: done,
        batches,
        loss: meter.mean_loss(),
        images_per_sec: meter.rows() as f64 / started.elapsed().as_secs_f64().max(1e-9),
        phase: "train",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::options::RunOptions;
    use crate::train::test_fold::{shared, tiny_fold};

    fn every_batch() -> RunOptions {
        RunOptions {
            progress_every: 1,
            ..RunOptions::default()
        }
    }

    #[test]
    fn an_epoch_trains_reports_progress_and_validates() {
        // Nine images in batches of four: the lone ninth is left out of the update.
        let (task, source) = tiny_fold(9, 5, 1, 1);
        let mut run = FoldRun::prepare(&task, shared(source), every_batch()).unwrap();
        let mut events = Vec::new();
        let never = AtomicBool::new(false);
        let record = run_epoch(&mut run, 1, &mut events, &never).unwrap();

        let progress: Vec<(u32, u32, u32)> = events
            .iter()
            .map(|e| match e {
                FoldEvent::Progress {
                    epoch,
                    batch,
                    batches,
                    phase: "train",
                    ..
                } => (*epoch, *batch, *batches),
                other => panic!("unexpected event {other:?}"),
            })
            .collect();
        assert_eq!(progress, [(1, 1, 3), (1, 2, 3)]);
        assert_eq!(run.learner.adam.state().iterations, 2);
        assert_eq!(record.epoch, 1);
        assert_eq!(record.lr, task.config.train.lr);
        assert!(record.loss.is_finite() && record.val_loss.is_finite());
        assert!((0.0..=1.0).contains(&record.val_accuracy));
        assert!(record.images_per_sec > 0.0 && record.seconds > 0.0);
    }

    #[test]
    fn epochs_replay_exactly_from_the_same_checkpoint() {
        let (mut task, source) = tiny_fold(8, 3, 1, 3);
        let source = shared(source);
        let mut start = FoldRun::prepare(&task, source.clone(), every_batch()).unwrap();
        start.state.epochs_done = 1;
        let l = &start.learner;
        let bytes = start.state.encode(&l.vs, &l.adam, l.scaler.as_ref(), None);
        task.resume = Some(bytes.unwrap());
        let never = AtomicBool::new(false);
        let record = |epoch| {
            let mut run = FoldRun::prepare(&task, source.clone(), every_batch()).unwrap();
            let r = run_epoch(&mut run, epoch, &mut Vec::new(), &never).unwrap();
            (r.loss, r.val_loss, r.accuracy, r.val_f1)
        };
        assert_eq!(record(2), record(2));
        assert_ne!(record(2), record(3), "each epoch draws its own order");
    }

    #[test]
    fn a_cancelled_epoch_stops_before_its_first_batch() {
        let (task, source) = tiny_fold(8, 3, 1, 1);
        let mut run = FoldRun::prepare(&task, shared(source), every_batch()).unwrap();
        let mut events = Vec::new();
        let cancelled = AtomicBool::new(true);
        let err = run_epoch(&mut run, 1, &mut events, &cancelled).unwrap_err();
        assert!(matches!(err, TrainError::Cancelled { fold: 0 }), "{err}");
        assert!(events.is_empty());
        assert_eq!(run.learner.adam.state().iterations, 0);
    }
}
