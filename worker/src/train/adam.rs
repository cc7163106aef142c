//! Adam with Keras semantics (bias correction folded into the step size, epsilon added to
//! the uncorrected root of the second moment, `decay` as lr / (1 + decay * iterations)),
//! written by hand so that its whole state can be checkpointed and restored exactly.

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn::VarStore};

/// Keras's Adam defaults.
pub const BETA_1: f64 = 0.9;
pub const BETA_2: f64 = 0.999;
pub const EPSILON: f64 = 1e-7;

/// The scalar part of the optimizer state; the moments travel as tensors.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamState {
    /// Updates applied so far (Keras `optimizer.iterations`).
    pub iterations: u64,
    /// The base learning rate, before decay; ReduceLROnPlateau lowers it.
    pub lr: f64,
    pub decay: f64,
}

/// One trainable variable with its two moments.
struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
}

pub struct KerasAdam {
    slots: Vec<Slot>,
    state: AdamState,
}

impl KerasAdam {
    /// Tracks every trainable variable of `vs` (BatchNorm running statistics are not
    /// trainable, so they are left alone), in name order so the state layout is stable.
    pub fn new(vs: &VarStore, lr: f64, decay: f64) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = named
            .into_iter()
            .map(|(name, param)| {
                let m = param.zeros_like().detach();
                let v = param.zeros_like().detach();
                Slot { name, param, m, v }
            })
            .collect();
        Self {
            slots,
            state: AdamState {
                iterations: 0,
                lr,
                decay,
            },
        }
    }

    pub fn state(&self) -> AdamState {
        self.state
    }

    pub fn lr(&self) -> f64 {
        self.state.lr
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.state.lr = lr;
    }

    /// The rate the next update uses: lr / (1 + decay * iterations).
    pub fn decayed_lr(&self) -> f64 {
        self.state.lr / (1.0 + self.state.decay * self.state.iterations as f64)
    }

    /// Clears every gradient before the next backward pass.
    pub fn zero_grad(&mut self) {
        for slot in &mut self.slots {
            let mut grad = slot.param.grad();
            if grad.defined() {
                let _ = grad.detach_();
                let _ = grad.zero_();
            }
        }
    }

    /// The gradients that exist, for unscaling and finiteness checks.
    pub fn gradients(&self) -> Vec<Tensor> {
        self.slots
            .iter()
            .map(|s| s.param.grad())
            .filter(|g| g.defined())
            .collect()
    }

    /// One Adam update from the current gradients, as TensorFlow's `ApplyAdam` does it:
    /// m += (g - m)(1 - b1); v += (g² - v)(1 - b2); p -= lr_t·m / (√v + ε) with
    /// lr_t = lr·√(1 - b2^t) / (1 - b1^t).
    pub fn step(&mut self) {
        let t = (self.state.iterations + 1) as f64;
        let alpha = self.decayed_lr() * (1.0 - BETA_2.powf(t)).sqrt() / (1.0 - BETA_1.powf(t));
        let _guard = tch::no_grad_guard();
        for slot in &mut self.slots {
            let grad = slot.param.grad();
            if !grad.defined() {
                continue;
            }
            // Moments stay in the parameter's precision even if gradients arrive in another.
            let grad = grad.to_kind(slot.m.kind());
            let _ = slot.m.lerp_(&grad, 1.0 - BETA_1);
            let _ = slot.v.lerp_(&grad.square(), 1.0 - BETA_2);
            let denom = slot.v.sqrt() + EPSILON;
            let update = (&slot.m * alpha) / denom;
            let _ = slot.param.g_sub_(&update);
        }
        self.state.iterations += 1;
    }

    /// The moment tensors under stable names (`adam.m.<var>`, `adam.v.<var>`).
    pub fn named_moments(&self) -> Vec<(String, &Tensor)> {
        let mut out = Vec::with_capacity(self.slots.len() * 2);
        for slot in &self.slots {
            out.push((format!("adam.m.{}", slot.name), &slot.m));
            out.push((format!("adam.v.{}", slot.name), &slot.v));
        }
        out
    }

    /// Restores the scalar state and every moment; `lookup` returns a saved tensor by name.
    /// Fails naming the first missing or misshapen moment.
    pub fn restore(
        &mut self,
        state: AdamState,
        mut lookup: impl FnMut(&str) -> Option<Tensor>,
    ) -> Result<(), String> {
        let _guard = tch::no_grad_guard();
        for slot in &mut self.slots {
            for (prefix, dst) in [("adam.m.", &mut slot.m), ("adam.v.", &mut slot.v)] {
                let name = format!("{prefix}{}", slot.name);
                let src = lookup(&name).ok_or_else(|| format!("missing tensor `{name}`"))?;
                if src.size() != dst.size() {
                    return Err(format!(
                        "tensor `{name}` has shape {:?}, expected {:?}",
                        src.size(),
                        dst.size()
                    ));
                }
                dst.copy_(&src.to_kind(dst.kind()));
            }
        }
        self.state = state;
        Ok(())
    }

    /// Number of tracked variables.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, nn};

    fn scalar(t: &Tensor) -> f64 {
        t.to_kind(Kind::Double).double_value(&[])
    }

    /// Reference Keras Adam on plain f64 numbers, for one scalar parameter.
    fn reference(grads: &[f64], lr: f64, decay: f64, p0: f64) -> f64 {
        let (mut p, mut m, mut v) = (p0, 0.0, 0.0);
        for (i, g) in grads.iter().enumerate() {
            let lr_t = lr / (1.0 + decay * i as f64);
            let t = (i + 1) as f64;
            let a = lr_t * (1.0 - BETA_2.powf(t)).sqrt() / (1.0 - BETA_1.powf(t));
            m += (g - m) * (1.0 - BETA_1);
            v += (g * g - v) * (1.0 - BETA_2);
            p -= a * m / (v.sqrt() + EPSILON);
        }
        p
    }

    #[test]
    fn matches_the_keras_update_rule_with_decay() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[0.5f64]));
        let mut adam = KerasAdam::new(&vs, 0.1, 0.5);
        let mut grads = Vec::new();
        for _ in 0..5 {
            adam.zero_grad();
            // d/dw (w^2 * 3) = 6w
            let loss = (&w * &w * 3.0).sum(Kind::Double);
            loss.backward();
            grads.push(scalar(&w.grad()));
            adam.step();
        }
        let expected = reference(&grads, 0.1, 0.5, 0.5);
        // The variable is f32 (the VarStore kind), the reference f64.
        assert!(
            (scalar(&w) - expected).abs() < 1e-6,
            "{} vs {expected}",
            scalar(&w)
        );
        assert_eq!(adam.state().iterations, 5);
        assert!((adam.decayed_lr() - 0.1 / 3.5).abs() < 1e-15);
    }

    #[test]
    fn skips_buffers_and_restores_state_exactly() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let w = crate::model::seeded(11, || root.randn("w", &[3, 2], 0.0, 1.0));
        let _buffer = root.zeros_no_train("running_mean", &[2]);
        let mut adam = KerasAdam::new(&vs, 1e-2, 0.0);
        assert_eq!(adam.len(), 1);
        for _ in 0..3 {
            adam.zero_grad();
            w.square().sum(Kind::Float).backward();
            adam.step();
        }
        let saved: Vec<(String, Tensor)> = adam
            .named_moments()
            .into_iter()
            .map(|(n, t)| (n, t.copy()))
            .collect();
        let mut fresh = KerasAdam::new(&vs, 1.0, 0.0);
        fresh
            .restore(adam.state(), |n| {
                saved.iter().find(|(k, _)| k == n).map(|(_, t)| t.copy())
            })
            .unwrap();
        assert_eq!(fresh.state(), adam.state());
        for ((_, a), (_, b)) in fresh.named_moments().iter().zip(adam.named_moments()) {
            assert!(a.equal(b));
        }
        let err = fresh.restore(adam.state(), |_| None).unwrap_err();
        assert!(err.contains("adam.m.w"), "{err}");
    }
}
