//! The batch loader: a pool of threads fetches, decodes, caches and normalises images into
//! batches ahead of the consumer, within a bounded prefetch window, delivered in order.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use fast_image_resize::Resizer;
use foldtrain_proto::ImageRef;
use foldtrain_proto::config::{Augment, Normalize, Resize, TrainConfig};
use foldtrain_proto::runtime::panic_message;

use super::batch::NormalizeTable;
use super::{Batch, BlobSource, DataError, ImageCache, choose_augment, load_resized};

/// How images become batches; usually taken from the job's [`TrainConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOptions {
    pub image_size: u32,
    pub resize: Resize,
    pub normalize: Normalize,
    /// Applied only when a batch is asked for with an augmentation seed.
    pub augment: Vec<Augment>,
    pub loader_threads: usize,
    /// Batches built ahead of the consumer, at least one per loader thread.
    pub prefetch_batches: usize,
}

impl PipelineOptions {
    /// `loader_threads` 0 in the config means one per available core.
    pub fn from_train(config: &TrainConfig) -> Self {
        let loader_threads = match config.loader_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        };
        Self {
            image_size: config.image_size,
            resize: config.resize,
            normalize: config.normalize,
            augment: config.augment.clone(),
            loader_threads,
            prefetch_batches: loader_threads * 2,
        }
    }

    fn validate(&self, batch_size: usize) -> Result<(), DataError> {
        let invalid = |option, reason: &str| {
            Err(DataError::InvalidOption {
                option,
                reason: reason.to_owned(),
            })
        };
        if self.image_size == 0 {
            return invalid("image_size", "must be at least 1");
        }
        if batch_size == 0 {
            return invalid("batch_size", "must be at least 1");
        }
        Ok(())
    }
}

/// Turns lists of image positions into batches; cheap to keep for the whole fold.
pub struct Loader {
    source: Arc<dyn BlobSource>,
    images: Arc<Vec<ImageRef>>,
    options: PipelineOptions,
    cache: Arc<ImageCache>,
    table: Arc<NormalizeTable>,
}

impl Loader {
    pub fn new(
        source: Arc<dyn BlobSource>,
        images: Arc<Vec<ImageRef>>,
        options: PipelineOptions,
        cache: Arc<ImageCache>,
    ) -> Self {
        let table = Arc::new(NormalizeTable::new(options.normalize));
        Self {
            source,
            images,
            options,
            cache,
            table,
        }
    }

    pub fn images(&self) -> &Arc<Vec<ImageRef>> {
        &self.images
    }

    /// Batches of `order` (positions in the image list), built on loader threads with
    /// bounded prefetch and yielded in order. `augment_seed` None means no augmentation
    /// (evaluation); Some(s) draws each image's augmentation from (s, position).
    /// The iterator ends after the first error. Dropping it stops the threads.
    pub fn batches(
        &self,
        order: Vec<usize>,
        batch_size: usize,
        augment_seed: Option<u64>,
    ) -> BatchIter {
        if let Err(error) = self.options.validate(batch_size) {
            return BatchIter::failed(error);
        }
        let num_batches = order.len().div_ceil(batch_size);
        let threads = self.options.loader_threads.max(1).min(num_batches.max(1));
        let window = self.options.prefetch_batches.max(threads);
        let job = Arc::new(Job {
            source: self.source.clone(),
            images: self.images.clone(),
            cache: self.cache.clone(),
            table: self.table.clone(),
            size: self.options.image_size,
            resize: self.options.resize,
            augment: if augment_seed.is_some() {
                self.options.augment.clone()
            } else {
                Vec::new()
            },
            augment_seed: augment_seed.unwrap_or(0),
            order,
            batch_size,
            num_batches,
            window,
            shared: Shared::default(),
        });
        // Counted before any thread starts: a quick thread may finish (and count itself
        // out) before the last one is spawned.
        lock(&job.shared.state).alive = threads;
        let workers = (0..threads)
            .map(|i| {
                let job = job.clone();
                std::thread::Builder::new()
                    .name(format!("image-loader-{i}"))
                    .spawn(move || worker_loop(&job))
            })
            .collect::<Result<Vec<_>, _>>();
        match workers {
            Ok(workers) => BatchIter {
                job: Some(job),
                workers,
                failed: None,
                done: false,
            },
            Err(e) => {
                // Threads already started see the cancel and exit.
                job.shared.cancel();
                BatchIter::failed(DataError::InvalidOption {
                    option: "loader_threads",
                    reason: format!("cannot start loader thread: {e}"),
                })
            }
        }
    }
}

struct Job {
    source: Arc<dyn BlobSource>,
    images: Arc<Vec<ImageRef>>,
    cache: Arc<ImageCache>,
    table: Arc<NormalizeTable>,
    size: u32,
    resize: Resize,
    augment: Vec<Augment>,
    augment_seed: u64,
    order: Vec<usize>,
    batch_size: usize,
    num_batches: usize,
    window: usize,
    shared: Shared,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Read between images so that a dropped iterator stops work mid-batch.
    cancelled: AtomicBool,
}

