//! Weight files: torchvision pretrained features in, and whole-model safetensors out and back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::error::ModelError;

/// What [`load_pretrained`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// `features.*` variables overwritten from the file.
    pub loaded: usize,
    /// Tensors in the file that the model does not use (torchvision's `classifier.*`, `num_batches_tracked`).
    pub ignored: Vec<String>,
}

/// BatchNorm's step counter: PyTorch state dicts carry it, the model has no use for it.
fn is_batch_counter(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

fn to_tensor(origin: &str, name: &str, view: &TensorView<'_>) -> Result<Tensor, ModelError> {
    let kind = match view.dtype() {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        other => {
            return Err(ModelError::Dtype {
                origin: origin.into(),
                name: name.into(),
                dtype: format!("{other:?}"),
            });
        }
    };
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    Tensor::f_from_data_size(view.data(), &shape, kind).map_err(|source| ModelError::Torch {
        what: format!("{origin} tensor {name}"),
        source,
    })
}

/// Copies `src` into the variable `dst` after checking shapes; converts dtype and device.
fn assign(origin: &str, name: &str, dst: &mut Tensor, src: &Tensor) -> Result<(), ModelError> {
    if dst.size() != src.size() {
        return Err(ModelError::Shape {
            origin: origin.into(),
            name: name.into(),
            expected: dst.size(),
            found: src.size(),
        });
    }
    tch::no_grad(|| dst.f_copy_(src)).map_err(|source| ModelError::Torch {
        what: format!("copying {name}"),
        source,
    })
}

fn parse<'a>(origin: &str, bytes: &'a [u8]) -> Result<SafeTensors<'a>, ModelError> {
    SafeTensors::deserialize(bytes).map_err(|e| ModelError::Format {
        origin: origin.into(),
        reason: e.to_string(),
    })
}

/// Loads torchvision-named `features.*` tensors from a safetensors file into `vs`.
///
/// Every `features.*` variable of the model must be in the file with the same shape, and every
/// `features.*` tensor of the file must be a model variable (so weights of another DenseNet
/// depth are refused rather than half loaded). The head keeps its initialisation.
pub fn load_pretrained(vs: &mut VarStore, path: &Path) -> Result<LoadReport, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_pretrained_bytes(vs, &path.display().to_string(), &bytes)
}

/// [`load_pretrained`] from the file's bytes (a blob), with `origin` naming it in errors.
pub fn load_pretrained_bytes(
    vs: &mut VarStore,
    origin: &str,
    bytes: &[u8],
) -> Result<LoadReport, ModelError> {
    let origin = origin.to_string();
    let file = parse(&origin, bytes)?;
    let mut vars = vs.variables();
    let mut report = LoadReport {
        loaded: 0,
        ignored: Vec::new(),
    };
    let mut names: Vec<&str> = file.names();
    names.sort_unstable();
    for name in names {
        if !name.starts_with("features.") || is_batch_counter(name) {
            report.ignored.push(name.to_string());
            continue;
        }
        let Some(dst) = vars.get_mut(name) else {
            return Err(ModelError::Unexpected {
                origin,
                name: name.into(),
            });
        };
        let view = file.tensor(name).map_err(|e| ModelError::Format {
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        let src = to_tensor(&origin, name, &view)?;
        assign(&origin, name, dst, &src)?;
        report.loaded += 1;
    }
    let mut wanted: Vec<(&String, &Tensor)> = vars
        .iter()
        .filter(|(n, _)| n.starts_with("features."))
        .collect();
    wanted.sort_by(|a, b| a.0.cmp(b.0));
    if let Some((name, t)) = wanted.into_iter().find(|(n, _)| file.tensor(n).is_err()) {
        return Err(ModelError::Missing {
            origin,
            name: name.clone(),
            expected: t.size(),
        });
    }
    Ok(report)
}

/// Every variable of `vs` (parameters and BatchNorm running statistics) as f32 safetensors bytes,
/// named as in the VarStore, i.e. torchvision's names for `features.*`.
pub fn save_weights(vs: &VarStore) -> Result<Vec<u8>, ModelError> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(vars.len());
    for (name, t) in vars {
        let t = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let numel = t.numel();
        let mut data = vec![0u8; numel * 4];
        t.f_copy_data_u8(&mut data, numel)
            .map_err(|source| ModelError::Torch {
                what: format!("reading {name}"),
                source,
            })?;
        let shape = t.size().iter().map(|&d| d as usize).collect();
        blobs.push((name, shape, data));
    }
    let mut views = Vec::with_capacity(blobs.len());
    for (name, shape, data) in &blobs {
        let view =
            TensorView::new(Dtype::F32, shape.clone(), data).map_err(|e| ModelError::Format {
                origin: format!("tensor {name}"),
                reason: e.to_string(),
            })?;
        views.push((name.as_str(), view));
    }
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| ModelError::Format {
        origin: "model weights".into(),
        reason: e.to_string(),
    })
}

