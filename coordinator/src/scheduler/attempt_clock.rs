//! Where one attempt's time went: the worker's own split of each epoch (training,
//! validation, checkpoint encoding, from its records), and what the runner itself sees:
//! how long it waits for a latest checkpoint's bytes and for the probabilities, and how
//! long it spends storing checkpoints.

use std::collections::BTreeMap;
use std::time::Instant;

use foldtrain_proto::FoldEvent;
use foldtrain_proto::task::CheckpointKind;

use crate::store::Phase;

/// The kind of the event before, which says what a wait for the next one was spent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Nothing,
    Epoch,
    Checkpoint,
    Probabilities,
    Other,
}

/// Seconds per phase of one attempt, as its events arrive.
#[derive(Debug)]
pub(super) struct AttemptClock {
    seconds: BTreeMap<Phase, f64>,
    waiting_since: Instant,
    last: Last,
}

impl AttemptClock {
    pub fn new(now: Instant) -> Self {
        Self {
            seconds: BTreeMap::new(),
            waiting_since: now,
            last: Last::Nothing,
        }
    }

    /// The runner is done with the last event and waits for the next one.
    pub fn waiting(&mut self, now: Instant) {
        self.waiting_since = now;
    }

    /// An event arrived. A latest checkpoint right after its epoch's record, and a best
    /// checkpoint right after the last epoch's record or latest checkpoint (the worker sends
    /// its best weights once training is over), were waited for as streaming; probabilities after a checkpoint as
    /// prediction. Any other wait (training, setup) is the worker's to report, and is.
    pub fn received(&mut self, event: &FoldEvent, now: Instant) {
        let waited = now
            .saturating_duration_since(self.waiting_since)
            .as_secs_f64();
        self.last = match event {
            FoldEvent::Epoch(record) => {
                self.add(Phase::Training, record.train_seconds());
                self.add(Phase::Validation, record.val_seconds);
                self.add(Phase::CheckpointEncoding, record.checkpoint_seconds);
                Last::Epoch
            }
            FoldEvent::Checkpoint { kind, .. } => {
                let streamed = match kind {
                    CheckpointKind::Latest => self.last == Last::Epoch,
                    CheckpointKind::Best => matches!(self.last, Last::Epoch | Last::Checkpoint),
                };
                if streamed {
                    self.add(Phase::CheckpointStreaming, waited);
                }
                Last::Checkpoint
            }
            FoldEvent::Oof { .. } | FoldEvent::Test { .. } => {
                if matches!(self.last, Last::Checkpoint | Last::Probabilities) {
                    self.add(Phase::Prediction, waited);
                }
                Last::Probabilities
            }
            FoldEvent::Progress { .. } | FoldEvent::Done(_) | FoldEvent::Failed(_) => Last::Other,
        };
    }

    /// The runner spent `seconds` storing a checkpoint.
    pub fn stored_checkpoint(&mut self, seconds: f64) {
        self.add(Phase::CheckpointStorage, seconds);
    }

    pub fn totals(&self) -> Vec<(Phase, f64)> {
        self.seconds.iter().map(|(&p, &s)| (p, s)).collect()
    }

    fn add(&mut self, phase: Phase, seconds: f64) {
        if seconds.is_finite() && seconds > 0.0 {
            *self.seconds.entry(phase).or_default() += seconds;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use foldtrain_proto::task::EpochRecord;

    use super::*;

    fn latest() -> FoldEvent {
        FoldEvent::Checkpoint {
            kind: CheckpointKind::Latest,
            epoch: 1,
            bytes: vec![],
        }
    }

    fn oof() -> FoldEvent {
        FoldEvent::Oof {
            rows: 0,
            classes: 2,
            probs: vec![],
        }
    }

    #[test]
    fn waits_are_put_down_to_what_the_worker_was_doing() {
        let t0 = Instant::now();
        let at = |s: f64| t0 + Duration::from_secs_f64(s);
        let mut clock = AttemptClock::new(t0);
        // Setup and training: the worker's records account for it, not the wait.
        clock.received(
            &FoldEvent::Epoch(EpochRecord {
                epoch: 1,
                seconds: 10.0,
                val_seconds: 2.0,
                checkpoint_seconds: 0.5,
                ..Default::default()
            }),
            at(11.0),
        );
        clock.waiting(at(11.1));
        clock.received(&latest(), at(12.1));
        clock.stored_checkpoint(0.4);
        clock.waiting(at(12.5));
        // Training over: the best weights, then the probabilities.
        clock.received(
            &FoldEvent::Checkpoint {
                kind: CheckpointKind::Best,
                epoch: 1,
                bytes: vec![],
            },
            at(13.0),
        );
        clock.stored_checkpoint(0.1);
        clock.waiting(at(13.1));
        clock.received(&oof(), at(15.5));
        clock.waiting(at(15.6));
        clock.received(&oof(), at(15.8));
        clock.waiting(at(15.9));
        clock.received(
            &FoldEvent::Done(foldtrain_proto::task::FoldSummary {
                best_epoch: 1,
                best_val_loss: 1.0,
                epochs_run: 1,
                early_stopped: false,
            }),
            at(16.0),
        );

        let totals: BTreeMap<Phase, f64> = clock.totals().into_iter().collect();
        let close = |phase: Phase, want: f64| {
            let got = totals.get(&phase).copied().unwrap_or(0.0);
            assert!((got - want).abs() < 1e-9, "{phase:?}: {got} != {want}");
        };
        close(Phase::Training, 8.0);
        close(Phase::Validation, 2.0);
        close(Phase::CheckpointEncoding, 0.5);
        close(Phase::CheckpointStreaming, 1.0 + 0.5);
        close(Phase::CheckpointStorage, 0.4 + 0.1);
        close(Phase::Prediction, 2.4 + 0.2);
        assert_eq!(totals.len(), 6);
    }

    #[test]
    fn waits_after_progress_or_at_the_start_are_not_put_down_to_anything() {
        let t0 = Instant::now();
        let mut clock = AttemptClock::new(t0);
        // A draining worker's mid-epoch checkpoint follows a progress event.
        clock.received(
            &FoldEvent::Progress {
                epoch: 1,
                batch: 1,
                batches: 4,
                loss: 1.0,
                images_per_sec: 1.0,
                phase: "train",
            },
            t0 + Duration::from_secs(3),
        );
        clock.received(&latest(), t0 + Duration::from_secs(5));
        // A resumed fold with nothing left to train sends its probabilities first.
        let mut resumed = AttemptClock::new(t0);
        resumed.received(&oof(), t0 + Duration::from_secs(9));
        assert!(clock.totals().is_empty());
        assert!(resumed.totals().is_empty());
    }

    #[test]
    fn best_weights_right_after_the_last_record_were_streamed() {
        // No latest checkpoint was due after the last epoch: the best weights follow its record.
        let t0 = Instant::now();
        let mut clock = AttemptClock::new(t0);
        clock.received(
            &FoldEvent::Epoch(EpochRecord {
                epoch: 2,
                seconds: 4.0,
                ..Default::default()
            }),
            t0 + Duration::from_secs(4),
        );
        clock.waiting(t0 + Duration::from_secs(4));
        clock.received(
            &FoldEvent::Checkpoint {
                kind: CheckpointKind::Best,
                epoch: 2,
                bytes: vec![],
            },
            t0 + Duration::from_millis(4300),
        );
        let totals: BTreeMap<Phase, f64> = clock.totals().into_iter().collect();
        assert!(
            (totals[&Phase::CheckpointStreaming] - 0.3).abs() < 1e-9,
            "{totals:?}"
        );
    }
}
