//! One `PredictShard` call: pull the shard's images and the folds' weights into the blob
//! cache, score the images on a dedicated thread with the slot's ensemble (loaded once and
//! kept across shards) and stream the rows back, then `Done` or a classified error.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use foldtrain_proto::config::{ModelConfig, Precision};
use foldtrain_proto::task::FoldFailure;
use foldtrain_proto::{BlobHash, FailureCause, ShardTask, pb};
use tch::Device;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{info, warn};

use super::WorkerError;
use super::attempt::cancel_when_closed;
use super::fetch::{Wanted, fetch_missing};
use super::metrics::ShardMetrics;
use super::service::Shared;
use super::slots::SlotLease;
use crate::data::{HashDirSource, PipelineOptions};
use crate::train::{
    Ensemble, FoldControl, PredictError, PredictOptions, RowOutcome, set_torch_threads,
};

pub type ShardSender = mpsc::Sender<Result<pb::ShardEvent, Status>>;

/// What decides an ensemble: the same weights, model, classes and device give the same one.
#[derive(Debug, Clone, PartialEq)]
struct EnsembleKey {
    weights: Vec<BlobHash>,
    model: ModelConfig,
    classes: usize,
    device: Device,
    batch_size: usize,
}

/// The ensemble each slot loaded last, kept so that the next shard of the same prediction
/// does not load the K folds again. A slot runs one shard at a time, so the shard takes its
/// slot's ensemble out while it runs and puts it back after.
#[derive(Default)]
pub struct EnsembleCache {
    by_slot: Mutex<HashMap<i32, (EnsembleKey, Ensemble)>>,
}

impl EnsembleCache {
    fn take(&self, slot: i32, key: &EnsembleKey) -> Option<Ensemble> {
        let mut slots = self.by_slot.lock().unwrap_or_else(|p| p.into_inner());
        match slots.remove(&slot) {
            Some((cached, ensemble)) if cached == *key => Some(ensemble),
            _ => None,
        }
    }

    fn put(&self, slot: i32, key: EnsembleKey, ensemble: Ensemble) {
        let mut slots = self.by_slot.lock().unwrap_or_else(|p| p.into_inner());
        slots.insert(slot, (key, ensemble));
    }
}

/// Everything one accepted shard needs.
pub struct ShardAttempt {
    pub task: ShardTask,
    pub lease: SlotLease,
    pub control: Arc<FoldControl>,
    pub tx: ShardSender,
}

fn event(shard: u64, event: pb::shard_event::Event) -> Result<pb::ShardEvent, Status> {
    Ok(pb::ShardEvent {
        shard,
        event: Some(event),
    })
}

fn error_event(shard: u64, failure: &FoldFailure) -> Result<pb::ShardEvent, Status> {
    event(
        shard,
        pb::shard_event::Event::Error(pb::FoldError {
            message: failure.message.clone(),
            retryable: failure.retryable(),
            cause: failure.cause as i32,
        }),
    )
}

/// Runs the shard to its end; every outcome reaches the caller as an event.
pub async fn run_shard(shared: Arc<Shared>, attempt: ShardAttempt) {
    let ShardAttempt {
        task,
        lease,
        control,
        tx,
    } = attempt;
    // The caller dropping the stream (a cancelled prediction) stops the shard.
    let watcher = cancel_when_closed(&tx, &control);
    let shard = task.shard;
    if let Err(e) = fetch_inputs(&shared, &task).await {
        warn!(error = %e, "shard failed before scoring");
        let _ = tx.send(error_event(shard, &e.to_failure())).await;
    } else {
        let thread = {
            let (shared, tx) = (shared.clone(), tx.clone());
            // Spans do not follow a thread by themselves: carry the shard's in.
            let span = tracing::Span::current();
            std::thread::Builder::new()
                .name(format!("shard-{shard}"))
                .spawn(move || span.in_scope(|| score_shard(&shared, task, lease, &control, &tx)))
        };
        match thread {
            Ok(thread) => {
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            }
            Err(e) => {
                let failure = FoldFailure::new(
                    FailureCause::Internal,
                    format!("starting the shard thread failed: {e}"),
                );
                let _ = tx.send(error_event(shard, &failure)).await;
            }
        }
    }
    watcher.abort();
}

/// Downloads the images and weights the cache lacks.
async fn fetch_inputs(shared: &Shared, task: &ShardTask) -> Result<(), WorkerError> {
    let images = task.images.iter().map(|i| Wanted {
        hash: i.hash,
        name: i.name.clone(),
    });
    let weights = task
        .fold_weights
        .iter()
        .enumerate()
        .map(|(fold, &hash)| Wanted {
            hash,
            name: format!("best weights of fold {fold}"),
        });
    let mut client = shared.client.clone();
    let wanted = weights.chain(images).collect();
    let downloaded =
        fetch_missing(&mut client, &shared.coordinator_url, &shared.cache, wanted).await?;
    info!(downloaded, "shard blobs ready");
    Ok(())
}

