//! The dynamic loss scaler for fp16 autocast, torch's `GradScaler` on libtorch's own kernels:
//! scale the loss, unscale the gradients while checking for inf/NaN, skip the step when any
//! is found, and grow or back off the scale.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// torch's GradScaler defaults.
const INIT_SCALE: f64 = 65536.0;
const GROWTH_FACTOR: f64 = 2.0;
const BACKOFF_FACTOR: f64 = 0.5;
const GROWTH_INTERVAL: i64 = 2000;

/// What survives a checkpoint: the current scale and the run of finite steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f64,
    pub growth_tracker: i64,
}

pub struct GradScaler {
    scale: Tensor,
    growth_tracker: Tensor,
    found_inf: Tensor,
}

impl GradScaler {
    pub fn new(device: Device) -> Self {
        Self::from_state(
            ScalerState {
                scale: INIT_SCALE,
                growth_tracker: 0,
            },
            device,
        )
    }

    pub fn from_state(state: ScalerState, device: Device) -> Self {
        Self {
            scale: Tensor::from_slice(&[state.scale as f32]).to_device(device),
            growth_tracker: Tensor::from_slice(&[state.growth_tracker as i32]).to_device(device),
            found_inf: Tensor::zeros([1], (Kind::Float, device)),
        }
    }

    pub fn state(&self) -> ScalerState {
        ScalerState {
            scale: self.scale.double_value(&[0]),
            growth_tracker: self.growth_tracker.int64_value(&[0]),
        }
    }

    /// The loss multiplied by the current scale, for `backward`.
    pub fn scale(&self, loss: &Tensor) -> Tensor {
        loss * self.scale.to_kind(loss.kind())
    }

    /// Divides every gradient by the scale in place; returns true when any was inf or NaN,
    /// in which case the optimizer step must be skipped.
    pub fn unscale(&mut self, grads: &mut [Tensor]) -> bool {
        let _guard = tch::no_grad_guard();
        let _ = self.found_inf.zero_();
        let inv_scale = self
            .scale
            .to_kind(Kind::Double)
            .reciprocal()
            .to_kind(Kind::Float);
        for grad in grads.iter_mut() {
            grad.internal_amp_non_finite_check_and_unscale(&mut self.found_inf, &inv_scale);
        }
        self.found_inf.double_value(&[0]) > 0.0
    }

    /// Records a step whose loss overflowed in the forward pass (no gradients to check):
    /// the step is skipped and the scale backs off, as after a gradient overflow.
    pub fn overflowed_in_forward(&mut self) {
        let _ = self.found_inf.fill_(1.0);
        self.update();
    }

    /// Backs off after an overflow, grows after `GROWTH_INTERVAL` clean steps.
    pub fn update(&mut self) {
        let _guard = tch::no_grad_guard();
        let _ = self.scale.internal_amp_update_scale_(
            &self.growth_tracker,
            &self.found_inf,
            GROWTH_FACTOR,
            BACKOFF_FACTOR,
            GROWTH_INTERVAL,
        );
    }
}

/// Non-finite AMP losses in a row that are taken for fp16 overflow; one more fails the fold.
pub const OVERFLOW_STREAK_LIMIT: u32 = 5;

/// What the training loop does with one step's loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepVerdict {
    /// A finite loss: count the batch.
    Count,
    /// An fp16 overflow under AMP: the step was skipped and the scale lowered; leave the
    /// batch out of the epoch's numbers and go on.
    SkipOverflow,
    /// Divergence: a non-finite fp32 loss, or more AMP overflows in a row than the limit.
    Fail,
}

/// Counts AMP overflow steps in a row. Under fp16 autocast a non-finite loss before
/// unscaling is an overflow (GradScaler skips such steps), not divergence; only a run of
/// them longer than [`OVERFLOW_STREAK_LIMIT`] is. In fp32 a non-finite loss fails at once.
#[derive(Debug, Default)]
pub struct OverflowStreak {
    in_a_row: u32,
}

impl OverflowStreak {
    /// `overflow` is true when the step ran under AMP and its loss was not finite.
    pub fn judge(&mut self, loss: f64, overflow: bool) -> StepVerdict {
        if loss.is_finite() {
            self.in_a_row = 0;
            return StepVerdict::Count;
        }
        if overflow && self.in_a_row < OVERFLOW_STREAK_LIMIT {
            self.in_a_row += 1;
            return StepVerdict::SkipOverflow;
        }
        StepVerdict::Fail
    }

    /// Overflow steps in the current run.
    pub fn in_a_row(&self) -> u32 {
        self.in_a_row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflows_are_skipped_until_too_many_come_in_a_row() {
        let mut streak = OverflowStreak::default();
        for _ in 0..OVERFLOW_STREAK_LIMIT {
            assert_eq!(streak.judge(f64::INFINITY, true), StepVerdict::SkipOverflow);
        }
        // A finite step ends the run.
        assert_eq!(streak.judge(1.5, false), StepVerdict::Count);
        assert_eq!(streak.in_a_row(), 0);
        for _ in 0..OVERFLOW_STREAK_LIMIT {
            assert_eq!(streak.judge(f64::NAN, true), StepVerdict::SkipOverflow);
        }
        assert_eq!(streak.judge(f64::NAN, true), StepVerdict::Fail);
        // In fp32 there is no overflow to forgive.
        let mut fp32 = OverflowStreak::default();
        assert_eq!(fp32.judge(f64::NAN, false), StepVerdict::Fail);
    }

    #[test]
    fn a_forward_overflow_skips_and_backs_off() {
        let mut scaler = GradScaler::new(Device::Cpu);
        scaler.overflowed_in_forward();
        scaler.overflowed_in_forward();
        assert_eq!(
            scaler.state(),
            ScalerState {
                scale: INIT_SCALE / 4.0,
                growth_tracker: 0
            }
        );
    }

    #[test]
    fn unscales_finite_gradients_and_keeps_the_scale() {
        let mut scaler = GradScaler::new(Device::Cpu);
        let mut grads = vec![Tensor::from_slice(&[65536.0f32, -131072.0])];
        assert!(!scaler.unscale(&mut grads));
        assert_eq!(Vec::<f32>::try_from(&grads[0]).unwrap(), vec![1.0, -2.0]);
        scaler.update();
        assert_eq!(
            scaler.state(),
            ScalerState {
                scale: INIT_SCALE,
                growth_tracker: 1
            }
        );
    }

    #[test]
    fn overflow_skips_and_backs_off_then_state_restores() {
        let mut scaler = GradScaler::new(Device::Cpu);
        let mut grads = vec![
            Tensor::from_slice(&[1.0f32]),
            Tensor::from_slice(&[f32::INFINITY]),
        ];
        assert!(scaler.unscale(&mut grads));
        scaler.update();
        let state = scaler.state();
        assert_eq!(
            state,
            ScalerState {
                scale: INIT_SCALE / 2.0,
                growth_tracker: 0
            }
        );
        assert_eq!(GradScaler::from_state(state, Device::Cpu).state(), state);
        let loss = Tensor::from_slice(&[2.0f32]);
        assert_eq!(scaler.scale(&loss).double_value(&[0]), 65536.0);
    }
}
