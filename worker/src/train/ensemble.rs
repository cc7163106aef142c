//! Ensemble inference for `foldtrain predict`: each image's mean softmax over the K folds'
//! best weights, optionally averaged with its horizontal flip, prepared exactly as the
//! folds' own test pass prepares it. An image that cannot be decoded is reported on its own
//! and left out, so the caller decides whether it stops the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use foldtrain_proto::ImageRef;
use foldtrain_proto::config::ModelConfig;
use tch::{Device, Kind};

use super::predict::{PredictError, PredictOptions, Predictor, eval_logits_of};
use crate::data::{Batch, BlobSource, DataError, ImageCache, Loader, PipelineOptions};

/// What became of one image of the list.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    /// The ensemble's probabilities, one per class.
    Probabilities(Vec<f32>),
    /// The image cannot be used (undecodable, or a name that cannot be a path); the message
    /// names it.
    Bad(String),
}

/// The folds' classifiers, loaded once and kept for every shard they score.
pub struct Ensemble {
    members: Vec<Predictor>,
    classes: usize,
}

impl Ensemble {
    /// Builds one `model` per fold from its safetensors `weights`.
    pub fn from_safetensors(
        model: &ModelConfig,
        classes: usize,
        weights: &[Vec<u8>],
        options: PredictOptions,
    ) -> Result<Self, PredictError> {
        let members = weights
            .iter()
            .map(|w| Predictor::from_safetensors(model, classes, w, options))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { members, classes })
    }

    pub fn folds(&self) -> usize {
        self.members.len()
    }

    /// Scores `images` in batches and hands each image's outcome to `emit` (position in
    /// `images`, outcome), batch by batch; a bad image is emitted when it is found, so
    /// positions may come out of order but each comes exactly once. Errors other than a bad
    /// image (a missing blob, libtorch) end the pass; so does `cancel`.
    pub fn predict(
        &self,
        source: Arc<dyn BlobSource>,
        images: Vec<ImageRef>,
        pipeline: &PipelineOptions,
        tta_flip: bool,
        cancel: &AtomicBool,
        emit: &mut dyn FnMut(Vec<(usize, RowOutcome)>) -> Result<(), PredictError>,
    ) -> Result<(), PredictError> {
        let Some(first) = self.members.first() else {
            return Ok(());
        };
        let options = first.options;
        // Each image is read once, so caching decoded pixels would only cost memory.
        let loader = Loader::new(
            source,
            Arc::new(images),
            pipeline.clone(),
            Arc::new(ImageCache::new(0)),
        );
        let _guard = tch::no_grad_guard();
        let mut pending: Vec<usize> = (0..loader.images().len()).collect();
        let mut done = 0;
        loop {
            let order = pending[done..].to_vec();
            let mut failed = None;
            for batch in loader.batches(order, options.batch_size, None) {
                if cancel.load(Ordering::Relaxed) {
                    return Err(PredictError::Cancelled);
                }
                match batch {
                    Ok(batch) => {
                        done += batch.len();
                        emit(self.score(&batch, options, tta_flip)?)?;
                    }
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let Some(error) = failed else {
                return Ok(());
            };
            // The failed batch starts at `done`: find its bad image, report it, and go on
            // from there without it.
            let window = &pending[done..(done + options.batch_size).min(pending.len())];
            let Some(offset) = bad_image_offset(&error, window, loader.images()) else {
                return Err(error.into());
            };
            let position = pending.remove(done + offset);
            emit(vec![(position, RowOutcome::Bad(error.to_string()))])?;
        }
    }

    /// The mean softmax of every member (and of the flipped images with `tta_flip`),
    /// summed in f64 as the folds' test probabilities are averaged after training.
    fn score(
        &self,
        batch: &Batch,
        options: PredictOptions,
        tta_flip: bool,
    ) -> Result<Vec<(usize, RowOutcome)>, PredictError> {
        let classes = self.classes;
        let x = batch.images_tensor().to_device(options.device);
        let views = if tta_flip {
            vec![x.flip([3]), x]
        } else {
            vec![x]
        };
        let mut sum = vec![0f64; batch.len() * classes];
        for member in &self.members {
            for view in &views {
                let p = eval_logits_of(&member.model, view, options.amp)
                    .softmax(-1, Kind::Float)
                    .to_device(Device::Cpu);
                let p = Vec::<f32>::try_from(&p.contiguous().view([-1]))?;
                for (s, v) in sum.iter_mut().zip(&p) {
                    *s += f64::from(*v);
                }
            }
        }
        let n = (self.members.len() * views.len()) as f64;
        Ok(batch
            .indices
            .iter()
            .zip(sum.chunks_exact(classes))
            .map(|(&index, row)| {
                let row = row.iter().map(|s| (s / n) as f32).collect();
                (index, RowOutcome::Probabilities(row))
            })
            .collect())
    }
}

/// Where in `window` (positions into `images`) the image an error is about sits, when the
/// error is about one image that will never load: a retry cannot mend it.
fn bad_image_offset(error: &DataError, window: &[usize], images: &[ImageRef]) -> Option<usize> {
    let name = match error {
        DataError::Decode { name, .. } | DataError::InvalidName { name, .. } => name,
        _ => return None,
    };
    window.iter().position(|&p| images[p].name == *name)
}

#[cfg(test)]
mod tests {
    use tch::Tensor;

    use super::*;
    use crate::data::BlobSource;
    use crate::train::test_fold::{
        CLASSES, MemorySource, tiny_config, tiny_pipeline, tiny_weights,
    };

    const CPU: PredictOptions = PredictOptions {
        device: Device::Cpu,
        batch_size: 3,
        amp: false,
    };

    fn weights(seed: i64) -> Vec<u8> {
        tiny_weights(seed, CLASSES as usize)
    }

    fn ensemble(seeds: &[i64]) -> Ensemble {
        let weights: Vec<Vec<u8>> = seeds.iter().map(|&s| weights(s)).collect();
        let model = tiny_config(1).model;
        Ensemble::from_safetensors(&model, CLASSES as usize, &weights, CPU).unwrap()
    }

    /// Every outcome, by position.
    fn run(
        ensemble: &Ensemble,
        source: &Arc<dyn BlobSource>,
        images: &[ImageRef],
        tta: bool,
    ) -> Vec<Option<RowOutcome>> {
        let mut rows = vec![None; images.len()];
        let never = AtomicBool::new(false);
        let mut emit = |batch: Vec<(usize, RowOutcome)>| {
            for (i, outcome) in batch {
                assert!(rows[i].replace(outcome).is_none(), "row {i} came twice");
            }
            Ok(())
        };
        ensemble
            .predict(
                source.clone(),
                images.to_vec(),
                &tiny_pipeline(),
                tta,
                &never,
                &mut emit,
            )
            .unwrap();
        rows
    }

    fn probabilities(rows: Vec<Option<RowOutcome>>) -> Vec<Vec<f32>> {
        rows.into_iter()
            .map(|r| match r {
                Some(RowOutcome::Probabilities(p)) => p,
                other => panic!("expected probabilities, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_ensemble_is_the_mean_of_its_folds() {
        let mut source = MemorySource::default();
        let images = source.add("new", 5, false);
        let source: Arc<dyn BlobSource> = Arc::new(source);
        let never = AtomicBool::new(false);
        let single = |seed| {
            let model = tiny_config(1).model;
            Predictor::from_safetensors(&model, CLASSES as usize, &weights(seed), CPU)
                .unwrap()
                .predict(source.clone(), images.clone(), &tiny_pipeline(), &never)
                .unwrap()
        };
        let (a, b) = (single(1), single(2));
        let both = probabilities(run(&ensemble(&[1, 2]), &source, &images, false));
        for (i, row) in both.iter().enumerate() {
            for (c, p) in row.iter().enumerate() {
                let mean = ((f64::from(a.row(i)[c]) + f64::from(b.row(i)[c])) / 2.0) as f32;
                assert!(
                    (p - mean).abs() < 1e-6,
                    "image {i} class {c}: {p} vs {mean}"
                );
            }
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn flip_averages_each_image_with_its_mirror() {
        let mut source = MemorySource::default();
        let images = source.add("new", 4, false);
        let source: Arc<dyn BlobSource> = Arc::new(source);
        let ensemble = ensemble(&[3]);
        let plain = probabilities(run(&ensemble, &source, &images, false));
        let flipped = probabilities(run(&ensemble, &source, &images, true));
        assert_ne!(plain, flipped, "the flip changes the rows");

        // By hand: the mean of the softmax of the batch and of its mirror.
        let loader = Loader::new(
            source,
            Arc::new(images),
            tiny_pipeline(),
            Arc::new(ImageCache::new(0)),
        );
        let batch = loader.batches(vec![0], 1, None).next().unwrap().unwrap();
        let x = batch.images_tensor();
        let model = &ensemble.members[0].model;
        let _guard = tch::no_grad_guard();
        let p = |x: &Tensor| eval_logits_of(model, x, false).softmax(-1, Kind::Float);
        let mean = (p(&x) + p(&x.flip([3]))) / 2.0;
        let mean = Vec::<f32>::try_from(&mean.view([-1])).unwrap();
        for (got, want) in flipped[0].iter().zip(&mean) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn a_bad_image_is_reported_and_the_rest_scored() {
        let mut source = MemorySource::default();
        let images = source.add("new", 7, false);
        source.corrupt("new01.png");
        source.corrupt("new04.png");
        let source: Arc<dyn BlobSource> = Arc::new(source);
        let ensemble = ensemble(&[1]);
        let rows = run(&ensemble, &source, &images, false);
        for (i, row) in rows.iter().enumerate() {
            match row {
                Some(RowOutcome::Bad(message)) => {
                    assert!([1, 4].contains(&i), "image {i}: {message}");
                    assert!(message.contains(&images[i].name), "{message}");
                }
                Some(RowOutcome::Probabilities(p)) => assert_eq!(p.len(), CLASSES as usize),
                None => panic!("image {i} got no outcome"),
            }
        }
        let bad = rows
            .iter()
            .filter(|r| matches!(r, Some(RowOutcome::Bad(_))))
            .count();
        assert_eq!(bad, 2);
    }

    #[test]
    fn cancellation_ends_the_pass() {
        let mut source = MemorySource::default();
        let images = source.add("new", 4, false);
        let source: Arc<dyn BlobSource> = Arc::new(source);
        let cancelled = AtomicBool::new(true);
        let err = ensemble(&[1])
            .predict(
                source,
                images,
                &tiny_pipeline(),
                false,
                &cancelled,
                &mut |_| Ok(()),
            )
            .unwrap_err();
        assert!(matches!(err, PredictError::Cancelled), "{err}");
    }
}
