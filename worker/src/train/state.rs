//! The fold's resumable state beyond the tensors (epoch, callbacks, history) and its
//! conversion to and from the latest-checkpoint file.

use std::collections::HashMap;

use foldtrain_proto::FoldTask;
use foldtrain_proto::task::EpochRecord;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::adam::KerasAdam;
use super::amp::GradScaler;
use super::callbacks::{BestCheckpoint, EarlyStopping, ReduceLrOnPlateau};
use super::checkpoint::{self, CheckpointError, FORMAT_VERSION, PartialEpoch, ResumeState};
use super::error::TrainError;
use super::weights::{Snapshot, restore_named};

const RNG_NOTE: &str =
    "no generator state: shuffles and augmentations derive from (seed, fold, epoch)";

pub(crate) struct FoldState {
    pub fold: u32,
    pub seed: u64,
    pub arch: String,
    pub classes: u32,
    pub epochs_done: u32,
    pub best: BestCheckpoint,
    pub early_stopping: EarlyStopping,
    pub reduce_lr: ReduceLrOnPlateau,
    pub history: Vec<EpochRecord>,
    /// The unfinished epoch a resumed checkpoint stopped in, until training takes it up.
    pub partial_epoch: Option<PartialEpoch>,
}

impl FoldState {
    pub fn new(task: &FoldTask) -> Self {
        let t = &task.config.train;
        Self {
            fold: task.fold.0,
            seed: task.config.split.seed,
            arch: task.config.model.arch.name().to_string(),
            classes: task.class_names.len() as u32,
            epochs_done: 0,
            best: BestCheckpoint::default(),
            early_stopping: EarlyStopping::new(t.early_stopping_patience),
            reduce_lr: ReduceLrOnPlateau::new(
                t.reduce_lr_factor,
                t.reduce_lr_patience,
                t.reduce_lr_min_delta,
            ),
            history: Vec::new(),
            partial_epoch: None,
        }
    }

    /// The latest checkpoint: weights, best weights, Adam moments and this state, with
    /// `partial` when it is taken part way through the next epoch.
    pub fn encode(
        &self,
        vs: &VarStore,
        adam: &KerasAdam,
        scaler: Option<&GradScaler>,
        best: Option<&Snapshot>,
        partial: Option<PartialEpoch>,
    ) -> Result<Vec<u8>, TrainError> {
        let current = Snapshot(vs.variables());
        let mut tensors = current.prefixed("model.");
        if let Some(best) = best {
            tensors.extend(best.prefixed("best."));
        }
        tensors.extend(adam.named_moments());
        let state = ResumeState {
            version: FORMAT_VERSION,
            fold: self.fold,
            seed: self.seed,
            arch: self.arch.clone(),
            classes: self.classes,
            epochs_done: self.epochs_done,
            adam: adam.state(),
            best: self.best.clone(),
            early_stopping: self.early_stopping.clone(),
            reduce_lr: self.reduce_lr.clone(),
            scaler: scaler.map(GradScaler::state),
            history: self.history.clone(),
            partial_epoch: partial,
            rng: RNG_NOTE.into(),
        };
        Ok(checkpoint::encode(&state, &tensors)?)
    }

    /// Loads a latest checkpoint into the model, optimizer and scaler; returns the best
    /// weights it carried. Refuses a checkpoint of another fold, seed, model or class count.
    pub fn resume(
        &mut self,
        task: &FoldTask,
        bytes: &[u8],
        vs: &VarStore,
        adam: &mut KerasAdam,
        scaler: &mut Option<GradScaler>,
        device: Device,
    ) -> Result<Option<Snapshot>, TrainError> {
        let (saved, mut tensors) = checkpoint::decode(bytes)?;
        let expected = (self.fold, self.seed, self.arch.as_str(), self.classes);
        let found = (saved.fold, saved.seed, saved.arch.as_str(), saved.classes);
        if expected != found {
            return Err(CheckpointError(format!(
                "checkpoint is for (fold, seed, arch, classes) = {found:?}, this task is {expected:?}"
            ))
            .into());
        }
        if saved.epochs_done > task.config.train.epochs {
            return Err(CheckpointError(format!(
                "checkpoint has {} epochs done but the task trains {}",
                saved.epochs_done, task.config.train.epochs
            ))
            .into());
        }
        let mut take = |name: &str| tensors.remove(name);
        restore_named(vs, |name| take(&format!("model.{name}"))).map_err(CheckpointError)?;
        adam.restore(saved.adam, |name| take(name))
            .map_err(CheckpointError)?;
        let best_names: Vec<String> = tensors
            .keys()
            .filter(|n| n.starts_with("best."))
            .cloned()
            .collect();
        let best = if best_names.is_empty() {
            None
        } else {
            let map: HashMap<String, Tensor> = best_names
                .into_iter()
                .filter_map(|n| {
                    tensors
                        .remove(&n)
                        .map(|t| (n["best.".len()..].to_string(), t.to_device(device)))
                })
                .collect();
            Some(Snapshot(map))
        };
        if let Some(state) = saved.scaler
            && let Some(scaler) = scaler.as_mut()
        {
            *scaler = GradScaler::from_state(state, device);
        }
        self.epochs_done = saved.epochs_done;
        self.best = saved.best;
        self.early_stopping = saved.early_stopping;
        self.reduce_lr = saved.reduce_lr;
        self.history = saved.history;
        self.partial_epoch = match saved.partial_epoch {
            Some(p) if p.epoch != saved.epochs_done + 1 => {
                return Err(CheckpointError(format!(
                    "checkpoint stopped part way through epoch {} but has {} epochs done",
                    p.epoch, saved.epochs_done
                ))
                .into());
            }
            partial => partial,
        };
        Ok(best)
    }
}
