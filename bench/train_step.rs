//! Training-step throughput of the foldtrain DenseNet121 classifier (the Rust side of bench/train_step.sh).
//!
//! One step: forward, label-smoothed cross-entropy + head L1L2 penalty, backward, Keras Adam with
//! decay; optionally under fp16 autocast with a dynamic loss scaler. Prints `rust img_per_s=<x>`.

use std::time::Instant;

use foldtrain_proto::config::ModelConfig;
use foldtrain_worker::model::Classifier;
use foldtrain_worker::train::adam::KerasAdam;
use foldtrain_worker::train::amp::GradScaler;
use foldtrain_worker::train::loss::smoothed_cross_entropy;
use tch::{Device, Kind, Tensor, nn::VarStore};

struct Args {
    device: Device,
    size: i64,
    batch: i64,
    warmup: usize,
    steps: usize,
    threads: i32,
    amp: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        device: Device::Cpu,
        size: 64,
        batch: 32,
        warmup: 3,
        steps: 10,
        threads: 0,
        amp: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<i64>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--device" => {
                a.device = match value()?.as_str() {
                    "cpu" => Device::Cpu,
                    "cuda" => Device::Cuda(0),
                    other => return Err(format!("--device {other}: expected cpu or cuda")),
                }
            }
            "--size" => a.size = num(value()?)?,
            "--batch" => a.batch = num(value()?)?,
            "--warmup" => a.warmup = num(value()?)? as usize,
            "--steps" => a.steps = num(value()?)? as usize,
            "--threads" => a.threads = num(value()?)? as i32,
            "--amp" => a.amp = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn main() {
    let args = parse().unwrap_or_else(|e| {
        eprintln!("train_step: {e}");
        std::process::exit(2)
    });
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    tch::manual_seed(0);
    let classes = 14;
    let vs = VarStore::new(args.device);
    let model = Classifier::new(&vs.root(), &ModelConfig::default(), classes);
    let mut opt = KerasAdam::new(&vs, 1e-3, 1e-4);
    let mut scaler = GradScaler::new(args.device);
    let opts = (Kind::Float, args.device);
    let x = Tensor::randn([args.batch, 3, args.size, args.size], opts);
    let y = Tensor::randint(classes, [args.batch], (Kind::Int64, args.device));
    let mut step = || {
        opt.zero_grad();
        let logits = tch::autocast(args.amp, || model.forward_t(&x, true));
        let loss = smoothed_cross_entropy(&logits, &y, 0.1, None) + model.head_penalty();
        if args.amp {
            scaler.scale(&loss).backward();
            let mut grads = opt.gradients();
            if !scaler.unscale(&mut grads) {
                opt.step();
            }
            scaler.update();
        } else {
            loss.backward();
            opt.step();
        }
        loss
    };
    for _ in 0..args.warmup {
        let _ = step().double_value(&[]);
    }
    if args.device.is_cuda() {
        tch::Cuda::synchronize(0);
    }
    let start = Instant::now();
    let mut last = Tensor::zeros([], opts);
    for _ in 0..args.steps {
        last = step();
    }
    let loss = last.double_value(&[]); // waits for the device
    let secs = start.elapsed().as_secs_f64();
    let img_per_s = (args.steps as i64 * args.batch) as f64 / secs;
    println!(
        "rust img_per_s={img_per_s:.2} steps_per_s={:.3} loss={loss:.4} threads={} amp={}",
        args.steps as f64 / secs,
        tch::get_num_threads(),
        args.amp
    );
}
