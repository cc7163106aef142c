//! Inference: softmax probabilities for a list of images, in input order, from given
//! weights. A fold's out-of-fold and test passes use it, and so can a process that only
//! predicts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use foldtrain_proto::ImageRef;
use foldtrain_proto::config::ModelConfig;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::error::TrainError;
use crate::data::{Batch, BlobSource, DataError, ImageCache, Loader, PipelineOptions};
use crate::model::{Classifier, ModelError, load_weights};

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("prediction was cancelled")]
    Cancelled,
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("model: {0}")]
    Model(#[from] ModelError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

impl PredictError {
    /// The same error, met while training `fold`.
    pub(crate) fn in_fold(self, fold: u32) -> TrainError {
        match self {
            PredictError::Cancelled => TrainError::Cancelled { fold },
            PredictError::Data(e) => TrainError::Data(e),
            PredictError::Model(e) => TrainError::Model(e),
            PredictError::Torch(e) => TrainError::Torch(e),
        }
    }
}

/// Where and how inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PredictOptions {
    pub device: Device,
    pub batch_size: usize,
    /// fp16 autocast; it only takes effect on CUDA.
    pub amp: bool,
}

/// Softmax probabilities, row-major `rows × classes`: row `i` belongs to input image `i`.
#[derive(Debug, Clone, PartialEq)]
pub struct Probabilities {
    classes: usize,
    values: Vec<f32>,
}

impl Probabilities {
    pub fn rows(&self) -> usize {
        self.values.len() / self.classes.max(1)
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The probabilities of image `index`; panics past the last row.
    pub fn row(&self, index: usize) -> &[f32] {
        &self.values[index * self.classes..(index + 1) * self.classes]
    }

    pub fn into_values(self) -> Vec<f32> {
        self.values
    }
}

/// A classifier with fixed weights, for prediction only.
pub struct Predictor {
    pub(crate) model: Classifier,
    classes: usize,
    pub(crate) options: PredictOptions,
}

impl Predictor {
    /// Builds `model` for `classes` classes on `options.device` and loads `weights`:
    /// safetensors as [`save_weights`](crate::model::save_weights) writes them, such as a
    /// fold's best checkpoint.
    pub fn from_safetensors(
        model: &ModelConfig,
        classes: usize,
        weights: &[u8],
        options: PredictOptions,
    ) -> Result<Self, PredictError> {
        let mut vs = VarStore::new(options.device);
        let classifier = Classifier::new(&vs.root(), model, classes as i64);
        load_weights(&mut vs, weights)?;
        Ok(Self {
            model: classifier,
            classes,
            options,
        })
    }

