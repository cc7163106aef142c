//! A worker without libtorch: it "trains" instantly and deterministically, producing the
//! same kinds of events as a real worker, so scheduling, retries and aggregation can be
//! exercised (and demonstrated) on any machine.

use std::sync::{Arc, Mutex};

use foldtrain_proto::task::{CheckpointKind, EpochRecord, FoldFailure, FoldSummary};
use foldtrain_proto::{AttemptId, FoldEvent, FoldIndex, FoldTask, ImageRef, JobId};
use futures::StreamExt;

use super::launcher::{FoldEventStream, FoldLauncher, SlotTarget};
use crate::error::CoordinatorError;

/// What one launch should do.
#[derive(Debug, Clone)]
pub enum VirtualBehaviour {
    /// Train every epoch and finish.
    Succeed,
    /// Report this failure after finishing (and checkpointing) `after_epoch`.
    FailAfter {
        after_epoch: u32,
        failure: FoldFailure,
    },
    /// End the stream abruptly after `after_epoch`, as a crashed worker would.
    BreakAfter { after_epoch: u32 },
    /// Wait until released (see [`VirtualLauncher::release`]) before training.
    WaitForRelease,
}

/// A record of one launch, for tests to inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualLaunch {
    pub target: SlotTarget,
    pub job: JobId,
    pub fold: FoldIndex,
    pub attempt: AttemptId,
    /// Which launch of this (job, fold) it is, from 1.
    pub nth: u32,
    /// The epoch of the checkpoint the attempt resumed from.
    pub resumed_from: Option<u32>,
    pub val: Vec<String>,
}

type Plan = dyn Fn(&VirtualLaunch) -> VirtualBehaviour + Send + Sync;

/// A [`FoldLauncher`] that runs folds in-process with made-up but plausible numbers.
#[derive(Clone)]
pub struct VirtualLauncher {
    plan: Arc<Plan>,
    launches: Arc<Mutex<Vec<VirtualLaunch>>>,
    release: tokio::sync::watch::Sender<bool>,
}

impl Default for VirtualLauncher {
    fn default() -> Self {
        Self::new(|_| VirtualBehaviour::Succeed)
    }
}

impl VirtualLauncher {
    /// A launcher whose every launch follows `plan`.
    pub fn new(plan: impl Fn(&VirtualLaunch) -> VirtualBehaviour + Send + Sync + 'static) -> Self {
        Self {
            plan: Arc::new(plan),
            launches: Arc::default(),
            release: tokio::sync::watch::channel(false).0,
        }
    }

    /// Every launch so far, in order.
    pub fn launches(&self) -> Vec<VirtualLaunch> {
        self.launches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Lets every launch waiting in [`VirtualBehaviour::WaitForRelease`], now or later, go on.
    pub fn release(&self) {
        self.release.send_replace(true);
    }
}

impl FoldLauncher for VirtualLauncher {
    fn launch(&self, target: &SlotTarget, task: FoldTask) -> FoldEventStream {
        let resume = task.resume.as_deref().and_then(VirtualCheckpoint::parse);
        let launch = {
            let mut launches = self.launches.lock().unwrap_or_else(|p| p.into_inner());
            let nth = 1 + launches
                .iter()
                .filter(|l| l.job == task.job_id && l.fold == task.fold)
                .count() as u32;
            let launch = VirtualLaunch {
                target: target.clone(),
                job: task.job_id.clone(),
                fold: task.fold,
                attempt: task.attempt,
                nth,
                resumed_from: resume.map(|c| c.epoch),
                val: task.val.iter().map(|i| i.name.clone()).collect(),
            };
            launches.push(launch.clone());
            launch
        };
        let behaviour = (self.plan)(&launch);
        let mut release = self.release.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            if matches!(behaviour, VirtualBehaviour::WaitForRelease) {
                // An error means the launcher is gone: nothing left to wait for.
                let _ = release.wait_for(|released| *released).await;
            }
            for item in virtual_events(&task, resume, &behaviour) {
                if tx.send(item).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx).boxed()
    }
}

/// What the virtual worker's checkpoints hold: enough to resume exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
struct VirtualCheckpoint {
    epoch: u32,
    best_epoch: u32,
    best_val_loss: f64,
}

impl VirtualCheckpoint {
    fn to_bytes(self) -> Vec<u8> {
        format!(
            "virtual {} {} {}",
            self.epoch, self.best_epoch, self.best_val_loss
        )
        .into_bytes()
    }