/// Restores every variable of `vs` from [`save_weights`] output; the file must match the model exactly.
pub fn load_weights(vs: &mut VarStore, bytes: &[u8]) -> Result<(), ModelError> {
    let origin = "weights";
    let file = parse(origin, bytes)?;
    let mut vars = vs.variables();
    let mut names: Vec<&str> = file.names();
    names.sort_unstable();
    for name in &names {
        if !vars.contains_key(*name) {
            return Err(ModelError::Unexpected {
                origin: origin.into(),
                name: name.to_string(),
            });
        }
    }
    let mut var_names: Vec<String> = vars.keys().cloned().collect();
    var_names.sort_unstable();
    for name in var_names {
        let dst = vars.get_mut(&name).expect("name taken from the same map");
        let view = file.tensor(&name).map_err(|_| ModelError::Missing {
            origin: origin.into(),
            name: name.clone(),
            expected: dst.size(),
        })?;
        let src = to_tensor(origin, &name, &view)?;
        assign(origin, &name, dst, &src)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Classifier;
    use foldtrain_proto::config::{Arch, ModelConfig};

    fn tiny_store(classes: i64) -> (VarStore, Classifier) {
        let vs = VarStore::new(Device::Cpu);
        let cfg = ModelConfig {
            arch: Arch::DensenetTiny,
            head_units: 8,
            ..ModelConfig::default()
        };
        let model = Classifier::new(&vs.root(), &cfg, classes);
        (vs, model)
    }

    fn write(dir: &Path, file: &str, tensors: &[(String, Tensor)]) -> std::path::PathBuf {
        let path = dir.join(file);
        // Kernels live channels-last in the model; files hold contiguous tensors.
        let tensors: Vec<(String, Tensor)> = tensors
            .iter()
            .map(|(n, t)| (n.clone(), t.contiguous()))
            .collect();
        Tensor::write_safetensors(&tensors, &path).unwrap();
        path
    }

    fn features_of(vs: &VarStore) -> Vec<(String, Tensor)> {
        let mut v: Vec<_> = vs
            .variables()
            .into_iter()
            .filter(|(n, _)| n.starts_with("features."))
            .map(|(n, t)| (n, t.detach().rand_like()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn save_then_load_restores_params_and_running_stats() {
        let (vs, model) = tiny_store(3);
        let x = crate::model::seeded(11, || {
            Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu))
        });
        let _ = model.forward_t(&x, true); // moves BN running statistics away from 0/1
        let bytes = save_weights(&vs).unwrap();
        let (mut other, other_model) = tiny_store(3);
        load_weights(&mut other, &bytes).unwrap();
        let a = vs.variables();
        for (name, t) in other.variables() {
            assert!(t.equal(&a[&name]), "{name} differs after round trip");
        }
        assert!(
            model
                .forward_t(&x, false)
                .equal(&other_model.forward_t(&x, false))
        );
        assert!(
            a["head.bn0.running_mean"]
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
    }

    #[test]
    fn load_weights_refuses_another_shape() {
        let (vs, _) = tiny_store(3);
        let bytes = save_weights(&vs).unwrap();
        let (mut other, _) = tiny_store(4);
        let err = load_weights(&mut other, &bytes).unwrap_err().to_string();
        assert!(
            err.contains("head.out") && err.contains("[4") && err.contains("[3"),
            "{err}"
        );
        let err = load_weights(&mut other, b"not safetensors").unwrap_err();
        assert!(matches!(err, ModelError::Format { .. }), "{err}");
    }

    #[test]
    fn pretrained_loads_features_and_ignores_classifier() {
        let dir = tempfile::tempdir().unwrap();
        let (mut vs, _) = tiny_store(3);
        let mut tensors = features_of(&vs);
        tensors.push((
            "features.norm0.num_batches_tracked".into(),
            Tensor::from(7i64),
        ));
        tensors.push((
            "classifier.weight".into(),
            Tensor::zeros([1000, 32], (Kind::Float, Device::Cpu)),
        ));
        let path = write(dir.path(), "w.safetensors", &tensors);
        let head_before = vs.variables()["head.dense.weight"].copy();
        let report = load_pretrained(&mut vs, &path).unwrap();
        assert_eq!(report.loaded, tensors.len() - 2);
        assert_eq!(
            report.ignored,
            vec!["classifier.weight", "features.norm0.num_batches_tracked"]
        );
        let vars = vs.variables();
        for (name, t) in &tensors[..tensors.len() - 2] {
            assert!(vars[name].equal(t), "{name} not loaded");
        }
        assert!(vars["head.dense.weight"].equal(&head_before));
    }

    #[test]
    fn pretrained_errors_name_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let (mut vs, _) = tiny_store(3);
        let full = features_of(&vs);

        let missing: Vec<_> = full
            .iter()
            .filter(|(n, _)| n != "features.norm5.weight")
            .map(|(n, t)| (n.clone(), t.copy()))
            .collect();
        let err = load_pretrained(&mut vs, &write(dir.path(), "m.safetensors", &missing))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("features.norm5.weight") && err.contains("m.safetensors"),
            "{err}"
        );

        let mut wrong: Vec<_> = full.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        let i = wrong
            .iter()
            .position(|(n, _)| n == "features.conv0.weight")
            .unwrap();
        wrong[i].1 = Tensor::zeros([64, 3, 7, 7], (Kind::Float, Device::Cpu));
        let err = load_pretrained(&mut vs, &write(dir.path(), "s.safetensors", &wrong))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("features.conv0.weight")
                && err.contains("[64, 3, 7, 7]")
                && err.contains("[16, 3, 7, 7]"),
            "{err}"
        );

        let mut extra: Vec<_> = full.iter().map(|(n, t)| (n.clone(), t.copy())).collect();
        extra.push((
            "features.denseblock4.denselayer3.norm1.weight".into(),
            Tensor::zeros([8], (Kind::Float, Device::Cpu)),
        ));
        let err = load_pretrained(&mut vs, &write(dir.path(), "e.safetensors", &extra))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("denselayer3") && err.contains("not part of the model"),
            "{err}"
        );

        let err = load_pretrained(&mut vs, &dir.path().join("absent.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.safetensors"), "{err}");
    }
}
