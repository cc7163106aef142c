//! Shards to worker slots: each free slot takes the next shard; a shard whose worker is
//! lost goes back to the queue for another slot (the lost slot gets no more), so a lost
//! worker costs only its shard. Finished shards go to a [`ShardSink`] as they end.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldtrain_proto::runtime::telemetry::mark_span_failed;
use foldtrain_proto::{ImageRef, ShardTask};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{FutureExt, StreamExt};
use tracing::{Instrument, field, info_span, warn};

use super::PredictError;
use crate::scheduler::SlotTarget;

/// What became of one image of a shard.
#[derive(Debug, Clone, PartialEq)]
pub enum RowOutcome {
    Probabilities(Vec<f32>),
    /// The image cannot be used; the message names it.
    Bad(String),
}

/// What a worker streams back for a shard.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardUpdate {
    /// Rows by position in the shard, in any order.
    Rows(Vec<(usize, RowOutcome)>),
    Done,
}

/// Why a shard attempt ended without `Done`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardFailure {
    pub message: String,
    /// Another attempt may succeed.
    pub retryable: bool,
    /// The worker is gone (its stream broke): its slot gets no more shards.
    pub lost: bool,
}

impl ShardFailure {
    pub fn lost(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            lost: true,
        }
    }
}

pub type ShardUpdates = BoxStream<'static, Result<ShardUpdate, ShardFailure>>;

/// Runs one shard on one slot; the real one calls the worker over gRPC.
pub trait ShardRunner: Send + Sync {
    fn run(&self, slot: &SlotTarget, task: ShardTask) -> ShardUpdates;
}

/// Takes each finished shard: its rows, one outcome per image, in shard order.
pub trait ShardSink {
    fn finished(&mut self, task: &ShardTask, rows: Vec<RowOutcome>) -> Result<(), PredictError>;
}

#[derive(Debug, Clone)]
pub struct DispatchOptions {
    /// Leave undecodable images out instead of stopping at the first.
    pub skip_bad: bool,
    /// Attempts per shard, the first included.
    pub max_attempts: u32,
    /// Counts the images scored so far, for progress.
    pub done: Arc<AtomicU64>,
}

/// `template` with each run of `shard_size` consecutive images, numbered from 0.
pub fn cut_shards(
    template: &ShardTask,
    images: Vec<ImageRef>,
    shard_size: usize,
) -> Vec<ShardTask> {
    let mut shards = Vec::new();
    let mut images = images.into_iter().peekable();
    while images.peek().is_some() {
        let mut task = template.clone();
        task.shard = shards.len() as u64;
        task.images = images.by_ref().take(shard_size.max(1)).collect();
        shards.push(task);
    }
    shards
}

