//! `ModelCheckpoint(monitor="val_loss", save_best_only=True, mode="min")`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BestCheckpoint {
    /// Best monitored value so far; +inf before the first epoch.
    #[serde(with = "super::infinity_as_null")]
    pub best: f64,
    /// One-based epoch of the best value; 0 before any.
    pub best_epoch: u32,
}

impl Default for BestCheckpoint {
    fn default() -> Self {
        Self {
            best: f64::INFINITY,
            best_epoch: 0,
        }
    }
}

impl BestCheckpoint {
    /// Returns true when this epoch's weights must be saved (strictly better than the best).
    /// A NaN value never improves, as `np.less(nan, best)` is false.
    pub fn on_epoch_end(&mut self, epoch: u32, current: f64) -> bool {
        if current < self.best {
            self.best = current;
            self.best_epoch = epoch;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_only_strict_improvements() {
        let mut cb = BestCheckpoint::default();
        let decisions: Vec<bool> = [1.0, 0.8, 0.8, 0.9, f64::NAN, 0.5]
            .iter()
            .enumerate()
            .map(|(i, &v)| cb.on_epoch_end(i as u32 + 1, v))
            .collect();
        assert_eq!(decisions, [true, true, false, false, false, true]);
        assert_eq!((cb.best, cb.best_epoch), (0.5, 6));
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut cb = BestCheckpoint::default();
        cb.on_epoch_end(1, 0.25);
        let back: BestCheckpoint =
            serde_json::from_str(&serde_json::to_string(&cb).unwrap()).unwrap();
        assert_eq!(back, cb);
        // +inf must survive too (JSON has no infinity).
        let fresh = BestCheckpoint::default();
        let back: BestCheckpoint =
            serde_json::from_str(&serde_json::to_string(&fresh).unwrap()).unwrap();
        assert_eq!(back, fresh);
    }
}