/// Scores the shard on the calling thread, streaming rows into `tx`, then its verdict.
fn score_shard(
    shared: &Shared,
    task: ShardTask,
    lease: SlotLease,
    control: &FoldControl,
    tx: &ShardSender,
) {
    let (shard, slot) = (task.shard, lease.slot().index());
    let mut sent = (0u32, 0u32);
    let mut metrics = shared.metrics.shard(lease.slot());
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        score(shared, task, slot, control, tx, &mut sent, &mut metrics)
    }))
    .unwrap_or_else(|panic| {
        Err(FoldFailure::new(
            FailureCause::Torch,
            foldtrain_proto::runtime::panic_message(panic.as_ref()),
        ))
    });
    // The slot is free before the caller hears the verdict and sends the next shard.
    drop(metrics);
    drop(lease);
    let verdict = match outcome {
        Ok(()) => event(
            shard,
            pb::shard_event::Event::Done(pb::ShardDone {
                rows: sent.0,
                bad: sent.1,
            }),
        ),
        Err(failure) => {
            warn!(cause = failure.cause.as_str(), error = %failure.message, "shard failed");
            error_event(shard, &failure)
        }
    };
    if shared.stopping.load(Ordering::Relaxed) {
        // Out of drain time: end without a verdict, so the caller retries it elsewhere.
        return;
    }
    let _ = tx.blocking_send(verdict);
}

fn score(
    shared: &Shared,
    task: ShardTask,
    slot: i32,
    control: &FoldControl,
    tx: &ShardSender,
    sent: &mut (u32, u32),
    metrics: &mut ShardMetrics,
) -> Result<(), FoldFailure> {
    let device = shared.run_options.device.unwrap_or_else(|| {
        task.device_index
            .map_or(Device::Cpu, |i| Device::Cuda(i as usize))
    });
    set_torch_threads(task.config.train.torch_threads);
    let key = EnsembleKey {
        weights: task.fold_weights.clone(),
        model: task.config.model.clone(),
        classes: task.class_names.len(),
        device,
        batch_size: task.batch_size,
    };
    let ensemble = match shared.ensembles.take(slot, &key) {
        Some(ensemble) => ensemble,
        None => load_ensemble(shared, &task, &key)?,
    };
    let options = PipelineOptions::from_train(&task.config.train);
    let source = Arc::new(HashDirSource::new(shared.cache.dir()));
    let shard = task.shard;
    let mut emit = |rows: Vec<(usize, RowOutcome)>| -> Result<(), PredictError> {
        let rows = rows
            .into_iter()
            .map(|(index, outcome)| {
                let mut row = pb::ShardRow {
                    index: index as u32,
                    ..Default::default()
                };
                match outcome {
                    RowOutcome::Probabilities(p) => {
                        sent.0 += 1;
                        row.probabilities = p;
                    }
                    RowOutcome::Bad(message) => {
                        sent.1 += 1;
                        row.error = message;
                    }
                }
                row
            })
            .collect::<Vec<_>>();
        metrics.scored(rows.len());
        let rows = event(shard, pb::shard_event::Event::Rows(pb::ShardRows { rows }));
        tx.blocking_send(rows).map_err(|_| PredictError::Cancelled)
    };
    let result = ensemble.predict(
        source,
        task.images,
        &options,
        task.tta_flip,
        control.cancel_flag(),
        &mut emit,
    );
    shared.ensembles.put(slot, key, ensemble);
    result.map_err(|e| e.in_fold(0).to_failure())
}

fn load_ensemble(
    shared: &Shared,
    task: &ShardTask,
    key: &EnsembleKey,
) -> Result<Ensemble, FoldFailure> {
    let weights = task
        .fold_weights
        .iter()
        .map(|hash| shared.cache.read(hash))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_failure())?;
    let options = PredictOptions {
        device: key.device,
        batch_size: key.batch_size,
        // As the folds' own test pass ran: fp16 autocast only under amp on CUDA.
        amp: task.config.train.precision == Precision::Amp && key.device.is_cuda(),
    };
    let ensemble = Ensemble::from_safetensors(&key.model, key.classes, &weights, options)
        .map_err(|e| e.in_fold(0).to_failure())?;
    info!(folds = ensemble.folds(), device = ?key.device, "ensemble loaded");
    Ok(ensemble)
}
