//! A fold's training built from its task: the task checked, the device chosen, the model
//! seeded and then resumed or given pretrained weights, and the three image loaders.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foldtrain_proto::config::{ClassWeights, Precision};
use foldtrain_proto::{FoldTask, ImageRef};
use tch::{Device, Tensor};
use tracing::{info, warn};

use super::checkpoint::PartialEpoch;
use super::error::TrainError;
use super::loss::balanced_class_weights;
use super::options::RunOptions;
use super::state::FoldState;
use super::step::Learner;
use super::weights::Snapshot;
use crate::data::{BlobSource, ImageCache, Loader, PipelineOptions, epoch_seed};
use crate::model::{load_pretrained_bytes, seeded};

/// The loaders of the fold's three splits, sharing one decoded-image cache.
pub(crate) struct Loaders {
    pub train: Loader,
    pub val: Loader,
    pub test: Loader,
}

/// Everything one fold's training holds, from [`FoldRun::prepare`] to the verdict.
pub(crate) struct FoldRun<'t> {
    pub task: &'t FoldTask,
    pub learner: Learner,
    pub state: FoldState,
    /// The best epoch's weights so far: none yet, or those the resume checkpoint carried.
    pub best: Option<Snapshot>,
    pub loaders: Loaders,
    pub options: RunOptions,
    /// When the last latest checkpoint was taken, or this attempt began.
    pub last_checkpoint: Instant,
}

impl<'t> FoldRun<'t> {
    /// Checks the task and builds its model on the chosen device: resumed from the task's
    /// checkpoint, else seeded from (seed, fold) and optionally given pretrained features.
    pub fn prepare(
        task: &'t FoldTask,
        source: Arc<dyn BlobSource>,
        options: RunOptions,
    ) -> Result<Self, TrainError> {
        let train_labels = check_task(task)?;
        let (config, fold, classes) = (&task.config, task.fold.0, task.class_names.len());
        let device = select_device(task, options)?;
        set_torch_threads(config.train.torch_threads);
        let amp = wants_amp(config.train.precision, device, fold);
        // The global generator only initialises the weights; nothing later draws from it.
        let seed = epoch_seed(config.split.seed, fold, 0) as i64;
        let mut learner = seeded(seed, || {
            Learner::new(device, &config.model, classes, &config.train, amp)
        });
        learner.class_weights =
            class_weights(config.train.class_weights, &train_labels, classes, device);
        let mut state = FoldState::new(task);
        let best = restore(task, &mut learner, &mut state)?;
        Ok(Self {
            task,
            learner,
            state,
            best,
            loaders: Loaders::new(task, source),
            options,
            last_checkpoint: Instant::now(),
        })
    }

    pub fn fold(&self) -> u32 {
        self.task.fold.0
    }

    pub fn classes(&self) -> usize {
        self.task.class_names.len()
    }

    pub fn batch_size(&self) -> usize {
        self.task.config.train.batch_size as usize
    }

    /// Whether an epoch that ends now writes a latest checkpoint: always with an interval
    /// of 0, else once `train.checkpoint_interval_s` has passed since the last one.
    pub fn checkpoint_due(&self, now: Instant) -> bool {
        let interval = Duration::from_secs(self.task.config.train.checkpoint_interval_s.into());
        now.saturating_duration_since(self.last_checkpoint) >= interval
    }

    /// The latest checkpoint of this run (weights, best weights, optimizer and state),
    /// with `partial` when it is taken part way through the next epoch.
    pub fn latest_checkpoint(&self, partial: Option<PartialEpoch>) -> Result<Vec<u8>, TrainError> {
        let l = &self.learner;
        self.state.encode(
            &l.vs,
            &l.adam,
            l.scaler.as_ref(),
            self.best.as_ref(),
            partial,
        )
    }
}

impl Loaders {
    fn new(task: &FoldTask, source: Arc<dyn BlobSource>) -> Self {
        let t = &task.config.train;
        let cache = Arc::new(ImageCache::new(t.cache_bytes));
        let pipeline = PipelineOptions::from_train(t);
        let loader = |images: &Vec<ImageRef>| {
            Loader::new(
                source.clone(),
                Arc::new(images.clone()),
                pipeline.clone(),
                cache.clone(),
            )
        };
        Self {
            train: loader(&task.train),
            val: loader(&task.val),
            test: loader(&task.test),
        }
    }
}

