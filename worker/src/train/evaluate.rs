//! Inference passes in eval mode: validation metrics and softmax probabilities in the
//! order of the task's image list.

use std::sync::atomic::{AtomicBool, Ordering};

use tch::{Device, Kind, Tensor};

use super::error::TrainError;
use super::loss::smoothed_cross_entropy;
use super::meter::EpochMeter;
use crate::data::Loader;
use crate::model::Classifier;

/// What one eval pass needs besides the model and the images.
pub(crate) struct PassContext<'a> {
    pub device: Device,
    pub classes: usize,
    pub batch_size: usize,
    pub smoothing: f64,
    /// The head's regularization term (constant during evaluation), added to the loss as
    /// Keras adds `model.losses` to the validation loss.
    pub penalty: f64,
    pub amp: bool,
    pub cancel: &'a AtomicBool,
    pub fold: u32,
    pub epoch: u32,
}

/// The result of one pass: metrics (when the images are labelled) and row-major
/// `rows × classes` probabilities.
pub(crate) struct PassOutput {
    pub meter: EpochMeter,
    pub probs: Vec<f32>,
}

/// Runs the model over every image of `loader` in list order, without gradients.
pub(crate) fn predict(
    model: &Classifier,
    loader: &Loader,
    labelled: bool,
    ctx: &PassContext<'_>,
) -> Result<PassOutput, TrainError> {
    let rows = loader.images().len();
    let mut probs = vec![0f32; rows * ctx.classes];
    let mut meter = EpochMeter::default();
    let _guard = tch::no_grad_guard();
    for (b, batch) in loader
        .batches((0..rows).collect(), ctx.batch_size, None)
        .enumerate()
    {
        if ctx.cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Cancelled { fold: ctx.fold });
        }
        let batch = batch?;
        let x = batch.images_tensor().to_device(ctx.device);
        let logits = tch::autocast(ctx.amp, || model.forward_t(&x, false)).to_kind(Kind::Float);
        let p = logits.softmax(-1, Kind::Float).to_device(Device::Cpu);
        let p = Vec::<f32>::try_from(&p.contiguous().view([-1]))?;
        for (row, &index) in batch.indices.iter().enumerate() {
            probs[index * ctx.classes..(index + 1) * ctx.classes]
                .copy_from_slice(&p[row * ctx.classes..(row + 1) * ctx.classes]);
        }
        if labelled {
            let labels = batch.labels_tensor().to_device(ctx.device);
            let loss = smoothed_cross_entropy(&logits, &labels, ctx.smoothing, None)
                .double_value(&[])
                + ctx.penalty;
            if !loss.is_finite() {
                return Err(TrainError::NanLoss {
                    fold: ctx.fold,
                    epoch: ctx.epoch,
                    batch: b as u32 + 1,
                    phase: "validation",
                    value: loss,
                });
            }
            let predicted = argmax(&logits)?;
            let truth: Vec<u32> = batch.labels.iter().map(|&l| l as u32).collect();
            meter.add_batch(loss, &truth, &predicted);
        }
    }
    Ok(PassOutput { meter, probs })
}

/// Row-wise argmax as class indices.
pub(crate) fn argmax(logits: &Tensor) -> Result<Vec<u32>, TrainError> {
    let idx = logits.argmax(-1, false).to_device(Device::Cpu);
    Ok(Vec::<i64>::try_from(&idx)?
        .into_iter()
        .map(|i| i as u32)
        .collect())
}
