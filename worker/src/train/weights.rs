//! Whole-model weight snapshots in memory (the best epoch's weights) and their transfer to
//! and from a VarStore, BatchNorm running statistics included.

use std::collections::HashMap;

use tch::Tensor;
use tch::nn::VarStore;

/// Deep copies of every VarStore variable, keyed by name.
pub(crate) struct Snapshot(pub HashMap<String, Tensor>);

impl Snapshot {
    pub fn take(vs: &VarStore) -> Self {
        let _guard = tch::no_grad_guard();
        Snapshot(
            vs.variables()
                .into_iter()
                .map(|(name, t)| (name, t.detach().copy()))
                .collect(),
        )
    }

    /// Copies the snapshot into `vs`; fails naming the first variable it lacks or whose
    /// shape differs.
    pub fn restore_into(&self, vs: &VarStore) -> Result<(), String> {
        restore_named(vs, |name| self.0.get(name).map(Tensor::shallow_clone))
    }

    /// Sorted (name, tensor) pairs under `prefix`, for the checkpoint file.
    pub fn prefixed(&self, prefix: &str) -> Vec<(String, &Tensor)> {
        let mut out: Vec<(String, &Tensor)> = self
            .0
            .iter()
            .map(|(name, t)| (format!("{prefix}{name}"), t))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Copies tensors returned by `lookup` into every variable of `vs`, in place and without
/// gradients, so optimizer handles to the variables stay valid.
pub(crate) fn restore_named(
    vs: &VarStore,
    mut lookup: impl FnMut(&str) -> Option<Tensor>,
) -> Result<(), String> {
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        let src = lookup(&name).ok_or_else(|| format!("missing tensor `{name}`"))?;
        if src.size() != var.size() {
            return Err(format!(
                "tensor `{name}` has shape {:?}, expected {:?}",
                src.size(),
                var.size()
            ));
        }
        var.copy_(&src.to_device(var.device()).to_kind(var.kind()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, nn};

    #[test]
    fn snapshot_is_a_deep_copy_that_restores_buffers_too() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut w = crate::model::seeded(11, || vs.root().randn("w", &[2, 2], 0.0, 1.0));
        let mut mean = vs.root().zeros_no_train("running_mean", &[2]);
        let snap = Snapshot::take(&vs);
        tch::no_grad(|| {
            let _ = w.fill_(5.0);
            let _ = mean.fill_(3.0);
        });
        assert!(!snap.0["w"].equal(&w));
        snap.restore_into(&vs).unwrap();
        assert!(snap.0["w"].equal(&w));
        assert_eq!(mean.double_value(&[0]), 0.0);
        let names: Vec<String> = snap.prefixed("best.").into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["best.running_mean", "best.w"]);
        let err = restore_named(&vs, |_| None).unwrap_err();
        assert!(err.contains("missing tensor"), "{err}");
    }
}
