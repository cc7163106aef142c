//! The unit of prediction work (`ShardTask`): a shard of new images and the ensemble to
//! score them with, as a domain type with its checked conversions from the wire.

use crate::config::{JobConfig, MAX_BATCH_SIZE};
use crate::ids::BlobHash;
use crate::task::{ImageRef, config_and_classes};
use crate::{ProtoError, pb};

/// Everything a worker needs to score one shard with a finished job's folds.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardTask {
    pub run_id: String,
    pub shard: u64,
    pub config: JobConfig,
    pub class_names: Vec<String>,
    /// The folds' best weights (safetensors blobs), in fold order.
    pub fold_weights: Vec<BlobHash>,
    pub images: Vec<ImageRef>,
    /// GPU index, or `None` for CPU.
    pub device_index: Option<u32>,
    pub tta_flip: bool,
    /// Images per forward pass.
    pub batch_size: usize,
}

impl TryFrom<pb::ShardTask> for ShardTask {
    type Error = ProtoError;
    fn try_from(p: pb::ShardTask) -> Result<Self, ProtoError> {
        if p.run_id.is_empty() {
            return Err(ProtoError::MissingField("run_id"));
        }
        let config = config_and_classes(p.config, &p.class_names)?;
        if p.fold_weights.is_empty() {
            return Err(ProtoError::invalid("fold_weights", "no fold weights"));
        }
        let fold_weights = p
            .fold_weights
            .iter()
            .enumerate()
            .map(|(fold, raw)| {
                BlobHash::from_slice(raw)
                    .map_err(|e| ProtoError::invalid("fold_weights", format!("fold {fold}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let images = p
            .images
            .into_iter()
            .map(ImageRef::try_from)
            .collect::<Result<_, _>>()?;
        let batch_size = match p.batch_size {
            0 => config.train.batch_size as usize,
            n if n > MAX_BATCH_SIZE => {
                return Err(ProtoError::invalid(
                    "batch_size",
                    format!("{n} exceeds the maximum {MAX_BATCH_SIZE}"),
                ));
            }
            n => n as usize,
        };
        Ok(Self {
            run_id: p.run_id,
            shard: p.shard,
            config,
            class_names: p.class_names,
            fold_weights,
            images,
            device_index: u32::try_from(p.device_index).ok(),
            tta_flip: p.tta_flip,
            batch_size,
        })
    }
}

impl From<&ShardTask> for pb::ShardTask {
    fn from(t: &ShardTask) -> Self {
        Self {
            run_id: t.run_id.clone(),
            shard: t.shard,
            config: Some(pb::JobConfig {
                toml: t.config.to_toml(),
            }),
            class_names: t.class_names.clone(),
            fold_weights: t.fold_weights.iter().map(|h| h.0.to_vec()).collect(),
            images: t.images.iter().map(pb::ImageRef::from).collect(),
            device_index: t.device_index.map_or(-1, |i| i as i32),
            tta_flip: t.tta_flip,
            batch_size: t.batch_size as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> ShardTask {
        ShardTask {
            run_id: "predict-1".into(),
            shard: 3,
            config: JobConfig::default(),
            class_names: vec!["a".into(), "b".into()],
            fold_weights: vec![BlobHash::of(b"fold 0"), BlobHash::of(b"fold 1")],
            images: vec![ImageRef {
                hash: BlobHash::of(b"img"),
                name: "x/1.jpg".into(),
                label: None,
                group: String::new(),
                size: 3,
            }],
            device_index: None,
            tta_flip: true,
            batch_size: 32,
        }
    }

    #[test]
    fn a_shard_task_round_trips() {
        let wire = pb::ShardTask::from(&task());
        assert_eq!(wire.device_index, -1);
        assert_eq!(ShardTask::try_from(wire).unwrap(), task());
    }

    #[test]
    fn malformed_tasks_are_refused_naming_the_field() {
        let mut wire = pb::ShardTask::from(&task());
        wire.fold_weights[1] = vec![1, 2, 3];
        let err = ShardTask::try_from(wire).unwrap_err().to_string();
        assert!(
            err.contains("fold_weights") && err.contains("fold 1"),
            "{err}"
        );

        let mut wire = pb::ShardTask::from(&task());
        wire.fold_weights.clear();
        assert!(ShardTask::try_from(wire).is_err());

        let mut wire = pb::ShardTask::from(&task());
        wire.batch_size = 0;
        let default = JobConfig::default().train.batch_size as usize;
        assert_eq!(ShardTask::try_from(wire).unwrap().batch_size, default);

        let mut wire = pb::ShardTask::from(&task());
        wire.batch_size = MAX_BATCH_SIZE + 1;
        assert_eq!(
            ShardTask::try_from(wire).unwrap_err().to_string(),
            "invalid field `batch_size`: 4097 exceeds the maximum 4096"
        );
    }
}
