//! The job configuration flags `submit` and `run` share: `--config job.toml` plus one
//! override flag per cheap-to-change setting, resolved into a validated `JobConfig`.

use std::path::PathBuf;

use clap::Args;
use foldtrain_proto::JobConfig;
use foldtrain_proto::config::{
    Arch, Augment, BackboneBn, ClassWeights, ModelConfig, Normalize, Pooling, Precision, Resize,
    SplitConfig, TrainConfig,
};
use serde::de::DeserializeOwned;
use serde::de::value::{Error as ValueError, StrDeserializer};

use super::dataset_args::DatasetArgs;
use super::pretrained_file::{PretrainedFileError, hash_weights_file};
use crate::dataset::Entry;

/// Why the job configuration could not be resolved; every variant names its source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{flag} {value}: {message}")]
    Override {
        flag: &'static str,
        value: String,
        message: String,
    },
    #[error(transparent)]
    Pretrained(#[from] PretrainedFileError),
    #[error("--group-column {flag:?} disagrees with split.group_column = {file:?} in {path}")]
    GroupColumn {
        flag: String,
        file: String,
        path: PathBuf,
    },
}

/// Parses a lowercase config value (e.g. `densenet-tiny`, `amp`) the way the TOML does.
fn config_value<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    T::deserialize(StrDeserializer::<ValueError>::new(text)).map_err(|e| e.to_string())
}

/// A flag's value as the user typed it (enums in their lowercase config spelling).
fn shown<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

/// The job configuration: a TOML file and flags that override its values.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// Job configuration (TOML, see `foldtrain default-config`); the flags below override it.
    #[arg(long, env = "FOLDTRAIN_CONFIG", help_heading = "Job configuration")]
    pub config: Option<PathBuf>,
    /// Folds (k) [split.folds].
    #[arg(long, env = "FOLDTRAIN_FOLDS", help_heading = "Job configuration")]
    pub folds: Option<u32>,
    /// Seed of the fold split [split.seed].
    #[arg(long, env = "FOLDTRAIN_SEED", help_heading = "Job configuration")]
    pub seed: Option<u64>,
    /// Keep each class's rows in file order when splitting [split.shuffle = false].
    #[arg(long, env = "FOLDTRAIN_NO_SHUFFLE", help_heading = "Job configuration")]
    pub no_shuffle: bool,
    /// Maximum epochs per fold [train.epochs].
    #[arg(long, env = "FOLDTRAIN_EPOCHS", help_heading = "Job configuration")]
    pub epochs: Option<u32>,
    /// Images per batch [train.batch_size].
    #[arg(long, env = "FOLDTRAIN_BATCH_SIZE", help_heading = "Job configuration")]
    pub batch_size: Option<u32>,
    /// Side of the square input, in pixels [train.image_size].
    #[arg(long, env = "FOLDTRAIN_IMAGE_SIZE", help_heading = "Job configuration")]
    pub image_size: Option<u32>,
    /// Adam learning rate [train.lr].
    #[arg(long, env = "FOLDTRAIN_LR", help_heading = "Job configuration")]
    pub lr: Option<f64>,
    /// Keras-style learning-rate decay per iteration [train.decay].
    #[arg(long, env = "FOLDTRAIN_DECAY", help_heading = "Job configuration")]
    pub decay: Option<f64>,
    /// Label smoothing in [0, 1) [train.label_smoothing].
    #[arg(
        long,
        env = "FOLDTRAIN_LABEL_SMOOTHING",
        help_heading = "Job configuration"
    )]
    pub label_smoothing: Option<f64>,
    /// Early-stopping patience in epochs [train.early_stopping_patience].
    #[arg(long, env = "FOLDTRAIN_PATIENCE", help_heading = "Job configuration")]
    pub patience: Option<u32>,
    /// Mixed precision: fp32 or amp [train.precision].
    #[arg(long, env = "FOLDTRAIN_PRECISION", value_parser = config_value::<Precision>, help_heading = "Job configuration")]
    pub precision: Option<Precision>,
    /// Class weights in the loss: none or balanced [train.class_weights].
    #[arg(long, env = "FOLDTRAIN_CLASS_WEIGHTS", value_parser = config_value::<ClassWeights>, help_heading = "Job configuration")]
    pub class_weights: Option<ClassWeights>,
    /// Input normalisation: unit or imagenet [train.normalize].
    #[arg(long, env = "FOLDTRAIN_NORMALIZE", value_parser = config_value::<Normalize>, help_heading = "Job configuration")]
    pub normalize: Option<Normalize>,
    /// Resize filter: nearest (the notebook's) or bilinear [train.resize].
    #[arg(long, env = "FOLDTRAIN_RESIZE", value_parser = config_value::<Resize>, help_heading = "Job configuration")]
    pub resize: Option<Resize>,
    /// Augmentations, comma-separated: hflip, vflip, rot90 [train.augment].
    #[arg(long, env = "FOLDTRAIN_AUGMENT", value_delimiter = ',', value_parser = config_value::<Augment>, help_heading = "Job configuration")]
    pub augment: Option<Vec<Augment>>,
    /// Attempts per fold before the job fails [train.max_attempts].
    #[arg(
        long,
        env = "FOLDTRAIN_MAX_ATTEMPTS",
        help_heading = "Job configuration"
    )]
    pub max_attempts: Option<u32>,
    /// Seconds between latest checkpoints, 0 = after every epoch [train.checkpoint_interval_s].
    #[arg(
        long,
        env = "FOLDTRAIN_CHECKPOINT_INTERVAL",
        help_heading = "Job configuration"
    )]
    pub checkpoint_interval: Option<u32>,
    /// Image-loading threads per fold, 0 = from the core count [train.loader_threads].
    #[arg(
        long,
        env = "FOLDTRAIN_LOADER_THREADS",
        help_heading = "Job configuration"
    )]
    pub loader_threads: Option<u32>,
    /// libtorch threads per fold, 0 = from the core count [train.torch_threads].
    #[arg(
        long,
        env = "FOLDTRAIN_TORCH_THREADS",
        help_heading = "Job configuration"
    )]
    pub torch_threads: Option<u32>,
    /// Network: densenet121 or densenet-tiny [model.arch].
    #[arg(long, env = "FOLDTRAIN_ARCH", value_parser = config_value::<Arch>, help_heading = "Job configuration")]
    pub arch: Option<Arch>,
    /// Safetensors file of torchvision DenseNet weights, on this machine: it is uploaded
    /// with the images and workers pull it by hash [model.pretrained = "blake3:<hash>"].
    #[arg(long, env = "FOLDTRAIN_PRETRAINED", help_heading = "Job configuration")]
    pub pretrained: Option<PathBuf>,
    /// Backbone BatchNorm: keras (momentum 0.99, eps 1.001e-5) or torchvision [model.backbone_bn].
    #[arg(long, env = "FOLDTRAIN_BACKBONE_BN", value_parser = config_value::<BackboneBn>, help_heading = "Job configuration")]
    pub backbone_bn: Option<BackboneBn>,
    /// Global pooling before the head: max or avg [model.pooling].
    #[arg(long, env = "FOLDTRAIN_POOLING", value_parser = config_value::<Pooling>, help_heading = "Job configuration")]
    pub pooling: Option<Pooling>,
    /// Units of the dense head layer [model.head_units].
    #[arg(long, env = "FOLDTRAIN_HEAD_UNITS", help_heading = "Job configuration")]
    pub head_units: Option<u32>,
}