    fn parse(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.strip_prefix("virtual ")?.split(' ');
        Some(Self {
            epoch: parts.next()?.parse().ok()?,
            best_epoch: parts.next()?.parse().ok()?,
            best_val_loss: parts.next()?.parse().ok()?,
        })
    }
}

/// A validation-loss curve that falls, bottoms out at epoch 3 and creeps up again, so
/// the best epoch is not simply the last.
fn val_loss(fold: FoldIndex, epoch: u32) -> f64 {
    let e = epoch as f64;
    1.0 / e + 0.1 * (e - 3.0).max(0.0) + 0.01 * fold.0 as f64
}

/// Deterministic pseudo-random value in [0, 1) from an image and a salt.
fn unit(image: &ImageRef, salt: u64) -> f64 {
    let mut h = blake3::Hasher::new();
    h.update(&image.hash.0);
    h.update(&salt.to_le_bytes());
    let bytes = h.finalize();
    u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or_default()) as f64
        / u64::MAX as f64
}

/// Softmax probabilities favouring `label` (when known) most of the time.
fn probabilities(images: &[ImageRef], classes: usize, fold: FoldIndex) -> Vec<f32> {
    let mut out = Vec::with_capacity(images.len() * classes);
    for image in images {
        let favoured = match image.label {
            Some(l) if unit(image, 1_000 + fold.0 as u64) < 0.8 => l as usize,
            _ => (unit(image, 2_000 + fold.0 as u64) * classes as f64) as usize % classes,
        };
        let logits: Vec<f64> = (0..classes)
            .map(|c| {
                unit(image, ((fold.0 as u64) << 32) | c as u64)
                    + if c == favoured { 2.0 } else { 0.0 }
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        out.extend(exp.iter().map(|e| (e / sum) as f32));
    }
    out
}

/// A minimal safetensors file (one `head.bias` tensor), standing in for best weights.
fn weights(classes: usize, fold: FoldIndex) -> Vec<u8> {
    let header = format!(
        "{{\"head.bias\":{{\"dtype\":\"F32\",\"shape\":[{classes}],\"data_offsets\":[0,{}]}}}}",
        classes * 4
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    for c in 0..classes {
        bytes.extend_from_slice(&((fold.0 as f32) + c as f32 / 10.0).to_le_bytes());
    }
    bytes
}

fn virtual_events(
    task: &FoldTask,
    resume: Option<VirtualCheckpoint>,
    behaviour: &VirtualBehaviour,
) -> Vec<Result<FoldEvent, CoordinatorError>> {
    let classes = task.class_names.len();
    let epochs = task.config.train.epochs;
    let mut best = resume.map_or((0, f64::INFINITY), |c| (c.best_epoch, c.best_val_loss));
    let mut events = Vec::new();
    let start = resume.map_or(1, |c| c.epoch + 1);
    for epoch in start..=epochs {
        events.extend(epoch_events(task, epoch, &mut best).into_iter().map(Ok));
        if let Some(end) = behaviour_ends(behaviour, epoch) {
            events.push(end);
            return events;
        }
    }
    // Like a real worker, every attempt that finishes sends the best weights once, a
    // resumed one too, whether or not it improved on its checkpoint's best.
    events.push(Ok(FoldEvent::Checkpoint {
        kind: CheckpointKind::Best,
        epoch: best.0,
        bytes: weights(classes, task.fold),
    }));
    events.push(Ok(FoldEvent::Oof {
        rows: task.val.len() as u32,
        classes: classes as u32,
        probs: probabilities(&task.val, classes, task.fold),
    }));
    events.push(Ok(FoldEvent::Test {
        rows: task.test.len() as u32,
        classes: classes as u32,
        probs: probabilities(&task.test, classes, task.fold),
    }));
    events.push(Ok(FoldEvent::Done(FoldSummary {
        best_epoch: best.0,
        best_val_loss: best.1,
        epochs_run: epochs,
        early_stopped: false,
    })));
    events
}

/// One epoch as a worker reports it: progress, metrics and the latest checkpoint, which
/// carries the best (epoch, val_loss) so far.
fn epoch_events(task: &FoldTask, epoch: u32, best: &mut (u32, f64)) -> Vec<FoldEvent> {
    let batches = task
        .train
        .len()
        .div_ceil(task.config.train.batch_size as usize) as u32;
    let vl = val_loss(task.fold, epoch);
    let acc = 1.0 - vl / 2.0;
    let mut events = vec![
        FoldEvent::Progress {
            epoch,
            batch: batches,
            batches,
            loss: vl * 0.9,
            images_per_sec: 1000.0,
            phase: "train",
        },
        FoldEvent::Epoch(EpochRecord {
            epoch,
            loss: vl * 0.9,
            accuracy: acc + 0.02,
            f1: acc,
            val_loss: vl,
            val_accuracy: acc,
            val_f1: acc - 0.05,
            lr: task.config.train.lr,
            images_per_sec: 1000.0,
            seconds: 0.01,
            val_seconds: 0.002,
            checkpoint_seconds: 0.001,
        }),
    ];
    if vl < best.1 {
        *best = (epoch, vl);
    }
    let checkpoint = VirtualCheckpoint {
        epoch,
        best_epoch: best.0,
        best_val_loss: best.1,
    };
    events.push(FoldEvent::Checkpoint {
        kind: CheckpointKind::Latest,
        epoch,
        bytes: checkpoint.to_bytes(),
    });
    events
}

/// The event that ends the attempt after `epoch`, when the behaviour says so.
fn behaviour_ends(
    behaviour: &VirtualBehaviour,
    epoch: u32,
) -> Option<Result<FoldEvent, CoordinatorError>> {
    match behaviour {
        VirtualBehaviour::FailAfter {
            after_epoch,
            failure,
        } if *after_epoch == epoch => Some(Ok(FoldEvent::Failed(failure.clone()))),
        VirtualBehaviour::BreakAfter { after_epoch } if *after_epoch == epoch => {
            Some(Err(CoordinatorError::WorkerStream {
                worker: foldtrain_proto::WorkerId::new("virtual"),
                message: "connection reset".into(),
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_round_trip_and_probabilities_are_distributions() {
        let c = VirtualCheckpoint {
            epoch: 4,
            best_epoch: 3,
            best_val_loss: 0.345,
        };
        assert_eq!(VirtualCheckpoint::parse(&c.to_bytes()), Some(c));
        assert_eq!(VirtualCheckpoint::parse(b"not a checkpoint"), None);
        let images: Vec<ImageRef> = (0..20)
            .map(|i| ImageRef {
                hash: foldtrain_proto::BlobHash::of(&[i]),
                name: format!("{i}"),
                label: Some((i % 3) as u32),
                group: String::new(),
                size: 1,
            })
            .collect();
        let p = probabilities(&images, 3, FoldIndex(1));
        assert_eq!(
            p,
            probabilities(&images, 3, FoldIndex(1)),
            "not deterministic"
        );
        assert_ne!(
            p,
            probabilities(&images, 3, FoldIndex(2)),
            "folds should differ"
        );
        for row in p.chunks(3) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        assert!(val_loss(FoldIndex(0), 3) < val_loss(FoldIndex(0), 2));
        assert!(val_loss(FoldIndex(0), 3) < val_loss(FoldIndex(0), 6));
    }
}