    /// The probabilities of `images`, read from `source` and prepared by `pipeline` (size,
    /// resize, normalisation; never augmented). Stops at the next batch once `cancel` is set.
    pub fn predict(
        &self,
        source: Arc<dyn BlobSource>,
        images: Vec<ImageRef>,
        pipeline: &PipelineOptions,
        cancel: &AtomicBool,
    ) -> Result<Probabilities, PredictError> {
        // Each image is read once, so caching decoded pixels would only cost memory.
        let cache = Arc::new(ImageCache::new(0));
        let loader = Loader::new(source, Arc::new(images), pipeline.clone(), cache);
        softmax_rows(&self.model, self.classes, &loader, self.options, cancel)
    }
}

/// The probabilities of every image of `loader`, in list order, without gradients.
pub(crate) fn softmax_rows(
    model: &Classifier,
    classes: usize,
    loader: &Loader,
    options: PredictOptions,
    cancel: &AtomicBool,
) -> Result<Probabilities, PredictError> {
    let rows = loader.images().len();
    let mut values = vec![0f32; rows * classes];
    let _guard = tch::no_grad_guard();
    for batch in loader.batches((0..rows).collect(), options.batch_size, None) {
        if cancel.load(Ordering::Relaxed) {
            return Err(PredictError::Cancelled);
        }
        let batch = batch?;
        let logits = eval_logits(model, &batch, options.device, options.amp);
        let p = logits.softmax(-1, Kind::Float).to_device(Device::Cpu);
        let p = Vec::<f32>::try_from(&p.contiguous().view([-1]))?;
        for (row, &index) in batch.indices.iter().enumerate() {
            values[index * classes..(index + 1) * classes]
                .copy_from_slice(&p[row * classes..(row + 1) * classes]);
        }
    }
    Ok(Probabilities { classes, values })
}

/// The logits of `batch` in eval mode (BatchNorm on its running statistics), as f32.
pub(crate) fn eval_logits(model: &Classifier, batch: &Batch, device: Device, amp: bool) -> Tensor {
    eval_logits_of(model, &batch.images_tensor().to_device(device), amp)
}

/// The logits of images `x` (`[N, 3, S, S]`, on the model's device) in eval mode, as f32.
pub(crate) fn eval_logits_of(model: &Classifier, x: &Tensor, amp: bool) -> Tensor {
    tch::autocast(amp, || model.forward_t(x, false)).to_kind(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::test_fold::{
        CLASSES, MemorySource, tiny_config, tiny_pipeline, tiny_weights as weights,
    };

    const CPU: PredictOptions = PredictOptions {
        device: Device::Cpu,
        batch_size: 3,
        amp: false,
    };

    fn predictor(weights: &[u8]) -> Predictor {
        let model = tiny_config(1).model;
        Predictor::from_safetensors(&model, CLASSES as usize, weights, CPU).unwrap()
    }

    #[test]
    fn rows_follow_the_input_order_and_sum_to_one() {
        let mut source = MemorySource::default();
        let images = source.add("new", 7, false);
        let source: Arc<dyn BlobSource> = Arc::new(source);
        let never = AtomicBool::new(false);
        let first = predictor(&weights(1, CLASSES as usize));
        let mut pipeline = tiny_pipeline();
        pipeline.loader_threads = 2;

        let probs = first
            .predict(source.clone(), images.clone(), &pipeline, &never)
            .unwrap();
        assert_eq!((probs.rows(), probs.classes()), (7, 3));
        for i in 0..7 {
            let sum: f32 = probs.row(i).iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "row {i} sums to {sum}");
        }
        let reversed: Vec<ImageRef> = images.iter().rev().cloned().collect();
        let back = first
            .predict(source.clone(), reversed, &pipeline, &never)
            .unwrap();
        // Batches group the images differently in each order, which may move the last bits.
        for i in 0..7 {
            let same = back.row(6 - i).iter().zip(probs.row(i));
            assert!(
                same.into_iter().all(|(a, b)| (a - b).abs() < 1e-5),
                "image {i}"
            );
        }
        let other = predictor(&weights(2, CLASSES as usize))
            .predict(source, images, &pipeline, &never)
            .unwrap();
        assert_ne!(other, probs, "the weights decide the rows");
    }

    #[test]
    fn nothing_to_predict_gives_no_rows() {
        let never = AtomicBool::new(false);
        let source: Arc<dyn BlobSource> = Arc::new(MemorySource::default());
        let probs = predictor(&weights(1, CLASSES as usize))
            .predict(source, Vec::new(), &tiny_pipeline(), &never)
            .unwrap();
        assert_eq!((probs.rows(), probs.into_values()), (0, Vec::new()));
    }

    #[test]
    fn cancellation_bad_images_and_foreign_weights_are_errors() {
        let mut source = MemorySource::default();
        let images = source.add("new", 4, false);
        source.corrupt("new02.png");
        let source: Arc<dyn BlobSource> = Arc::new(source);
        let predictor = predictor(&weights(1, CLASSES as usize));

        let cancelled = AtomicBool::new(true);
        let err = predictor
            .predict(source.clone(), images.clone(), &tiny_pipeline(), &cancelled)
            .unwrap_err();
        assert!(matches!(err, PredictError::Cancelled), "{err}");
        assert!(matches!(err.in_fold(4), TrainError::Cancelled { fold: 4 }));

        let never = AtomicBool::new(false);
        let err = predictor
            .predict(source, images, &tiny_pipeline(), &never)
            .unwrap_err();
        assert!(err.to_string().contains("new02.png"), "{err}");

        let model = tiny_config(1).model;
        let five_classes = weights(1, 5);
        let err = Predictor::from_safetensors(&model, CLASSES as usize, &five_classes, CPU)
            .err()
            .expect("weights of a 5-class model do not fit 3 classes");
        assert!(matches!(err, PredictError::Model(_)), "{err}");
    }
}
