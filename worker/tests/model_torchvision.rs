//! Numerical proof that the DenseNet121 here is torchvision's: same weights in, same outputs out.

use std::path::{Path, PathBuf};
use std::process::Command;

use foldtrain_proto::config::{BackboneBn, ModelConfig, Pooling};
use foldtrain_worker::model::{Classifier, load_pretrained};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The project venv's python, or `FOLDTRAIN_PYTHON`.
fn python() -> PathBuf {
    std::env::var_os("FOLDTRAIN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

fn read(path: &Path) -> std::collections::HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// max |a - b| relative to max |b|.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[])
}

#[test]
fn densenet121_features_and_logits_match_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [64, 40];
    let status = Command::new(python())
        .arg(script("torchvision_reference.py"))
        .arg(dir.path())
        .args(sizes.map(|s| s.to_string()))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    assert!(
        status.success(),
        "torchvision_reference.py failed: {status}"
    );

    let mut vs = VarStore::new(Device::Cpu);
    // torchvision pools by average and uses its own BatchNorm epsilon; the head is not
    // involved in this comparison.
    let cfg = ModelConfig {
        pooling: Pooling::Avg,
        backbone_bn: BackboneBn::Torchvision,
        head_units: 8,
        ..ModelConfig::default()
    };
    let model = Classifier::new(&vs.root(), &cfg, 2);
    let weights_path = dir.path().join("weights.safetensors");
    let report = load_pretrained(&mut vs, &weights_path).unwrap();
    let n_features = vs
        .variables()
        .keys()
        .filter(|n| n.starts_with("features."))
        .count();
    assert_eq!(report.loaded, n_features);
    assert_eq!(report.ignored, vec!["classifier.bias", "classifier.weight"]);

    let weights = read(&weights_path);
    let (w, b) = (&weights["classifier.weight"], &weights["classifier.bias"]);
    for size in sizes {
        let io = read(&dir.path().join(format!("io_{size}.safetensors")));
        let features = tch::no_grad(|| model.features_t(&io["input"], false));
        let err = rel_err(&features, &io["features"]);
        println!("{size}px: features rel err {err:.2e}");
        assert!(
            err < 1e-5,
            "{size}px: pooled features differ from torchvision, rel err {err:.2e}"
        );
        let logits = features.matmul(&w.tr()) + b;
        let err = rel_err(&logits, &io["logits"]);
        println!("{size}px: logits rel err {err:.2e}");
        assert!(
            err < 1e-5,
            "{size}px: logits differ from torchvision, rel err {err:.2e}"
        );
        assert_eq!(logits.kind(), Kind::Float);
    }
}
