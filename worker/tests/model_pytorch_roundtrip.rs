//! Weights saved here load into PyTorch (scripts/foldtrain_torch.py) and give the same probabilities.

use std::path::{Path, PathBuf};
use std::process::Command;

use foldtrain_proto::config::{ModelConfig, Pooling};
use foldtrain_worker::model::{Classifier, save_weights};
use tch::nn::{self, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

fn python() -> PathBuf {
    std::env::var_os("FOLDTRAIN_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

#[test]
fn trained_densenet121_weights_reproduce_in_pytorch() {
    tch::manual_seed(7);
    let vs = VarStore::new(Device::Cpu);
    let cfg = ModelConfig {
        pooling: Pooling::Max,
        head_units: 64,
        ..ModelConfig::default()
    };
    let classes = 5;
    let model = Classifier::new(&vs.root(), &cfg, classes);
    let mut opt = nn::Sgd::default().build(&vs, 0.05).unwrap();
    // A couple of training steps, so weights and every BatchNorm's running statistics move.
    for _ in 0..2 {
        let x = Tensor::randn([4, 3, 40, 40], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3]);
        let loss =
            model.forward_t(&x, true).cross_entropy_for_logits(&y) + model.head_penalty() * 1e-4;
        opt.backward_step(&loss);
    }
    let moved = vs.variables()["head.bn1.running_mean"]
        .abs()
        .max()
        .double_value(&[]);
    assert!(moved > 0.0, "head BatchNorm statistics did not move");

    let input = Tensor::randn([3, 3, 48, 48], (Kind::Float, Device::Cpu));
    let probs = tch::no_grad(|| model.forward_t(&input, false).softmax(1, Kind::Float));
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("best.safetensors");
    std::fs::write(&weights, save_weights(&vs).unwrap()).unwrap();
    let io = dir.path().join("io.safetensors");
    Tensor::write_safetensors(&[("input", &input), ("probs", &probs)], &io).unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/pytorch_roundtrip.py");
    let out = Command::new(python())
        .arg(script)
        .arg(&weights)
        .arg(&io)
        .arg("max")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "pytorch probabilities differ: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("shape=(3, 5)"), "{stdout}");
}
