//! One epoch: the training pass over the shuffled train split (its meter, progress events
//! and sampled batch spans), then the validation pass, summed up as an `EpochRecord`.

use std::time::Instant;

use foldtrain_proto::FoldEvent;
use foldtrain_proto::task::CheckpointKind;
use foldtrain_proto::task::EpochRecord;
use tracing::{debug, info, info_span, warn};

use super::amp::{OverflowStreak, StepVerdict};
use super::checkpoint::PartialEpoch;
use super::error::TrainError;
use super::evaluate::{Validation, validate};
use super::meter::EpochMeter;
use super::options::FoldControl;
use super::setup::FoldRun;
use super::sink::EventSink;
use super::spans::BatchSpans;
use crate::data::{epoch_order, epoch_seed};

/// Trains epoch `epoch` (one-based) and validates after it.
pub(crate) fn run_epoch(
    run: &mut FoldRun<'_>,
    epoch: u32,
    sink: &mut dyn EventSink,
    control: &FoldControl,
) -> Result<EpochRecord, TrainError> {
    let started = Instant::now();
    let (meter, rows_before) = train_pass(run, epoch, sink, control, started)?;
    let train_seconds = started.elapsed().as_secs_f64();
    let classes = run.classes();
    let train = meter.finish(classes);
    let pass = Validation {
        fold: run.fold(),
        epoch,
        batch_size: run.batch_size(),
        cancel: control.cancel_flag(),
    };
    let val_started = Instant::now();
    let val = info_span!("evaluate", fold = pass.fold, epoch)
        .in_scope(|| validate(&run.learner, &run.loaders.val, &pass))?
        .finish(classes);
    let val_seconds = val_started.elapsed().as_secs_f64();
    Ok(EpochRecord {
        epoch,
        loss: train.loss,
        accuracy: train.accuracy,
        f1: train.f1,
        val_loss: val.loss,
        val_accuracy: val.accuracy,
        val_f1: val.f1,
        lr: run.learner.adam.lr(),
        images_per_sec: (train.rows - rows_before) as f64 / train_seconds.max(1e-9),
        seconds: started.elapsed().as_secs_f64(),
        val_seconds,
        // Taken at the epoch's end, once its checkpoints are out.
        checkpoint_seconds: 0.0,
    })
}

