//! The unit of work a worker receives (`FoldTask`) and the events it sends back
//! (`FoldEvent`), as domain types, with their checked conversions from the wire.

use crate::config::JobConfig;
use crate::ids::{AttemptId, BlobHash, FoldIndex, JobId};
use crate::states::FailureCause;
use crate::{ProtoError, pb};

/// One image: its content address, the name the user knows it by, and its label index.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRef {
    pub hash: BlobHash,
    pub name: String,
    /// Index into the task's class names; `None` for test rows.
    pub label: Option<u32>,
    /// Group (e.g. video id); empty when the dataset has none.
    pub group: String,
    pub size: u64,
}

/// Everything a worker needs to train one fold.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldTask {
    pub job_id: JobId,
    pub fold: FoldIndex,
    pub attempt: AttemptId,
    pub config: JobConfig,
    pub class_names: Vec<String>,
    pub train: Vec<ImageRef>,
    pub val: Vec<ImageRef>,
    pub test: Vec<ImageRef>,
    /// Serialized latest checkpoint to resume from.
    pub resume: Option<Vec<u8>>,
    /// The bytes of the blob `config.model.pretrained` names, put here by the worker from
    /// its blob cache; never on the wire.
    pub pretrained: Option<Vec<u8>>,
    /// GPU index to train on, or `None` for CPU.
    pub device_index: Option<u32>,
}

/// Per-epoch metrics of one fold, train and validation.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// One-based epoch number, as Keras prints it.
    pub epoch: u32,
    pub loss: f64,
    pub accuracy: f64,
    pub f1: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_f1: f64,
    pub lr: f64,
    pub images_per_sec: f64,
    /// The whole epoch: the training pass plus the validation pass.
    pub seconds: f64,
    /// The validation pass alone, part of `seconds` (0 from workers that predate it).
    #[serde(default)]
    pub val_seconds: f64,
    /// What the training thread spent on this epoch's checkpoints before it sent the
    /// record, outside `seconds`: copying the best weights when val_loss improved, and
    /// encoding the latest checkpoint (streamed after the record).
    #[serde(default)]
    pub checkpoint_seconds: f64,
}

impl EpochRecord {
    /// The training pass alone.
    pub fn train_seconds(&self) -> f64 {
        (self.seconds - self.val_seconds).max(0.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// Weights only (safetensors), the best by val_loss.
    Best,
    /// Everything needed to resume: weights, optimizer, epoch, callbacks, RNG.
    Latest,
}

/// How a fold attempt failed, decided where the error was born.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldFailure {
    pub message: String,
    /// Why, as a typed cause; whether it may be retried is the cause's rule.
    pub cause: FailureCause,
}

impl FoldFailure {
    pub fn new(cause: FailureCause, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            cause,
        }
    }

    /// A lost worker or a full disk can be retried; a NaN loss or a corrupt image cannot.
    pub fn retryable(&self) -> bool {
        self.cause.is_retryable()
    }
}

impl std::fmt::Display for FoldFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.cause, self.message)
    }
}

/// Outcome summary of a finished fold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoldSummary {
    pub best_epoch: u32,
    pub best_val_loss: f64,
    pub epochs_run: u32,
    pub early_stopped: bool,
}

/// What training reports while it runs. Whole payloads here; chunking is the wire's job.
#[derive(Debug, Clone, PartialEq)]
pub enum FoldEvent {
    Progress {
        epoch: u32,
        batch: u32,
        batches: u32,
        loss: f64,
        images_per_sec: f64,
        phase: &'static str,
    },
    Epoch(EpochRecord),
    Checkpoint {
        kind: CheckpointKind,
        epoch: u32,
        bytes: Vec<u8>,
    },
    /// Validation-set (out-of-fold) probabilities, rows in the task's `val` order.
    Oof {
        rows: u32,
        classes: u32,
        probs: Vec<f32>,
    },
    /// Test-set probabilities, rows in the task's `test` order.
    Test {
        rows: u32,
        classes: u32,
        probs: Vec<f32>,
    },
    Done(FoldSummary),
    Failed(FoldFailure),
}

