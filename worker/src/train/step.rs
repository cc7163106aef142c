//! One training step on one batch: forward in train mode, the smoothed loss plus the head's
//! penalty, backward (through the AMP loss scaler when on) and the optimizer update.

use foldtrain_proto::config::{ModelConfig, TrainConfig};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::adam::KerasAdam;
use super::amp::GradScaler;
use super::loss::smoothed_cross_entropy;
use crate::data::Batch;
use crate::model::Classifier;

/// The model and everything that updates it; owned by the training thread.
pub(crate) struct Learner {
    pub vs: VarStore,
    pub model: Classifier,
    pub adam: KerasAdam,
    /// Present when training under fp16 autocast (CUDA only).
    pub scaler: Option<GradScaler>,
    pub device: Device,
    pub smoothing: f64,
    /// Per-class weights of the training loss; None weighs every row alike.
    pub class_weights: Option<Tensor>,
}

/// What one step saw: the batch's mean loss and its logits (f32, `[rows, classes]`).
pub(crate) struct StepOutput {
    pub loss: f64,
    pub logits: Tensor,
    /// The loss was not finite under AMP: an fp16 overflow; the step was skipped and the
    /// loss scale lowered.
    pub overflow: bool,
}

impl Learner {
    /// A fresh model with its optimizer on `device`. Its initial weights are drawn from
    /// libtorch's global generator, which the caller seeds first.
    pub fn new(
        device: Device,
        model: &ModelConfig,
        classes: usize,
        train: &TrainConfig,
        amp: bool,
    ) -> Self {
        let vs = VarStore::new(device);
        let classifier = Classifier::new(&vs.root(), model, classes as i64);
        let adam = KerasAdam::new(&vs, train.lr, train.decay);
        Self {
            vs,
            model: classifier,
            adam,
            scaler: amp.then(|| GradScaler::new(device)),
            device,
            smoothing: train.label_smoothing,
            class_weights: None,
        }
    }

    /// Whether forward passes run under fp16 autocast.
    pub fn amp(&self) -> bool {
        self.scaler.is_some()
    }

    /// One optimisation step on `batch`. A non-finite loss updates nothing (under AMP it
    /// lowers the loss scale, as GradScaler does); what it means is the caller's decision.
    pub fn step(&mut self, batch: &Batch) -> StepOutput {
        let x = batch.images_tensor().to_device(self.device);
        let y = batch.labels_tensor().to_device(self.device);
        self.adam.zero_grad();
        let amp = self.amp();
        let logits = tch::autocast(amp, || self.model.forward_t(&x, true)).to_kind(Kind::Float);
        let loss = smoothed_cross_entropy(&logits, &y, self.smoothing, self.class_weights.as_ref())
            + self.model.head_penalty();
        let value = loss.double_value(&[]);
        let mut overflow = false;
        if value.is_finite() {
            self.apply(&loss);
        } else if let Some(scaler) = self.scaler.as_mut() {
            scaler.overflowed_in_forward();
            overflow = true;
        }
        StepOutput {
            loss: value,
            logits,
            overflow,
        }
    }

    /// Backward and update. Under AMP the scaled gradients are unscaled first, and an
    /// overflow skips the update (the scaler backs off instead).
    fn apply(&mut self, loss: &Tensor) {
        match self.scaler.as_mut() {
            Some(scaler) => {
                scaler.scale(loss).backward();
                let overflow = scaler.unscale(&mut self.adam.gradients());
                if !overflow {
                    self.adam.step();
                }
                scaler.update();
            }
            None => {
                loss.backward();
                self.adam.step();
            }
        }
    }

    /// The head's regularisation term as it stands, a constant for evaluation.
    pub fn head_penalty(&self) -> f64 {
        tch::no_grad(|| self.model.head_penalty().double_value(&[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::data::{BlobSource, ImageCache, Loader};
    use crate::train::amp::ScalerState;
    use crate::train::test_fold::{CLASSES, MemorySource, tiny_config, tiny_pipeline};

    fn learner(amp: bool) -> Learner {
        let config = tiny_config(1);
        crate::model::seeded(7, || {
            Learner::new(
                Device::Cpu,
                &config.model,
                CLASSES as usize,
                &config.train,
                amp,
            )
        })
    }

    /// Six of the tiny fold's images, two of each class, as one batch.
    fn batch() -> Batch {
        let mut source = MemorySource::default();
        let images = source.add("train", 6, true);
        let source: Arc<dyn BlobSource> = Arc::new(source);
        let cache = Arc::new(ImageCache::new(0));
        let loader = Loader::new(source, Arc::new(images), tiny_pipeline(), cache);
        loader
            .batches((0..6).collect(), 6, None)
            .next()
            .unwrap()
            .unwrap()
    }

    fn weights(learner: &Learner) -> Tensor {
        learner.vs.variables()["head.out.weight"].detach().copy()
    }

    #[test]
    fn steps_update_the_weights_and_lower_the_loss() {
        let mut learner = learner(false);
        let before = weights(&learner);
        let first = learner.step(&batch());
        assert!(first.loss.is_finite());
        assert_eq!(first.logits.size(), vec![6, i64::from(CLASSES)]);
        assert_eq!(learner.adam.state().iterations, 1);
        assert!(!weights(&learner).equal(&before));
        let mut last = first.loss;
        for _ in 0..10 {
            last = learner.step(&batch()).loss;
        }
        assert!(last < first.loss, "{last} >= {}", first.loss);
    }

    #[test]
    fn a_non_finite_loss_updates_nothing() {
        let mut learner = learner(false);
        learner.class_weights = Some(Tensor::from_slice(&[f32::NAN, 1.0, 1.0]));
        let before = weights(&learner);
        let output = learner.step(&batch());
        assert!(output.loss.is_nan() && !output.overflow);
        assert_eq!(learner.adam.state().iterations, 0);
        assert!(weights(&learner).equal(&before));
    }

    #[test]
    fn a_non_finite_amp_loss_is_an_overflow_that_lowers_the_scale() {
        let mut learner = learner(true);
        learner.class_weights = Some(Tensor::from_slice(&[f32::NAN, 1.0, 1.0]));
        let before = weights(&learner);
        let scale = learner.scaler.as_ref().unwrap().state().scale;
        let output = learner.step(&batch());
        assert!(output.loss.is_nan() && output.overflow);
        assert_eq!(learner.adam.state().iterations, 0);
        assert!(weights(&learner).equal(&before));
        assert_eq!(learner.scaler.as_ref().unwrap().state().scale, scale / 2.0);
    }

    #[test]
    fn the_loss_scaler_steps_or_skips_on_overflow() {
        let mut learner = learner(true);
        assert!(learner.amp());
        learner.step(&batch());
        assert_eq!(learner.adam.state().iterations, 1);
        assert_eq!(learner.scaler.as_ref().unwrap().state().growth_tracker, 1);

        // An infinite scale makes every gradient overflow: the update is skipped and
        // the run of clean steps starts again.
        let overflowing = ScalerState {
            scale: f64::INFINITY,
            growth_tracker: 5,
        };
        learner.scaler = Some(GradScaler::from_state(overflowing, Device::Cpu));
        let before = weights(&learner);
        assert!(learner.step(&batch()).loss.is_finite());
        assert_eq!(learner.adam.state().iterations, 1);
        assert!(weights(&learner).equal(&before));
        assert_eq!(learner.scaler.as_ref().unwrap().state().growth_tracker, 0);
    }
}
