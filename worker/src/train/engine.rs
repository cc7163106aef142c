//! `run_fold`: trains one fold from a `FoldTask`, streaming progress, per-epoch metrics,
//! checkpoints, out-of-fold and test probabilities, then a summary, to an [`EventSink`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use foldtrain_proto::config::{ClassWeights, Precision};
use foldtrain_proto::task::{CheckpointKind, EpochRecord, FoldSummary};
use foldtrain_proto::telemetry::mark_span_failed;
use foldtrain_proto::{FoldEvent, FoldTask};
use tch::{Device, Kind, Tensor, nn};
use tracing::{Span, debug, info, info_span, warn};

use super::adam::KerasAdam;
use super::amp::GradScaler;
use super::callbacks::LrDecision;
use super::checkpoint::CheckpointError;
use super::error::TrainError;
use super::evaluate::{PassContext, argmax, predict};
use super::loss::{balanced_class_weights, smoothed_cross_entropy};
use super::meter::EpochMeter;
use super::options::RunOptions;
use super::sink::EventSink;
use super::spans::{BatchSpans, epoch_span, record_epoch};
use super::state::FoldState;
use super::weights::Snapshot;
use crate::data::{BlobSource, ImageCache, Loader, PipelineOptions, epoch_order};
use crate::model::{Classifier, load_pretrained, save_weights};

/// Trains the fold on the calling thread. On success sends `Done`; on failure sends
/// `Failed` (unless the sink itself is gone) and returns the error, so a caller only
/// forwards events. Cancellation is checked before every batch.
pub fn run_fold(
    task: &FoldTask,
    source: Arc<dyn BlobSource>,
    sink: &mut dyn EventSink,
    cancel: &AtomicBool,
    options: RunOptions,
) -> Result<FoldSummary, TrainError> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        train(task, source, sink, cancel, options)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(TrainError::Panic(message))
    });
    match &outcome {
        Ok(summary) => sink.send(FoldEvent::Done(*summary))?,
        Err(TrainError::SinkClosed(_)) => {}
        Err(e) => {
            warn!(fold = task.fold.0, cause = e.cause(), error = %e, "fold failed");
            mark_span_failed(&Span::current(), e);
            let _ = sink.send(FoldEvent::Failed(e.to_failure()));
        }
    }
    outcome
}