/// One step per batch of the epoch's shuffled, augmented train split, checking for
/// cancel and drain requests before each and reporting progress every `progress_every`
/// batches. An epoch that a resumed checkpoint stopped in continues at its next batch.
/// Returns the meter and how many of its rows were counted before this run.
fn train_pass(
    run: &mut FoldRun<'_>,
    epoch: u32,
    sink: &mut dyn EventSink,
    control: &FoldControl,
    started: Instant,
) -> Result<(EpochMeter, u64), TrainError> {
    let (fold, seed) = (run.fold(), run.task.config.split.seed);
    let batch_size = run.batch_size();
    let mut order = epoch_order(run.task.train.len(), seed, fold, epoch);
    let num_batches = order.len().div_ceil(batch_size) as u32;
    let (skip, mut meter) = match run.state.partial_epoch.take() {
        Some(p) if p.epoch == epoch => (p.batches_done, p.meter),
        _ => (0, EpochMeter::default()),
    };
    let rows_before = meter.rows();
    // Each image's augmentation depends on (seed, image), not on its place in the
    // batches, so leaving out the first batches changes nothing in the rest.
    order.drain(..(skip as usize * batch_size).min(order.len()));
    let augment_seed = Some(epoch_seed(seed, fold, epoch));
    let batches = run.loaders.train.batches(order, batch_size, augment_seed);
    let spans = BatchSpans::every(run.options.batch_span_every);
    let mut streak = OverflowStreak::default();
    for (b, batch) in (skip as usize..).zip(batches) {
        if control.is_cancelled() {
            return Err(TrainError::Cancelled { fold });
        }
        if control.is_draining() {
            return Err(hand_back(run, epoch, b as u32, skip, meter, sink));
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
        match streak.judge(output.loss, output.overflow) {
            StepVerdict::Count => meter.add_logits(output.loss, &batch.labels, &output.logits)?,
            StepVerdict::SkipOverflow => warn!(
                fold,
                epoch,
                batch = done,
                in_a_row = streak.in_a_row(),
                "fp16 overflow in the forward pass: step skipped, loss scale lowered"
            ),
            StepVerdict::Fail => {
                return Err(TrainError::NanLoss {
                    fold,
                    epoch,
                    batch: done,
                    phase: "train",
                    value: output.loss,
                });
            }
        }
        if done.is_multiple_of(run.options.progress_every.max(1)) || done == num_batches {
            let rows = meter.rows() - rows_before;
            sink.send(progress(epoch, done, num_batches, &meter, rows, started))?;
        }
    }
    Ok((meter, rows_before))
}

/// Stops a draining fold before batch `next` (zero-based) of `epoch`. When this run
/// trained any batch since the last latest checkpoint, sends one that resumes at `next`.
/// Returns the error that ends the fold; a failure to checkpoint replaces it.
fn hand_back(
    run: &FoldRun<'_>,
    epoch: u32,
    next: u32,
    resumed_at: u32,
    meter: EpochMeter,
    sink: &mut dyn EventSink,
) -> TrainError {
    let fold = run.fold();
    if next == resumed_at {
        // Nothing new since the checkpoint this epoch began (or resumed) from.
        info!(
            fold,
            epoch,
            batch = next,
            "draining: no batch since the last checkpoint"
        );
    } else if let Err(e) = send_partial(run, epoch, next, meter, sink) {
        return e;
    }
    TrainError::Drained {
        fold,
        epoch,
        batches_done: next,
    }
}

/// Sends a latest checkpoint taken after `batches_done` batches of `epoch`.
fn send_partial(
    run: &FoldRun<'_>,
    epoch: u32,
    batches_done: u32,
    meter: EpochMeter,
    sink: &mut dyn EventSink,
) -> Result<(), TrainError> {
    let bytes = run.latest_checkpoint(Some(PartialEpoch {
        epoch,
        batches_done,
        meter,
    }))?;
    info!(
        fold = run.fold(),
        epoch,
        batch = batches_done,
        bytes = bytes.len(),
        "draining: checkpoint of the epoch in progress"
    );
    sink.send(FoldEvent::Checkpoint {
        kind: CheckpointKind::Latest,
        // The coordinator's record: epochs complete; the file says how far the next got.
        epoch: run.state.epochs_done,
        bytes,
    })?;
    Ok(())
}

/// The running epoch's mean loss and throughput after `done` of `batches` batches.
fn progress(
    epoch: u32,
    done: u32,
    batches: u32,
    meter: &EpochMeter,
    rows_this_run: u64,
    started: Instant,
) -> FoldEvent {
    FoldEvent::Progress {
        epoch,
        batch: done,
        batches,
        loss: meter.mean_loss(),
        images_per_sec: rows_this_run as f64 / started.elapsed().as_secs_f64().max(1e-9),
        phase: "train",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::train::options::RunOptions;
    use crate::train::sink::SinkClosed;
    use crate::train::test_fold::{shared, tiny_fold};
    use tch::Tensor;

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
        let never = FoldControl::default();
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
        let bytes = start
            .state
            .encode(&l.vs, &l.adam, l.scaler.as_ref(), None, None);
        task.resume = Some(bytes.unwrap());
        let never = FoldControl::default();
        let record = |epoch| {
            let mut run = FoldRun::prepare(&task, source.clone(), every_batch()).unwrap();
            let r = run_epoch(&mut run, epoch, &mut Vec::new(), &never).unwrap();
            (r.loss, r.val_loss, r.accuracy, r.val_f1)
        };
        assert_eq!(record(2), record(2));
        assert_ne!(record(2), record(3), "each epoch draws its own order");
    }

    #[test]
    fn amp_overflows_are_skipped_until_too_many_in_a_row_and_fp32_fails_at_once() {
        use crate::train::amp::{GradScaler, OVERFLOW_STREAK_LIMIT};
        // 32 images in batches of four: eight batches, every loss NaN.
        let (task, source) = tiny_fold(32, 3, 1, 1);
        let source = shared(source);
        let never = FoldControl::default();
        let poisoned = || {
            let mut run = FoldRun::prepare(&task, source.clone(), every_batch()).unwrap();
            run.learner.class_weights = Some(Tensor::from_slice(&[f32::NAN; 3]));
            run
        };
        let failing_batch = |err: TrainError| match err {
            TrainError::NanLoss {
                batch,
                phase: "train",
                ..
            } => batch,
            other => panic!("expected nan_loss, got {other}"),
        };

        let mut fp32 = poisoned();
        let err = run_epoch(&mut fp32, 1, &mut Vec::new(), &never).unwrap_err();
        assert_eq!(failing_batch(err), 1, "fp32 fails on the first NaN");

        let mut amp = poisoned();
        amp.learner.scaler = Some(GradScaler::new(tch::Device::Cpu));
        let scale = amp.learner.scaler.as_ref().unwrap().state().scale;
        let err = run_epoch(&mut amp, 1, &mut Vec::new(), &never).unwrap_err();
        assert_eq!(failing_batch(err), OVERFLOW_STREAK_LIMIT + 1);
        assert_eq!(amp.learner.adam.state().iterations, 0);
        let lowered = amp.learner.scaler.as_ref().unwrap().state().scale;
        assert_eq!(
            lowered,
            scale / f64::from(1u32 << (OVERFLOW_STREAK_LIMIT + 1)),
            "every overflow halves the scale"
        );
    }

    #[test]
    fn a_cancelled_epoch_stops_before_its_first_batch() {
        let (task, source) = tiny_fold(8, 3, 1, 1);
        let mut run = FoldRun::prepare(&task, shared(source), every_batch()).unwrap();
        let mut events = Vec::new();
        let cancelled = FoldControl::default();
        cancelled.cancel();
        let err = run_epoch(&mut run, 1, &mut events, &cancelled).unwrap_err();
        assert!(matches!(err, TrainError::Cancelled { fold: 0 }), "{err}");
        assert!(events.is_empty());
        assert_eq!(run.learner.adam.state().iterations, 0);
    }

    /// Asks for a drain once the training pass reports batch `after`.
    struct DrainAfter {
        after: u32,
        control: Arc<FoldControl>,
        events: Vec<FoldEvent>,
    }

    impl EventSink for DrainAfter {
        fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
            if let FoldEvent::Progress { batch, .. } = event
                && batch == self.after
            {
                self.control.drain();
            }
            self.events.push(event);
            Ok(())
        }
    }

    #[test]
    fn a_drained_epoch_resumes_at_its_next_batch_and_ends_as_if_never_stopped() {
        // Twelve images in batches of four: three batches; the drain lands after the first.
        let (mut task, source) = tiny_fold(12, 3, 1, 1);
        let source = shared(source);
        let never = FoldControl::default();
        let numbers = |r: EpochRecord| (r.loss, r.accuracy, r.f1, r.val_loss, r.val_f1);

        let mut whole = FoldRun::prepare(&task, source.clone(), every_batch()).unwrap();
        let uninterrupted = run_epoch(&mut whole, 1, &mut Vec::new(), &never).unwrap();

        let mut first = FoldRun::prepare(&task, source.clone(), every_batch()).unwrap();
        let mut sink = DrainAfter {
            after: 1,
            control: FoldControl::new(),
            events: Vec::new(),
        };
        let control = sink.control.clone();
        let err = run_epoch(&mut first, 1, &mut sink, &control).unwrap_err();
        assert!(
            matches!(
                err,
                TrainError::Drained {
                    fold: 0,
                    epoch: 1,
                    batches_done: 1
                }
            ),
            "{err}"
        );
        assert_eq!(err.cause(), foldtrain_proto::FailureCause::WorkerStopping);
        assert_eq!(first.learner.adam.state().iterations, 1);
        let Some(FoldEvent::Checkpoint {
            kind: CheckpointKind::Latest,
            epoch: 0,
            bytes,
        }) = sink.events.last()
        else {
            panic!("no checkpoint after the drain: {:?}", sink.events.last());
        };
        let (state, _) = crate::train::checkpoint::decode(bytes).unwrap();
        let partial = state.partial_epoch.expect("a partial epoch");
        assert_eq!(
            (partial.epoch, partial.batches_done, partial.meter.rows()),
            (1, 1, 4)
        );

        task.resume = Some(bytes.clone());
        let mut resumed = FoldRun::prepare(&task, source, every_batch()).unwrap();
        let mut events = Vec::new();
        let finished = run_epoch(&mut resumed, 1, &mut events, &never).unwrap();
        let batches: Vec<u32> = events
            .iter()
            .filter_map(|e| match e {
                FoldEvent::Progress { batch, .. } => Some(*batch),
                _ => None,
            })
            .collect();
        assert_eq!(
            batches,
            [2, 3],
            "the resumed epoch starts at its second batch"
        );
        assert_eq!(resumed.learner.adam.state().iterations, 3);
        assert_eq!(numbers(finished), numbers(uninterrupted));
    }

    #[test]
    fn a_drain_before_any_new_batch_sends_no_checkpoint() {
        let (task, source) = tiny_fold(8, 3, 1, 1);
        let mut run = FoldRun::prepare(&task, shared(source), every_batch()).unwrap();
        let mut events = Vec::new();
        let draining = FoldControl::default();
        draining.drain();
        let err = run_epoch(&mut run, 1, &mut events, &draining).unwrap_err();
        assert!(
            matches!(
                err,
                TrainError::Drained {
                    batches_done: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(events.is_empty(), "{events:?}");
    }
}