impl Shared {
    fn cancel(&self) {
        let mut state = lock(&self.state);
        state.cancelled = true;
        self.cancelled.store(true, Ordering::SeqCst);
        drop(state);
        self.changed.notify_all();
    }
}

#[derive(Default)]
struct State {
    next_to_claim: usize,
    next_to_yield: usize,
    ready: BTreeMap<usize, Result<Batch, DataError>>,
    alive: usize,
    cancelled: bool,
}

/// Counts a worker out however it ends, so the consumer never waits on a dead pool.
struct AliveGuard<'a>(&'a Shared);

impl Drop for AliveGuard<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).alive -= 1;
        self.0.changed.notify_all();
    }
}

fn worker_loop(job: &Job) {
    let _alive = AliveGuard(&job.shared);
    let mut resizer = Resizer::new();
    loop {
        let batch_index = {
            let mut state = lock(&job.shared.state);
            loop {
                if state.cancelled || state.next_to_claim >= job.num_batches {
                    return;
                }
                if state.next_to_claim < state.next_to_yield + job.window {
                    break;
                }
                state = job
                    .shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
            }
            state.next_to_claim += 1;
            state.next_to_claim - 1
        };
        let result = catch_unwind(AssertUnwindSafe(|| {
            build_batch(job, batch_index, &mut resizer)
        }))
        .unwrap_or_else(|payload| {
            Err(DataError::LoaderPanic {
                batch: batch_index,
                message: panic_message(payload.as_ref()),
            })
        });
        let Some(result) = result.transpose() else {
            return; // cancelled mid-batch
        };
        lock(&job.shared.state).ready.insert(batch_index, result);
        job.shared.changed.notify_all();
    }
}

/// Ok(None) when cancelled part way.
fn build_batch(
    job: &Job,
    batch_index: usize,
    resizer: &mut Resizer,
) -> Result<Option<Batch>, DataError> {
    let start = batch_index * job.batch_size;
    let positions = &job.order[start..(start + job.batch_size).min(job.order.len())];
    let size = job.size as usize;
    let image_floats = 3 * size * size;
    let mut images = vec![0f32; positions.len() * image_floats];
    let mut labels = Vec::with_capacity(positions.len());
    for (slot, &position) in positions.iter().enumerate() {
        if job.shared.cancelled.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let image = job.images.get(position).ok_or(DataError::IndexOutOfRange {
            index: position,
            len: job.images.len(),
        })?;
        let pixels = match job
            .cache
            .get(&image.hash, &image.name, job.size, job.resize)
        {
            Some(pixels) => pixels,
            None => {
                let bytes = job.source.fetch(image)?;
                let resized = load_resized(&image.name, &bytes, job.size, job.resize, resizer)?;
                job.cache
                    .insert(&image.hash, &image.name, job.size, job.resize, resized)
            }
        };
        let choice = choose_augment(&job.augment, job.augment_seed, position);
        let out = &mut images[slot * image_floats..(slot + 1) * image_floats];
        job.table.write_chw(&pixels, size, choice, out);
        labels.push(image.label.map_or(-1, i64::from));
    }
    Ok(Some(Batch {
        images,
        labels,
        indices: positions.to_vec(),
        image_size: size,
    }))
}

/// Batches in order; see [`Loader::batches`].
pub struct BatchIter {
    job: Option<Arc<Job>>,
    workers: Vec<JoinHandle<()>>,
    failed: Option<DataError>,
    done: bool,
}

impl BatchIter {
    fn failed(error: DataError) -> Self {
        Self {
            job: None,
            workers: Vec::new(),
            failed: Some(error),
            done: false,
        }
    }

    /// Number of batches this epoch yields when nothing fails.
    pub fn num_batches(&self) -> usize {
        self.job.as_ref().map_or(0, |job| job.num_batches)
    }
}

impl Iterator for BatchIter {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(error) = self.failed.take() {
            self.done = true;
            return Some(Err(error));
        }
        if self.done {
            return None;
        }
        let job = self.job.as_ref()?;
        let mut state = lock(&job.shared.state);
        if state.next_to_yield >= job.num_batches {
            self.done = true;
            return None;
        }
        loop {
            let wanted = state.next_to_yield;
            if let Some(result) = state.ready.remove(&wanted) {
                state.next_to_yield += 1;
                drop(state);
                job.shared.changed.notify_all();
                self.done = result.is_err();
                return Some(result);
            }
            if state.alive == 0 {
                // Unreachable unless a worker died outside catch_unwind; never hang on it.
                self.done = true;
                return Some(Err(DataError::LoaderPanic {
                    batch: wanted,
                    message: "all loader threads exited before the batch was built".to_owned(),
                }));
            }
            state = job
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for BatchIter {
    fn drop(&mut self) {
        if let Some(job) = &self.job {
            job.shared.cancel();
        }
        for worker in self.workers.drain(..) {
            // A worker's panics are caught inside it; nothing useful to do with another.
            let _ = worker.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