/// A mix of (seed, fold, epoch) for augmentation draws, independent of process history.
fn epoch_seed(seed: u64, fold: u32, epoch: u32) -> u64 {
    let mut z =
        seed ^ (u64::from(fold) << 32 | u64::from(epoch)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn select_device(task: &FoldTask, options: RunOptions) -> Result<Device, TrainError> {
    let device = options.device.unwrap_or_else(|| {
        task.device_index
            .map_or(Device::Cpu, |i| Device::Cuda(i as usize))
    });
    if let Device::Cuda(i) = device {
        let count = tch::Cuda::device_count().max(0) as usize;
        if i >= count {
            return Err(TrainError::Device(format!(
                "cuda:{i} requested but {count} GPU(s) are visible"
            )));
        }
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok(device)
}

fn train(
    task: &FoldTask,
    source: Arc<dyn BlobSource>,
    sink: &mut dyn EventSink,
    cancel: &AtomicBool,
    options: RunOptions,
) -> Result<FoldSummary, TrainError> {
    let config = &task.config;
    config
        .validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let fold = task.fold.0;
    let classes = task.class_names.len();
    if classes < 2 {
        return Err(TrainError::Config(format!(
            "need at least 2 classes, got {classes}"
        )));
    }
    let train_labels = labels_of(&task.train, "train", classes)?;
    labels_of(&task.val, "val", classes)?;
    let t = &config.train;
    let device = select_device(task, options)?;
    let threads = match t.torch_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    };
    tch::set_num_threads(threads as i32);
    let amp = t.precision == Precision::Amp && device.is_cuda();
    if t.precision == Precision::Amp && !amp {
        warn!(
            fold,
            "precision amp needs CUDA; training in fp32 on the CPU"
        );
    }

    // The global generator only initialises the weights; nothing later draws from it.
    tch::manual_seed(epoch_seed(config.split.seed, fold, 0) as i64);
    let mut vs = nn::VarStore::new(device);
    let model = Classifier::new(&vs.root(), &config.model, classes as i64);
    let mut adam = KerasAdam::new(&vs, t.lr, t.decay);
    let mut state = FoldState::new(task);
    let mut best: Option<Snapshot> = None;
    let mut scaler = amp.then(|| GradScaler::new(device));
    match &task.resume {
        Some(bytes) => {
            best = state.resume(task, bytes, &vs, &mut adam, &mut scaler, device)?;
            info!(
                fold,
                epochs_done = state.epochs_done,
                "resuming from the latest checkpoint"
            );
        }
        None => {
            if let Some(path) = &config.model.pretrained {
                let report = load_pretrained(&mut vs, std::path::Path::new(path))?;
                info!(fold, path, report = ?report, "loaded pretrained weights");
            }
        }
    }

    let cache = Arc::new(ImageCache::new(t.cache_bytes));
    let pipeline = PipelineOptions::from_train(t);
    let loader = |images: &Vec<_>| {
        Loader::new(
            source.clone(),
            Arc::new(images.clone()),
            pipeline.clone(),
            cache.clone(),
        )
    };
    let (train_loader, val_loader, test_loader) =
        (loader(&task.train), loader(&task.val), loader(&task.test));
    let class_weights = match t.class_weights {
        ClassWeights::None => None,
        ClassWeights::Balanced => {
            let w: Vec<f32> = balanced_class_weights(&train_labels, classes)
                .iter()
                .map(|&w| w as f32)
                .collect();
            Some(Tensor::from_slice(&w).to_device(device))
        }
    };
    let batch_size = t.batch_size as usize;
    let batch_spans = BatchSpans::every(options.batch_span_every);
    let mut early_stopped = false;

    for epoch in state.epochs_done + 1..=t.epochs {
        if state.early_stopping.stopped_epoch > 0 {
            // Resumed from a checkpoint written after early stopping: nothing left to train.
            break;
        }
        let span = epoch_span(fold, epoch);
        let _entered = span.enter();
        let started = Instant::now();
        let order = epoch_order(task.train.len(), config.split.seed, fold, epoch);
        let batches = train_loader.batches(
            order,
            batch_size,
            Some(epoch_seed(config.split.seed, fold, epoch)),
        );
        let num_batches = batches.num_batches() as u32;
        let mut meter = EpochMeter::default();
        for (b, batch) in batches.enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled { fold });
            }
            let batch = batch?;
            if batch.len() == 1 && num_batches > 1 {
                // BatchNorm cannot normalise a single row in training mode (libtorch raises);
                // a lone trailing row is left out of this epoch's update instead.
                debug!(fold, epoch, "skipping a trailing batch of one image");
                continue;
            }
            let batch_span = batch_spans.span(epoch, b, batch.len());
            let _in_batch = batch_span.enter();
            let x = batch.images_tensor().to_device(device);
            let y = batch.labels_tensor().to_device(device);
            adam.zero_grad();
            let logits = tch::autocast(amp, || model.forward_t(&x, true)).to_kind(Kind::Float);
            let loss =
                smoothed_cross_entropy(&logits, &y, t.label_smoothing, class_weights.as_ref())
                    + model.head_penalty();
            let value = loss.double_value(&[]);
            batch_span.record("loss", value);
            if !value.is_finite() {
                return Err(TrainError::NanLoss {
                    fold,
                    epoch,
                    batch: b as u32 + 1,
                    phase: "train",
                    value,
                });
            }
            match scaler.as_mut() {
                Some(scaler) => {
                    scaler.scale(&loss).backward();
                    let overflow = scaler.unscale(&mut adam.gradients());
                    if !overflow {
                        adam.step();
                    }
                    scaler.update();
                }
                None => {
                    loss.backward();
                    adam.step();
                }
            }
            let truth: Vec<u32> = batch.labels.iter().map(|&l| l as u32).collect();
            meter.add_batch(value, &truth, &argmax(&logits)?);
            let done = b as u32 + 1;
            if done.is_multiple_of(options.progress_every.max(1)) || done == num_batches {
                sink.send(FoldEvent::Progress {
                    epoch,
                    batch: done,
                    batches: num_batches,
                    loss: meter.mean_loss(),
                    images_per_sec: meter.rows() as f64 / started.elapsed().as_secs_f64().max(1e-9),
                    phase: "train",
                })?;
            }
        }
        let train_seconds = started.elapsed().as_secs_f64();
        let train_metrics = meter.finish(classes);
        let ctx = PassContext {
            device,
            classes,
            batch_size,
            smoothing: t.label_smoothing,
            penalty: tch::no_grad(|| model.head_penalty().double_value(&[])),
            amp,
            cancel,
            fold,
            epoch,
        };
        let val = info_span!("evaluate", fold, epoch)
            .in_scope(|| predict(&model, &val_loader, true, &ctx))?;
        let val_metrics = val.meter.finish(classes);
        let record = EpochRecord {
            epoch,
            loss: train_metrics.loss,
            accuracy: train_metrics.accuracy,
            f1: train_metrics.f1,
            val_loss: val_metrics.loss,
            val_accuracy: val_metrics.accuracy,
            val_f1: val_metrics.f1,
            lr: adam.lr(),
            images_per_sec: train_metrics.rows as f64 / train_seconds.max(1e-9),
            seconds: started.elapsed().as_secs_f64(),
        };
        record_epoch(&span, &record);

        if state.best.on_epoch_end(epoch, record.val_loss) {
            info!(
                fold,
                epoch,
                val_loss = record.val_loss,
                "val_loss improved; saving the best weights"
            );
            best = Some(Snapshot::take(&vs));
            sink.send(FoldEvent::Checkpoint {
                kind: CheckpointKind::Best,
                epoch,
                bytes: save_weights(&vs)?,
            })?;
        }
        if state.early_stopping.on_epoch_end(epoch, record.val_loss) {
            info!(
                fold,
                epoch,
                wait = state.early_stopping.wait,
                "early stopping"
            );
            early_stopped = true;
        }
        if let LrDecision::Reduce { from, to } =
            state.reduce_lr.on_epoch_end(record.val_loss, adam.lr())
        {
            info!(
                fold,
                epoch, from, to, "reducing the learning rate on plateau"
            );
            adam.set_lr(to);
        }
        state.epochs_done = epoch;
        state.history.push(record);
        sink.send(FoldEvent::Epoch(record))?;
        let bytes = state.encode(&vs, &adam, scaler.as_ref(), best.as_ref())?;
        info!(fold, epoch, bytes = bytes.len(), "latest checkpoint saved");
        sink.send(FoldEvent::Checkpoint {
            kind: CheckpointKind::Latest,
            epoch,
            bytes,
        })?;
        if early_stopped {
            break;
        }
    }

    // Out-of-fold and test probabilities come from the best weights, in eval mode.
    let best = best.ok_or_else(|| CheckpointError("no epoch produced a finite val_loss".into()))?;
    best.restore_into(&vs).map_err(CheckpointError)?;
    let ctx = PassContext {
        device,
        classes,
        batch_size,
        smoothing: t.label_smoothing,
        penalty: 0.0,
        amp,
        cancel,
        fold,
        epoch: state.epochs_done,
    };
    let span = info_span!(
        "predict",
        fold,
        val = task.val.len(),
        test = task.test.len()
    );
    let (oof, test) = span.in_scope(|| -> Result<_, TrainError> {
        Ok((
            predict(&model, &val_loader, false, &ctx)?,
            predict(&model, &test_loader, false, &ctx)?,
        ))
    })?;
    let k = classes as u32;
    sink.send(FoldEvent::Oof {
        rows: task.val.len() as u32,
        classes: k,
        probs: oof.probs,
    })?;
    sink.send(FoldEvent::Test {
        rows: task.test.len() as u32,
        classes: k,
        probs: test.probs,
    })?;
    Ok(FoldSummary {
        best_epoch: state.best.best_epoch,
        best_val_loss: state.best.best,
        epochs_run: state.epochs_done,
        early_stopped: early_stopped || state.early_stopping.stopped_epoch > 0,
    })
}

/// The labels of a labelled split, checked against the class count.
fn labels_of(
    images: &[foldtrain_proto::ImageRef],
    split: &str,
    classes: usize,
) -> Result<Vec<u32>, TrainError> {
    images
        .iter()
        .map(|image| match image.label {
            Some(l) if (l as usize) < classes => Ok(l),
            Some(l) => Err(TrainError::Config(format!(
                "{split} image {}: label {l} out of range for {classes} classes",
                image.name
            ))),
            None => Err(TrainError::Config(format!(
                "{split} image {}: missing label",
                image.name
            ))),
        })
        .collect()
}
