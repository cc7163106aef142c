//! The validation pass: the model in eval mode over the held-out fold, its loss (plus the
//! head's penalty, as Keras adds `model.losses` to the validation loss) and whole-pass
//! metrics.

use std::sync::atomic::{AtomicBool, Ordering};

use super::error::TrainError;
use super::loss::smoothed_cross_entropy;
use super::meter::EpochMeter;
use super::predict::eval_logits;
use super::step::Learner;
use crate::data::Loader;

/// Which pass this is, for cancellation and for naming a non-finite loss.
pub(crate) struct Validation<'a> {
    pub fold: u32,
    pub epoch: u32,
    pub batch_size: usize,
    pub cancel: &'a AtomicBool,
}

/// Runs the model over every labelled image of `loader` in list order, without gradients.
pub(crate) fn validate(
    learner: &Learner,
    loader: &Loader,
    pass: &Validation<'_>,
) -> Result<EpochMeter, TrainError> {
    // Constant during the pass: the weights do not change.
    let penalty = learner.head_penalty();
    let rows = loader.images().len();
    let mut meter = EpochMeter::default();
    let _guard = tch::no_grad_guard();
    for (b, batch) in loader
        .batches((0..rows).collect(), pass.batch_size, None)
        .enumerate()
    {
        if pass.cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Cancelled { fold: pass.fold });
        }
        let batch = batch?;
        let logits = eval_logits(&learner.model, &batch, learner.device, learner.amp());
        let labels = batch.labels_tensor().to_device(learner.device);
        let loss = smoothed_cross_entropy(&logits, &labels, learner.smoothing, None)
            .double_value(&[])
            + penalty;
        if !loss.is_finite() {
            return Err(TrainError::NanLoss {
                fold: pass.fold,
                epoch: pass.epoch,
                batch: b as u32 + 1,
                phase: "validation",
                value: loss,
            });
        }
        meter.add_logits(loss, &batch.labels, &logits)?;
    }
    Ok(meter)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tch::{Device, Tensor};

    use super::*;
    use crate::data::{BlobSource, ImageCache};
    use crate::train::test_fold::{CLASSES, MemorySource, tiny_config, tiny_pipeline};

    fn setup(val: u32) -> (Learner, Loader) {
        let mut source = MemorySource::default();
        let images = source.add("val", val, true);
        let source: Arc<dyn BlobSource> = Arc::new(source);
        let cache = Arc::new(ImageCache::new(0));
        let loader = Loader::new(source, Arc::new(images), tiny_pipeline(), cache);
        let config = tiny_config(1);
        let learner = crate::model::seeded(3, || {
            Learner::new(
                Device::Cpu,
                &config.model,
                CLASSES as usize,
                &config.train,
                false,
            )
        });
        (learner, loader)
    }

    #[test]
    fn measures_every_row_without_touching_the_weights() {
        let (learner, loader) = setup(7);
        let before = learner.vs.variables()["head.bn1.running_mean"].copy();
        let never = AtomicBool::new(false);
        let pass = Validation {
            fold: 0,
            epoch: 1,
            batch_size: 3,
            cancel: &never,
        };
        let first = validate(&learner, &loader, &pass).unwrap().finish(3);
        assert_eq!(first.rows, 7);
        assert!(first.loss.is_finite() && first.loss > 0.0);
        assert!((0.0..=1.0).contains(&first.accuracy));
        // Eval mode leaves BatchNorm's statistics alone, so a second pass agrees exactly.
        assert!(learner.vs.variables()["head.bn1.running_mean"].equal(&before));
        assert_eq!(validate(&learner, &loader, &pass).unwrap().finish(3), first);
    }

    #[test]
    fn a_non_finite_loss_names_the_validation_batch() {
        let (learner, loader) = setup(4);
        let mut bias = learner.vs.variables()["head.out.bias"].shallow_clone();
        tch::no_grad(|| bias.copy_(&Tensor::from_slice(&[f32::NAN, 0.0, 0.0])));
        let never = AtomicBool::new(false);
        let pass = Validation {
            fold: 2,
            epoch: 5,
            batch_size: 4,
            cancel: &never,
        };
        let err = validate(&learner, &loader, &pass).unwrap_err();
        assert!(
            matches!(
                err,
                TrainError::NanLoss {
                    fold: 2,
                    epoch: 5,
                    batch: 1,
                    phase: "validation",
                    ..
                }
            ),
            "{err}"
        );
        let cancelled = AtomicBool::new(true);
        let pass = Validation {
            cancel: &cancelled,
            ..pass
        };
        let err = validate(&learner, &loader, &pass).unwrap_err();
        assert!(matches!(err, TrainError::Cancelled { fold: 2 }), "{err}");
    }
}
