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

#[cfg(test)]
mod tests {
    use super::*;

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