impl TryFrom<pb::ImageRef> for ImageRef {
    type Error = ProtoError;
    fn try_from(p: pb::ImageRef) -> Result<Self, ProtoError> {
        if p.name.is_empty() {
            return Err(ProtoError::MissingField("image.name"));
        }
        let hash = BlobHash::from_slice(&p.hash)
            .map_err(|e| ProtoError::invalid("image.hash", format!("{}: {e}", p.name)))?;
        Ok(Self {
            hash,
            name: p.name,
            label: p.label,
            group: p.group,
            size: p.size,
        })
    }
}

impl From<&ImageRef> for pb::ImageRef {
    fn from(r: &ImageRef) -> Self {
        Self {
            hash: r.hash.0.to_vec(),
            name: r.name.clone(),
            label: r.label,
            group: r.group.clone(),
            size: r.size,
        }
    }
}

/// The task's config, checked, and at least two class names: what every task needs.
pub(crate) fn config_and_classes(
    config: Option<pb::JobConfig>,
    class_names: &[String],
) -> Result<JobConfig, ProtoError> {
    let config = config.ok_or(ProtoError::MissingField("config"))?;
    let config = JobConfig::from_toml(&config.toml)?;
    if class_names.len() < 2 {
        return Err(ProtoError::invalid(
            "class_names",
            format!("need at least 2 classes, got {}", class_names.len()),
        ));
    }
    Ok(config)
}

fn images(
    field: &'static str,
    refs: Vec<pb::ImageRef>,
    classes: usize,
    labelled: bool,
) -> Result<Vec<ImageRef>, ProtoError> {
    refs.into_iter()
        .map(|r| {
            let r = ImageRef::try_from(r)?;
            match r.label {
                Some(l) if l as usize >= classes => Err(ProtoError::invalid(
                    field,
                    format!("{}: label {l} out of range for {classes} classes", r.name),
                )),
                None if labelled => Err(ProtoError::invalid(
                    field,
                    format!("{}: missing label", r.name),
                )),
                _ => Ok(r),
            }
        })
        .collect()
}

impl TryFrom<pb::FoldTask> for FoldTask {
    type Error = ProtoError;
    fn try_from(p: pb::FoldTask) -> Result<Self, ProtoError> {
        if p.job_id.is_empty() {
            return Err(ProtoError::MissingField("job_id"));
        }
        let config = config_and_classes(p.config, &p.class_names)?;
        let classes = p.class_names.len();
        let train = images("train", p.train, classes, true)?;
        let val = images("val", p.val, classes, true)?;
        let test = images("test", p.test, classes, false)?;
        if train.is_empty() {
            return Err(ProtoError::invalid("train", "no training images"));
        }
        if val.is_empty() {
            return Err(ProtoError::invalid("val", "no validation images"));
        }
        let device_index = match p.device_index {
            i if i < 0 => None,
            i => Some(i as u32),
        };
        Ok(Self {
            job_id: JobId::new(p.job_id),
            fold: FoldIndex(p.fold),
            attempt: AttemptId(p.attempt),
            config,
            class_names: p.class_names,
            train,
            val,
            test,
            resume: (!p.resume_checkpoint.is_empty()).then_some(p.resume_checkpoint),
            pretrained: None,
            device_index,
        })
    }
}

impl From<&FoldTask> for pb::FoldTask {
    fn from(t: &FoldTask) -> Self {
        Self {
            job_id: t.job_id.to_string(),
            fold: t.fold.0,
            attempt: t.attempt.0,
            config: Some(pb::JobConfig {
                toml: t.config.to_toml(),
            }),
            class_names: t.class_names.clone(),
            train: t.train.iter().map(Into::into).collect(),
            val: t.val.iter().map(Into::into).collect(),
            test: t.test.iter().map(Into::into).collect(),
            resume_checkpoint: t.resume.clone().unwrap_or_default(),
            resume_blob: Vec::new(),
            device_index: t.device_index.map_or(-1, |i| i as i32),
        }
    }
}