/// A resolved job configuration, and the `--pretrained` file it names, to upload.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub config: JobConfig,
    pub pretrained: Option<Entry>,
}

/// One applied override: the config key it set, the flag and the value given.
struct Applied {
    key: &'static str,
    flag: &'static str,
    value: String,
}

impl ConfigArgs {
    /// The validated job configuration: the file (or the defaults), then every flag
    /// given. Errors name the file and key, or the flag and value, at fault.
    ///
    /// The group column is reconciled both ways: `--group-column` sets
    /// `split.group_column`, and a group column from the file makes the data set be
    /// read with groups.
    ///
    /// `--pretrained F` is checked and hashed here, before anything is uploaded: the
    /// configuration names the file by its blob hash.
    pub fn resolve(&self, dataset: &mut DatasetArgs) -> Result<Resolved, ConfigError> {
        let pretrained = self
            .pretrained
            .as_deref()
            .map(hash_weights_file)
            .transpose()?;
        let mut config = self.resolve_config(dataset)?;
        if let Some(file) = &pretrained {
            config.model.pretrained = Some(file.hash);
        }
        Ok(Resolved { config, pretrained })
    }

    fn resolve_config(&self, dataset: &mut DatasetArgs) -> Result<JobConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                JobConfig::from_toml(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => JobConfig::default(),
        };
        let applied = self.apply(&mut config);
        match (&dataset.group_column, &config.split.group_column) {
            (Some(flag), Some(file)) if flag != file => {
                return Err(ConfigError::GroupColumn {
                    flag: flag.clone(),
                    file: file.clone(),
                    path: self.config.clone().unwrap_or_default(),
                });
            }
            (Some(flag), _) => config.split.group_column = Some(flag.clone()),
            (None, Some(file)) => dataset.group_column = Some(file.clone()),
            (None, None) => {}
        }
        config.validate().map_err(|e| {
            let message = match &e {
                foldtrain_proto::ProtoError::InvalidConfig(m) => m.clone(),
                other => other.to_string(),
            };
            match applied.iter().find(|a| message.starts_with(a.key)) {
                Some(a) => ConfigError::Override {
                    flag: a.flag,
                    value: a.value.clone(),
                    message,
                },
                // Only flags can make a file that parsed invalid; defaults are valid.
                None => ConfigError::Parse {
                    path: self.config.clone().unwrap_or_default(),
                    message,
                },
            }
        })?;
        Ok(config)
    }

    /// Sets every value a flag was given for; returns what was set.
    fn apply(&self, config: &mut JobConfig) -> Vec<Applied> {
        let mut applied = Overrides::default();
        self.apply_split(&mut config.split, &mut applied);
        self.apply_train(&mut config.train, &mut applied);
        self.apply_model(&mut config.model, &mut applied);
        applied.0
    }

    fn apply_split(&self, s: &mut SplitConfig, o: &mut Overrides) {
        o.set(&self.folds, "--folds", "split.folds", &mut s.folds);
        o.set(&self.seed, "--seed", "split.seed", &mut s.seed);
        if self.no_shuffle {
            s.shuffle = false;
        }
    }

    fn apply_train(&self, t: &mut TrainConfig, o: &mut Overrides) {
        o.set(&self.epochs, "--epochs", "train.epochs", &mut t.epochs);
        o.set(
            &self.batch_size,
            "--batch-size",
            "train.batch_size",
            &mut t.batch_size,
        );
        o.set(&self.lr, "--lr", "train.lr", &mut t.lr);
        o.set(&self.decay, "--decay", "train.decay", &mut t.decay);
        o.set(
            &self.label_smoothing,
            "--label-smoothing",
            "train.label_smoothing",
            &mut t.label_smoothing,
        );
        o.set(
            &self.patience,
            "--patience",
            "train.early_stopping_patience",
            &mut t.early_stopping_patience,
        );
        o.set(
            &self.precision,
            "--precision",
            "train.precision",
            &mut t.precision,
        );
        o.set(
            &self.class_weights,
            "--class-weights",
            "train.class_weights",
            &mut t.class_weights,
        );
        o.set(
            &self.max_attempts,
            "--max-attempts",
            "train.max_attempts",
            &mut t.max_attempts,
        );
        o.set(
            &self.checkpoint_interval,
            "--checkpoint-interval",
            "train.checkpoint_interval_s",
            &mut t.checkpoint_interval_s,
        );
        self.apply_input(t, o);
    }

    /// The overrides of how images are read and fed: size, normalisation, augmentation
    /// and threads.
    fn apply_input(&self, t: &mut TrainConfig, o: &mut Overrides) {
        o.set(
            &self.image_size,
            "--image-size",
            "train.image_size",
            &mut t.image_size,
        );
        o.set(
            &self.normalize,
            "--normalize",
            "train.normalize",
            &mut t.normalize,
        );
        o.set(&self.resize, "--resize", "train.resize", &mut t.resize);
        o.set(&self.augment, "--augment", "train.augment", &mut t.augment);
        o.set(
            &self.loader_threads,
            "--loader-threads",
            "train.loader_threads",
            &mut t.loader_threads,
        );
        o.set(
            &self.torch_threads,
            "--torch-threads",
            "train.torch_threads",
            &mut t.torch_threads,
        );
    }

    fn apply_model(&self, m: &mut ModelConfig, o: &mut Overrides) {
        o.set(&self.arch, "--arch", "model.arch", &mut m.arch);
        o.set(
            &self.backbone_bn,
            "--backbone-bn",
            "model.backbone_bn",
            &mut m.backbone_bn,
        );
        o.set(&self.pooling, "--pooling", "model.pooling", &mut m.pooling);
        o.set(
            &self.head_units,
            "--head-units",
            "model.head_units",
            &mut m.head_units,
        );
    }
}