/// Runs every shard to its end on `slots`, handing each finished one to `sink`.
pub async fn dispatch(
    runner: Arc<dyn ShardRunner>,
    slots: Vec<SlotTarget>,
    shards: &[ShardTask],
    options: &DispatchOptions,
    sink: &mut dyn ShardSink,
) -> Result<(), PredictError> {
    let mut queue: VecDeque<(usize, u32)> = (0..shards.len()).map(|i| (i, 1)).collect();
    let mut free: VecDeque<usize> = (0..slots.len()).collect();
    let mut running = FuturesUnordered::new();
    let mut last_failure = String::from("no worker slots");
    loop {
        while !queue.is_empty() && !free.is_empty() {
            let (shard, attempt) = queue.pop_front().expect("not empty");
            let slot = free.pop_front().expect("not empty");
            let images = shards[shard].images.len();
            // The runner carries this span's context to the worker, whose `predict_shard`
            // span becomes its child.
            let span = info_span!(
                "shard_attempt",
                shard = shards[shard].shard,
                attempt,
                images,
                worker = %slots[slot].worker,
                outcome = field::Empty,
            );
            let updates = span.in_scope(|| runner.run(&slots[slot], shards[shard].clone()));
            let done = options.done.clone();
            running.push(
                collect(updates, images, done)
                    .instrument(span.clone())
                    .map(move |result| (slot, shard, attempt, span, result)),
            );
        }
        let Some((slot, shard, attempt, span, result)) = running.next().await else {
            return match queue.front() {
                None => Ok(()),
                Some(&(shard, _)) => Err(PredictError::NoSlots {
                    shard: shards[shard].shard,
                    message: last_failure,
                }),
            };
        };
        let task = &shards[shard];
        span.record(
            "outcome",
            match &result {
                Ok(_) => "done",
                Err(failure) if failure.lost => "worker lost",
                Err(_) => "failed",
            },
        );
        if let Err(failure) = &result {
            mark_span_failed(&span, &failure.message);
        }
        drop(span);
        match result {
            Ok(rows) => {
                if !options.skip_bad
                    && let Some((i, message)) = rows.iter().enumerate().find_map(|(i, r)| match r {
                        RowOutcome::Bad(m) => Some((i, m)),
                        RowOutcome::Probabilities(_) => None,
                    })
                {
                    return Err(PredictError::BadImage {
                        name: task.images[i].name.clone(),
                        message: message.clone(),
                    });
                }
                sink.finished(task, rows)?;
                free.push_back(slot);
            }
            Err(failure) if failure.retryable && attempt < options.max_attempts => {
                warn!(
                    shard = task.shard,
                    attempt,
                    worker = %slots[slot].worker,
                    error = %failure.message,
                    "shard attempt failed; it goes to another slot"
                );
                last_failure = format!("worker {}: {}", slots[slot].worker, failure.message);
                queue.push_front((shard, attempt + 1));
                if !failure.lost {
                    free.push_back(slot);
                }
            }
            Err(failure) => {
                return Err(PredictError::Shard {
                    shard: task.shard,
                    message: format!(
                        "worker {} (attempt {attempt}): {}",
                        slots[slot].worker, failure.message
                    ),
                });
            }
        }
    }
}

/// Gathers one shard attempt's rows, checking that each image comes exactly once, and
/// counts them into `done` (taking them back out if the attempt fails).
async fn collect(
    mut updates: ShardUpdates,
    images: usize,
    done: Arc<AtomicU64>,
) -> Result<Vec<RowOutcome>, ShardFailure> {
    let mut rows: Vec<Option<RowOutcome>> = vec![None; images];
    let mut counted = 0u64;
    let result = loop {
        match updates.next().await {
            Some(Ok(ShardUpdate::Rows(batch))) => {
                if let Err(failure) = take_rows(&mut rows, batch, &mut counted, &done) {
                    break Err(failure);
                }
            }
            Some(Ok(ShardUpdate::Done)) => break Ok(()),
            Some(Err(failure)) => break Err(failure),
            None => {
                break Err(ShardFailure::lost(
                    "the stream ended before the shard was done",
                ));
            }
        }
    };
    let complete = counted == images as u64;
    match result {
        Ok(()) if complete => Ok(rows.into_iter().flatten().collect()),
        Ok(()) => {
            done.fetch_sub(counted, Ordering::Relaxed);
            Err(protocol(format!(
                "the worker finished after {counted} rows of {images}"
            )))
        }
        Err(failure) => {
            done.fetch_sub(counted, Ordering::Relaxed);
            Err(failure)
        }
    }
}

/// Puts `batch` into `rows`; a position out of range or sent twice breaks the protocol.
fn take_rows(
    rows: &mut [Option<RowOutcome>],
    batch: Vec<(usize, RowOutcome)>,
    counted: &mut u64,
    done: &AtomicU64,
) -> Result<(), ShardFailure> {
    let images = rows.len();
    for (index, outcome) in batch {
        let row = rows.get_mut(index).ok_or_else(|| {
            protocol(format!(
                "the worker sent row {index} of a shard of {images} images"
            ))
        })?;
        if row.replace(outcome).is_some() {
            return Err(protocol(format!("the worker sent row {index} twice")));
        }
        *counted += 1;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

fn protocol(message: String) -> ShardFailure {
    ShardFailure {
        message,
        retryable: true,
        lost: false,
    }
}

/// A shard template of two classes and one fold, for tests.
#[cfg(test)]
pub(crate) fn test_template() -> ShardTask {
    ShardTask {
        run_id: "p".into(),
        shard: 0,
        config: foldtrain_proto::JobConfig::default(),
        class_names: vec!["a".into(), "b".into()],
        fold_weights: vec![foldtrain_proto::BlobHash::of(b"w")],
        images: Vec::new(),
        device_index: None,
        tta_flip: false,
        batch_size: 4,
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