/// Refuses a task that cannot train; returns the training labels.
fn check_task(task: &FoldTask) -> Result<Vec<u32>, TrainError> {
    task.config
        .validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    let classes = task.class_names.len();
    if classes < 2 {
        return Err(TrainError::Config(format!(
            "need at least 2 classes, got {classes}"
        )));
    }
    let train_labels = labels_of(&task.train, "train", classes)?;
    labels_of(&task.val, "val", classes)?;
    Ok(train_labels)
}

/// The labels of a labelled split, checked against the class count.
fn labels_of(images: &[ImageRef], split: &str, classes: usize) -> Result<Vec<u32>, TrainError> {
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

/// `torch_threads` 0 means one per available core.
pub fn set_torch_threads(torch_threads: u32) {
    let threads = match torch_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    };
    tch::set_num_threads(threads as i32);
}

/// Whether to train under fp16 autocast: asked for, and on CUDA.
fn wants_amp(precision: Precision, device: Device, fold: u32) -> bool {
    let amp = precision == Precision::Amp && device.is_cuda();
    if precision == Precision::Amp && !amp {
        warn!(
            fold,
            "precision amp needs CUDA; training in fp32 on the CPU"
        );
    }
    amp
}

fn class_weights(
    choice: ClassWeights,
    train_labels: &[u32],
    classes: usize,
    device: Device,
) -> Option<Tensor> {
    match choice {
        ClassWeights::None => None,
        ClassWeights::Balanced => {
            let w: Vec<f32> = balanced_class_weights(train_labels, classes)
                .iter()
                .map(|&w| w as f32)
                .collect();
            Some(Tensor::from_slice(&w).to_device(device))
        }
    }
}

