//! A tiny fold for the training tests: `densenet-tiny` on a few 32-pixel images of three
//! easily told apart classes, served from memory.

use std::collections::HashMap;
use std::sync::Arc;

use foldtrain_proto::config::{Arch, JobConfig};
use foldtrain_proto::{AttemptId, BlobHash, FoldIndex, FoldTask, ImageRef, JobId};

use crate::data::test_images::encode_png;
use crate::data::{BlobSource, DataError, PipelineOptions, RgbImage};

pub(crate) const CLASSES: u32 = 3;
const SIZE: u32 = 32;

/// Encoded images by name.
#[derive(Debug, Default)]
pub(crate) struct MemorySource(HashMap<String, Vec<u8>>);

impl BlobSource for MemorySource {
    fn fetch(&self, image: &ImageRef) -> Result<Vec<u8>, DataError> {
        self.0
            .get(&image.name)
            .cloned()
            .ok_or_else(|| DataError::fetch(&image.name, "not in the test source"))
    }
}

impl MemorySource {
    /// Adds `count` images named `<prefix><i>.png`, class `i % 3`; labelled or not.
    pub(crate) fn add(&mut self, prefix: &str, count: u32, labelled: bool) -> Vec<ImageRef> {
        (0..count)
            .map(|i| {
                let class = i % CLASSES;
                let name = format!("{prefix}{i:02}.png");
                let bytes = encode_png(&pattern(class, i));
                let image = ImageRef {
                    hash: BlobHash::of(&bytes),
                    name: name.clone(),
                    label: labelled.then_some(class),
                    group: String::new(),
                    size: bytes.len() as u64,
                };
                self.0.insert(name, bytes);
                image
            })
            .collect()
    }

    /// Replaces an image's bytes.
    pub(crate) fn corrupt(&mut self, name: &str) {
        self.0.insert(name.to_owned(), b"not an image".to_vec());
    }
}

/// Class 0 a bright square, class 1 stripes, class 2 a checkerboard, each shifted and
/// tinted by its index.
fn pattern(class: u32, i: u32) -> RgbImage {
    let mut pixels = Vec::with_capacity((SIZE * SIZE * 3) as usize);
    for y in 0..SIZE {
        for x in 0..SIZE {
            let (sx, sy) = ((x + i) % SIZE, (y + 2 * i) % SIZE);
            let on = match class {
                0 => (8..24).contains(&sx) && (8..24).contains(&sy),
                1 => (sy / 4) % 2 == 0,
                _ => ((sx / 4) + (sy / 4)) % 2 == 0,
            };
            let tint = (i * 37 % 60) as u8;
            let rgb = if on {
                [200 - tint, 60 + tint, 40 * class as u8]
            } else {
                [20, 20 + tint, 30]
            };
            pixels.extend_from_slice(&rgb);
        }
    }
    RgbImage {
        width: SIZE,
        height: SIZE,
        pixels,
    }
}

/// The job config of the tiny fold: one thread of each kind, so runs repeat exactly.
pub(crate) fn tiny_config(epochs: u32) -> JobConfig {
    let mut config = JobConfig::default();
    config.model.arch = Arch::DensenetTiny;
    config.model.head_units = 8;
    config.train.image_size = SIZE;
    config.train.batch_size = 4;
    config.train.epochs = epochs;
    config.train.loader_threads = 1;
    config.train.torch_threads = 1;
    config.train.cache_bytes = 1 << 20;
    // Every epoch checkpoints, whatever its speed; the interval has its own tests.
    config.train.checkpoint_interval_s = 0;
    config
}

/// A fold of `train` / `val` / `test` images (test unlabelled) and the source serving them.
pub(crate) fn tiny_fold(train: u32, val: u32, test: u32, epochs: u32) -> (FoldTask, MemorySource) {
    let mut source = MemorySource::default();
    let task = FoldTask {
        job_id: JobId::new("unit"),
        fold: FoldIndex(0),
        attempt: AttemptId(1),
        config: tiny_config(epochs),
        class_names: vec!["square".into(), "stripes".into(), "checker".into()],
        train: source.add("train", train, true),
        val: source.add("val", val, true),
        test: source.add("test", test, false),
        resume: None,
        pretrained: None,
        device_index: None,
    };
    (task, source)
}

pub(crate) fn shared(source: MemorySource) -> Arc<dyn BlobSource> {
    Arc::new(source)
}

/// The tiny fold's preprocessing.
pub(crate) fn tiny_pipeline() -> PipelineOptions {
    PipelineOptions::from_train(&tiny_config(1).train)
}

/// Weights of a freshly initialised tiny model, as a best checkpoint carries them.
pub(crate) fn tiny_weights(seed: i64, classes: usize) -> Vec<u8> {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    crate::model::seeded(seed, || {
        crate::model::Classifier::new(&vs.root(), &tiny_config(1).model, classes as i64)
    });
    crate::model::save_weights(&vs).unwrap()
}