impl From<EpochRecord> for pb::EpochMetrics {
    fn from(r: EpochRecord) -> Self {
        Self {
            epoch: r.epoch,
            loss: r.loss,
            accuracy: r.accuracy,
            f1: r.f1,
            val_loss: r.val_loss,
            val_accuracy: r.val_accuracy,
            val_f1: r.val_f1,
            lr: r.lr,
            images_per_sec: r.images_per_sec,
            seconds: r.seconds,
            val_seconds: r.val_seconds,
            checkpoint_seconds: r.checkpoint_seconds,
        }
    }
}

impl From<pb::EpochMetrics> for EpochRecord {
    fn from(p: pb::EpochMetrics) -> Self {
        Self {
            epoch: p.epoch,
            loss: p.loss,
            accuracy: p.accuracy,
            f1: p.f1,
            val_loss: p.val_loss,
            val_accuracy: p.val_accuracy,
            val_f1: p.val_f1,
            lr: p.lr,
            images_per_sec: p.images_per_sec,
            seconds: p.seconds,
            val_seconds: p.val_seconds,
            checkpoint_seconds: p.checkpoint_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, label: Option<u32>) -> ImageRef {
        ImageRef {
            hash: BlobHash::of(name.as_bytes()),
            name: name.into(),
            label,
            group: String::new(),
            size: 3,
        }
    }

    fn task() -> FoldTask {
        FoldTask {
            job_id: JobId::new("job-1"),
            fold: FoldIndex(2),
            attempt: AttemptId(7),
            config: JobConfig::default(),
            class_names: vec!["a".into(), "b".into()],
            train: vec![image("t1.jpg", Some(0)), image("t2.jpg", Some(1))],
            val: vec![image("v1.jpg", Some(1))],
            test: vec![image("x1.jpg", None)],
            resume: Some(vec![1, 2, 3]),
            pretrained: None,
            device_index: Some(1),
        }
    }

    #[test]
    fn fold_task_round_trips_through_the_wire() {
        let t = task();
        let back = FoldTask::try_from(pb::FoldTask::from(&t)).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn epoch_timings_round_trip_and_default_when_absent() {
        let record = EpochRecord {
            epoch: 3,
            seconds: 10.0,
            val_seconds: 2.5,
            checkpoint_seconds: 0.75,
            ..Default::default()
        };
        assert_eq!(EpochRecord::from(pb::EpochMetrics::from(record)), record);
        assert_eq!(record.train_seconds(), 7.5);
        // A checkpoint written before the timings existed still decodes.
        let old: EpochRecord = toml::from_str(
            "epoch = 1\nloss = 1.0\naccuracy = 0.5\nf1 = 0.5\nval_loss = 1.0\n\
             val_accuracy = 0.5\nval_f1 = 0.5\nlr = 0.001\nimages_per_sec = 10.0\nseconds = 4.0\n",
        )
        .unwrap();
        assert_eq!((old.val_seconds, old.checkpoint_seconds), (0.0, 0.0));
        assert_eq!(old.train_seconds(), 4.0);
    }

    #[test]
    fn malformed_tasks_say_what_is_wrong() {
        let mut p = pb::FoldTask::from(&task());
        p.config = None;
        assert_eq!(
            FoldTask::try_from(p).unwrap_err().to_string(),
            "missing required field `config`"
        );

        let mut p = pb::FoldTask::from(&task());
        p.train[0].label = Some(9);
        let err = FoldTask::try_from(p).unwrap_err().to_string();
        assert!(
            err.contains("t1.jpg") && err.contains("label 9 out of range"),
            "{err}"
        );

        let mut p = pb::FoldTask::from(&task());
        p.val[0].hash = vec![0; 5];
        let err = FoldTask::try_from(p).unwrap_err().to_string();
        assert!(
            err.contains("v1.jpg") && err.contains("expected 32 bytes"),
            "{err}"
        );

        let mut p = pb::FoldTask::from(&task());
        p.train[1].label = None;
        let err = FoldTask::try_from(p).unwrap_err().to_string();
        assert!(err.contains("t2.jpg: missing label"), "{err}");

        let status: tonic::Status = FoldTask::try_from(pb::FoldTask::default())
            .unwrap_err()
            .into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }
}