/// Loads the task's resume checkpoint (returning the best weights it carried), or else
/// the pretrained features the model config names.
fn restore(
    task: &FoldTask,
    learner: &mut Learner,
    state: &mut FoldState,
) -> Result<Option<Snapshot>, TrainError> {
    let fold = task.fold.0;
    if let Some(bytes) = &task.resume {
        let best = state.resume(
            task,
            bytes,
            &learner.vs,
            &mut learner.adam,
            &mut learner.scaler,
            learner.device,
        )?;
        let batches_done = state.partial_epoch.as_ref().map_or(0, |p| p.batches_done);
        info!(
            fold,
            epochs_done = state.epochs_done,
            batches_done,
            "resuming from the latest checkpoint"
        );
        return Ok(best);
    }
    if let Some(blob) = task.config.model.pretrained {
        let Some(bytes) = &task.pretrained else {
            return Err(TrainError::Config(format!(
                "model.pretrained names blob {blob}, but the task carries no pretrained weights"
            )));
        };
        let origin = format!("pretrained weights blob {blob}");
        let report = load_pretrained_bytes(&mut learner.vs, &origin, bytes)?;
        info!(fold, blob = %blob, loaded = report.loaded, ignored = report.ignored.len(), "loaded pretrained weights");
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::test_fold::{shared, tiny_fold};

    fn weights(run: &FoldRun<'_>) -> Vec<f32> {
        let head = &run.learner.vs.variables()["head.dense.weight"];
        Vec::<f32>::try_from(&head.flatten(0, -1)).unwrap()
    }

    #[test]
    fn a_fresh_fold_starts_from_weights_seeded_by_its_fold() {
        // Exact replay of the seeded weights is checked in tests/train_resume.rs, in a
        // process of its own: here other tests draw from the same global generator.
        let (mut task, source) = tiny_fold(5, 3, 2, 1);
        task.config.train.precision = Precision::Amp;
        task.config.train.class_weights = ClassWeights::Balanced;
        let source = shared(source);
        let run = FoldRun::prepare(&task, source.clone(), RunOptions::default()).unwrap();
        assert_eq!((run.fold(), run.classes(), run.batch_size()), (0, 3, 4));
        assert!(!run.learner.amp(), "amp needs CUDA");
        assert_eq!(run.learner.class_weights.as_ref().unwrap().size(), vec![3]);
        assert_eq!((run.state.epochs_done, run.best.is_none()), (0, true));
        assert_eq!(run.loaders.train.images().len(), 5);
        assert_eq!(run.loaders.test.images().len(), 2);

        let mut other = task.clone();
        other.fold = foldtrain_proto::FoldIndex(1);
        let other = FoldRun::prepare(&other, source, RunOptions::default()).unwrap();
        assert_ne!(weights(&other), weights(&run));
    }

    #[test]
    fn a_resumed_fold_takes_weights_and_state_from_the_checkpoint() {
        let (mut task, source) = tiny_fold(5, 3, 2, 2);
        let source = shared(source);
        let mut run = FoldRun::prepare(&task, source.clone(), RunOptions::default()).unwrap();
        let mut bias = run.learner.vs.variables()["head.out.bias"].shallow_clone();
        tch::no_grad(|| bias.copy_(&Tensor::from_slice(&[0.25f32, 0.5, 0.75])));
        run.state.epochs_done = 1;
        let l = &run.learner;
        let bytes = run
            .state
            .encode(&l.vs, &l.adam, l.scaler.as_ref(), None, None)
            .unwrap();

        task.resume = Some(bytes);
        let resumed = FoldRun::prepare(&task, source, RunOptions::default()).unwrap();
        assert_eq!(resumed.state.epochs_done, 1);
        assert!(resumed.best.is_none());
        let bias = &resumed.learner.vs.variables()["head.out.bias"];
        assert_eq!(Vec::<f32>::try_from(bias).unwrap(), vec![0.25, 0.5, 0.75]);
    }

    #[test]
    fn a_fresh_fold_loads_the_pretrained_blob_the_task_carries() {
        let (mut task, source) = tiny_fold(5, 3, 2, 1);
        let source = shared(source);
        // Another fold's seeded features stand in for pretrained ones: not this fold's.
        let mut donor = task.clone();
        donor.fold = foldtrain_proto::FoldIndex(1);
        let donor = FoldRun::prepare(&donor, source.clone(), RunOptions::default()).unwrap();
        let bytes = crate::model::save_weights(&donor.learner.vs).unwrap();
        let features = |run: &FoldRun<'_>| {
            let t = &run.learner.vs.variables()["features.conv0.weight"];
            Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
        };

        task.config.model.pretrained = Some(foldtrain_proto::BlobHash::of(&bytes));
        let err = match FoldRun::prepare(&task, source.clone(), RunOptions::default()) {
            Ok(_) => panic!("prepared a task naming weights it does not carry"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("carries no pretrained weights"), "{err}");

        task.pretrained = Some(bytes);
        let run = FoldRun::prepare(&task, source, RunOptions::default()).unwrap();
        assert_eq!(features(&run), features(&donor));
    }

    #[test]
    fn tasks_that_cannot_train_are_refused_naming_the_fault() {
        let source = shared(tiny_fold(1, 1, 1, 1).1);
        let refused = |task: &FoldTask, options: RunOptions| match FoldRun::prepare(
            task,
            source.clone(),
            options,
        ) {
            Ok(_) => panic!("prepared a task that cannot train"),
            Err(e) => e.to_string(),
        };
        let (task, _) = tiny_fold(4, 2, 1, 1);
        let mut bad = task.clone();
        bad.train[1].label = Some(7);
        let err = refused(&bad, RunOptions::default());
        assert!(
            err.contains("train image train01.png: label 7 out of range"),
            "{err}"
        );
        let mut bad = task.clone();
        bad.val[0].label = None;
        let err = refused(&bad, RunOptions::default());
        assert!(err.contains("val image val00.png: missing label"), "{err}");
        let mut bad = task.clone();
        bad.class_names.truncate(1);
        let err = refused(&bad, RunOptions::default());
        assert!(err.contains("need at least 2 classes"), "{err}");
        let far_gpu = RunOptions {
            device: Some(Device::Cuda(99)),
            ..RunOptions::default()
        };
        let err = refused(&task, far_gpu);
        assert!(err.contains("cuda:99 requested"), "{err}");
    }
}