/// The overrides applied so far, so a validation error can name the flag behind it.
#[derive(Default)]
struct Overrides(Vec<Applied>);

impl Overrides {
    /// Sets `target` to the flag's value, when the flag was given.
    fn set<T: Clone + serde::Serialize>(
        &mut self,
        value: &Option<T>,
        flag: &'static str,
        key: &'static str,
        target: &mut T,
    ) {
        if let Some(value) = value {
            self.0.push(Applied {
                key,
                flag,
                value: shown(value),
            });
            *target = value.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        dataset: DatasetArgs,
        #[command(flatten)]
        config: ConfigArgs,
    }

    fn resolve(args: &[&str]) -> Result<(JobConfig, DatasetArgs), String> {
        let mut h = Harness::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        let resolved = h
            .config
            .resolve(&mut h.dataset)
            .map_err(|e| e.to_string())?;
        if let Some(file) = &resolved.pretrained {
            assert_eq!(resolved.config.model.pretrained, Some(file.hash));
        }
        Ok((resolved.config, h.dataset))
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(
            &path,
            "[split]\nfolds = 3\ngroup_column = \"video_id\"\n[train]\nepochs = 7\nbatch_size = 8\n",
        )
        .unwrap();
        let weights = dir.path().join("densenet121.safetensors");
        std::fs::write(&weights, b"weights").unwrap();
        let (c, dataset) = resolve(&[
            "--config",
            path.to_str().unwrap(),
            "--epochs",
            "2",
            "--arch",
            "densenet-tiny",
            "--precision",
            "amp",
            "--augment",
            "hflip,rot90",
            "--lr",
            "0.01",
            "--no-shuffle",
            "--pretrained",
            weights.to_str().unwrap(),
        ])
        .unwrap();
        assert_eq!(
            (c.split.folds, c.train.epochs, c.train.batch_size),
            (3, 2, 8)
        );
        assert_eq!(c.model.arch, Arch::DensenetTiny);
        assert_eq!(c.train.precision, Precision::Amp);
        assert_eq!(c.train.augment, vec![Augment::Hflip, Augment::Rot90]);
        assert_eq!(c.train.lr, 0.01);
        assert!(!c.split.shuffle);
        assert_eq!(
            c.model.pretrained,
            Some(foldtrain_proto::BlobHash::of(b"weights"))
        );
        // The file's group column makes the data set be read with groups.
        assert_eq!(dataset.group_column.as_deref(), Some("video_id"));

        let (c, _) = resolve(&["--group-column", "patient", "--folds", "4"]).unwrap();
        assert_eq!(c.split.group_column.as_deref(), Some("patient"));
        assert_eq!(c.split.folds, 4);
        assert_eq!(resolve(&[]).unwrap().0, JobConfig::default());
        let err = resolve(&[
            "--config",
            path.to_str().unwrap(),
            "--group-column",
            "patient",
        ])
        .unwrap_err();
        assert!(err.contains("patient") && err.contains("video_id"), "{err}");
    }

    #[test]
    fn errors_name_the_file_key_flag_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.toml");
        std::fs::write(&path, "[train]\nepoch = 3\n").unwrap();
        let err = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(
            err.contains(path.to_str().unwrap()) && err.contains("epoch"),
            "{err}"
        );
        std::fs::write(&path, "[train]\nimage_size = 8\n").unwrap();
        let err = resolve(&["--config", path.to_str().unwrap()]).unwrap_err();
        assert!(
            err.contains("job.toml") && err.contains("train.image_size") && err.contains('8'),
            "{err}"
        );
        let err = resolve(&["--epochs", "0"]).unwrap_err();
        assert!(
            err.starts_with("--epochs 0: train.epochs: must be at least 1"),
            "{err}"
        );
        let err = resolve(&["--label-smoothing", "1.5"]).unwrap_err();
        assert!(err.starts_with("--label-smoothing 1.5:"), "{err}");
        let err = resolve(&["--arch", "resnet50"]).unwrap_err();
        assert!(
            err.contains("resnet50") && err.contains("densenet121"),
            "{err}"
        );
        let err = resolve(&["--config", "/nonexistent/job.toml"]).unwrap_err();
        assert!(err.contains("/nonexistent/job.toml"), "{err}");
    }

    #[test]
    fn a_pretrained_file_that_is_not_there_is_named_before_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.safetensors");
        let err = resolve(&["--pretrained", absent.to_str().unwrap()]).unwrap_err();
        assert!(
            err.starts_with(&format!("--pretrained {}: cannot open", absent.display())),
            "{err}"
        );
        // A job file naming weights by path is refused, naming the key and the flag.
        let job = dir.path().join("job.toml");
        std::fs::write(&job, "[model]\npretrained = \"/models/w.safetensors\"\n").unwrap();
        let err = resolve(&["--config", job.to_str().unwrap()]).unwrap_err();
        assert!(
            err.contains("model.pretrained = \"/models/w.safetensors\" is not a blob hash")
                && err.contains("--pretrained on submit or run"),
            "{err}"
        );
    }
}
