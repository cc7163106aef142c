//! `EarlyStopping(monitor="val_loss", patience, min_delta=0, mode="min")` with Keras's
//! bookkeeping: `wait` counts epochs since the last improvement and training stops once
//! `wait >= patience` (never after the first epoch).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub patience: u32,
    pub min_delta: f64,
    pub wait: u32,
    #[serde(with = "super::infinity_as_null")]
    pub best: f64,
    /// One-based epoch at which training was stopped; 0 while running.
    pub stopped_epoch: u32,
}

impl EarlyStopping {
    pub fn new(patience: u32) -> Self {
        Self {
            patience,
            min_delta: 0.0,
            wait: 0,
            best: f64::INFINITY,
            stopped_epoch: 0,
        }
    }

    /// Returns true when training must stop after this (one-based) epoch.
    pub fn on_epoch_end(&mut self, epoch: u32, current: f64) -> bool {
        self.wait += 1;
        // Keras in min mode negates min_delta and tests `current - min_delta < best`, that
        // is `current + |min_delta| < best`: an improvement must beat best by min_delta.
        if current + self.min_delta.abs() < self.best {
            self.best = current;
            self.wait = 0;
            return false;
        }
        // Keras checks `epoch > 0` with zero-based epochs: never stop after the first.
        if self.wait >= self.patience && epoch > 1 {
            self.stopped_epoch = epoch;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(patience: u32, values: &[f64]) -> Option<u32> {
        let mut cb = EarlyStopping::new(patience);
        values
            .iter()
            .enumerate()
            .find(|&(i, &v)| cb.on_epoch_end(i as u32 + 1, v))
            .map(|(i, _)| i as u32 + 1)
    }

    #[test]
    fn stops_after_patience_epochs_without_improvement() {
        assert_eq!(run(2, &[1.0, 0.9, 0.95, 0.91, 0.5]), Some(4));
        assert_eq!(run(2, &[1.0, 0.9, 0.95, 0.8, 0.85, 0.7]), None);
        // Equal values are not an improvement with min_delta 0.
        assert_eq!(run(1, &[1.0, 1.0]), Some(2));
    }

    #[test]
    fn an_improvement_must_beat_the_best_by_min_delta() {
        let mut cb = EarlyStopping::new(1);
        cb.min_delta = 0.1;
        assert!(!cb.on_epoch_end(1, 1.0));
        // 0.95 is lower, but not by 0.1: no improvement, and patience 1 runs out.
        assert!(cb.on_epoch_end(2, 0.95));
        assert_eq!((cb.best, cb.wait), (1.0, 1));

        let mut cb = EarlyStopping::new(1);
        cb.min_delta = 0.1;
        cb.on_epoch_end(1, 1.0);
        assert!(!cb.on_epoch_end(2, 0.85), "0.85 beats 1.0 by more than 0.1");
        assert_eq!((cb.best, cb.wait), (0.85, 0));
        // Keras takes the magnitude: a negative min_delta means the same.
        cb.min_delta = -0.1;
        assert!(cb.on_epoch_end(3, 0.8));
    }

    #[test]
    fn patience_zero_never_stops_after_the_first_epoch() {
        // A NaN first value is no improvement, but Keras never stops at epoch 0.
        assert_eq!(run(0, &[f64::NAN, 1.0, 2.0]), Some(3));
    }

    #[test]
    fn resumed_state_decides_like_the_original() {
        let mut a = EarlyStopping::new(3);
        a.on_epoch_end(1, 1.0);
        a.on_epoch_end(2, 1.5);
        let mut b: EarlyStopping =
            serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        for (epoch, v) in [(3, 1.2), (4, 1.1)] {
            assert_eq!(a.on_epoch_end(epoch, v), b.on_epoch_end(epoch, v));
        }
        assert_eq!(a, b);
        assert_eq!(b.stopped_epoch, 4);
    }
}
