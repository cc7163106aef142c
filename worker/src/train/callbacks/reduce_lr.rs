//! `ReduceLROnPlateau(monitor="val_loss", factor, patience, min_delta, cooldown=0,
//! min_lr=0, mode="min")`: improvement means current < best − min_delta (absolute).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceLrOnPlateau {
    pub factor: f64,
    pub patience: u32,
    pub min_delta: f64,
    pub cooldown: u32,
    pub min_lr: f64,
    pub wait: u32,
    pub cooldown_counter: u32,
    #[serde(with = "super::infinity_as_null")]
    pub best: f64,
}

/// What the optimizer must do after an epoch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrDecision {
    Keep,
    Reduce { from: f64, to: f64 },
}

impl ReduceLrOnPlateau {
    pub fn new(factor: f64, patience: u32, min_delta: f64) -> Self {
        Self {
            factor,
            patience,
            min_delta,
            cooldown: 0,
            min_lr: 0.0,
            wait: 0,
            cooldown_counter: 0,
            best: f64::INFINITY,
        }
    }

    fn in_cooldown(&self) -> bool {
        self.cooldown_counter > 0
    }

    /// Decides from this epoch's monitored value and the optimizer's current base rate.
    pub fn on_epoch_end(&mut self, current: f64, lr: f64) -> LrDecision {
        if self.in_cooldown() {
            self.cooldown_counter -= 1;
            self.wait = 0;
        }
        if current < self.best - self.min_delta {
            self.best = current;
            self.wait = 0;
        } else if !self.in_cooldown() {
            self.wait += 1;
            if self.wait >= self.patience && lr > self.min_lr {
                let to = (lr * self.factor).max(self.min_lr);
                self.cooldown_counter = self.cooldown;
                self.wait = 0;
                return LrDecision::Reduce { from: lr, to };
            }
        }
        LrDecision::Keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduces_after_patience_plateau_epochs_and_resets_wait() {
        let mut cb = ReduceLrOnPlateau::new(0.1, 2, 1e-4);
        let mut lr = 1e-3;
        let mut reductions = Vec::new();
        for (epoch, v) in [1.0, 0.99995, 0.99992, 0.5, 0.6, 0.7, 0.8, 0.9]
            .into_iter()
            .enumerate()
        {
            if let LrDecision::Reduce { from, to } = cb.on_epoch_end(v, lr) {
                assert_eq!(from, lr);
                lr = to;
                reductions.push(epoch + 1);
            }
        }
        // 0.99995 and 0.99992 are within min_delta of 1.0: plateau -> reduce at epoch 3;
        // after 0.5 the plateau of 0.6, 0.7 reduces at 6 and 0.8, 0.9 at 8.
        assert_eq!(reductions, [3, 6, 8]);
        assert!((lr - 1e-6).abs() < 1e-18, "{lr}");
    }

    #[test]
    fn min_lr_floors_the_rate() {
        let mut cb = ReduceLrOnPlateau::new(0.5, 1, 0.0);
        cb.min_lr = 0.3;
        cb.on_epoch_end(1.0, 1.0);
        assert_eq!(
            cb.on_epoch_end(1.0, 0.4),
            LrDecision::Reduce { from: 0.4, to: 0.3 }
        );
        assert_eq!(cb.on_epoch_end(1.0, 0.3), LrDecision::Keep);
    }

    #[test]
    fn state_round_trips_through_json() {
        let mut cb = ReduceLrOnPlateau::new(0.1, 5, 1e-4);
        cb.on_epoch_end(0.7, 1e-3);
        cb.on_epoch_end(0.8, 1e-3);
        let back: ReduceLrOnPlateau =
            serde_json::from_str(&serde_json::to_string(&cb).unwrap()).unwrap();
        assert_eq!(back, cb);
        assert_eq!(back.wait, 1);
    }
}
