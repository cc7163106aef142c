//! The job configuration (`job.toml`). Every default is the seed notebook's value.

use serde::{Deserialize, Serialize};

use crate::{BlobHash, ProtoError};

/// Most folds a job may ask for: each one is a training run and a worker slot's time.
pub const MAX_FOLDS: u32 = 100;
/// Largest `train.image_size` in pixels per side. DenseNet121 at 4096 px needs tens of GB
/// of activations for a single image; the seed trains at 229.
pub const MAX_IMAGE_SIZE: u32 = 4096;
/// Largest `train.batch_size` (and a prediction's batch size).
pub const MAX_BATCH_SIZE: u32 = 4096;
/// Largest `model.head_units`. At this width the head's dense layer, with Adam's two
/// moments, adds about 200 MB to a checkpoint: well under the coordinator's payload limit.
pub const MAX_HEAD_UNITS: u32 = 16_384;
/// Largest `train.cache_bytes` (1 TiB): more RAM than any one fold's images need.
pub const MAX_CACHE_BYTES: u64 = 1 << 40;
/// Largest `train.loader_threads` and `train.torch_threads`.
pub const MAX_THREADS: u32 = 1024;
/// Largest `train.max_attempts`.
pub const MAX_ATTEMPTS: u32 = 100;

/// How `model.pretrained` names its blob: the hash's algorithm, then its hex digits.
pub const PRETRAINED_PREFIX: &str = "blake3:";

/// `model.pretrained` as `"blake3:<hex>"`: a reference to an uploaded blob, never a path.
mod pretrained_blob {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::PRETRAINED_PREFIX;
    use crate::BlobHash;

    pub fn serialize<S: Serializer>(blob: &Option<BlobHash>, s: S) -> Result<S::Ok, S::Error> {
        match blob {
            Some(hash) => s.serialize_str(&format!("{PRETRAINED_PREFIX}{}", hash.to_hex())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BlobHash>, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_pretrained(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses `"blake3:<hex>"`; the error names `model.pretrained` and says how to set it.
pub fn parse_pretrained(text: &str) -> Result<BlobHash, String> {
    text.strip_prefix(PRETRAINED_PREFIX)
        .and_then(|hex| hex.parse().ok())
        .ok_or_else(|| {
            format!(
                "model.pretrained = {text:?} is not a blob hash ({PRETRAINED_PREFIX}<64 hex digits>); \
                 workers do not read paths: pass the weights file with --pretrained on submit or run, \
                 which uploads it"
            )
        })
}

/// A whole job's configuration, as read from TOML and stored beside the results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct JobConfig {
    pub split: SplitConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    pub folds: u32,
    pub seed: u64,
    pub shuffle: bool,
    /// Column holding the group (e.g. video id); folds never share a group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_column: Option<String>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            seed: 42,
            shuffle: true,
            group_column: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Densenet121,
    /// Growth 8, blocks 2-2-2-2: for tests and CPU demos.
    DensenetTiny,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Densenet121 => "densenet121",
            Arch::DensenetTiny => "densenet-tiny",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    Max,
    Avg,
}

/// The backbone's BatchNorm hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackboneBn {
    /// Keras' DenseNet121: momentum 0.99 in Keras terms (0.01 as PyTorch counts it, the weight
    /// of the new batch) and epsilon 1.001e-5, as the notebook trained.
    Keras,
    /// torchvision's: momentum 0.1 and epsilon 1e-5.
    Torchvision,
}

impl BackboneBn {
    /// PyTorch-convention momentum: the weight of each new batch in the running statistics.
    pub fn momentum(self) -> f64 {
        match self {
            BackboneBn::Keras => 0.01,
            BackboneBn::Torchvision => 0.1,
        }
    }

    pub fn eps(self) -> f64 {
        match self {
            BackboneBn::Keras => 1.001e-5,
            BackboneBn::Torchvision => 1e-5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub arch: Arch,
    /// The blob of a safetensors file with torchvision parameter names (`features.*`),
    /// written `"blake3:<hex>"`. The CLI's `--pretrained F` uploads the file and sets it;
    /// workers pull the blob by hash and never read a path a job names.
    #[serde(skip_serializing_if = "Option::is_none", with = "pretrained_blob")]
    pub pretrained: Option<BlobHash>,
    pub backbone_bn: BackboneBn,
    pub pooling: Pooling,
    pub head_units: u32,
    pub head_l1: f64,
    pub head_l2: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Densenet121,
            pretrained: None,
            backbone_bn: BackboneBn::Keras,
            pooling: Pooling::Max,
            head_units: 2048,
            head_l1: 0.01,
            head_l2: 0.01,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalize {
    /// x / 255, as in the seed.
    Unit,
    /// x / 255, then ImageNet mean and std per channel.
    Imagenet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// fp16 autocast with a dynamic loss scaler on CUDA; fp32 (with a warning) on CPU.
    Amp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeights {
    None,
    /// Inverse class frequency, scaled so the weights average to one over the rows.
    Balanced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// One source pixel per output pixel: Keras' `flow_from_dataframe` default, which the
    /// seed used (PIL's `NEAREST`).
    Nearest,
    /// Averages over the source footprint when shrinking, like PIL's `BILINEAR`.
    Bilinear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Augment {
    Hflip,
    Vflip,
    Rot90,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub image_size: u32,
    pub batch_size: u32,
    pub epochs: u32,
    pub lr: f64,
    /// Keras-style decay: lr / (1 + decay * iterations).
    pub decay: f64,
    pub label_smoothing: f64,
    pub normalize: Normalize,
    pub resize: Resize,
    pub early_stopping_patience: u32,
    pub reduce_lr_factor: f64,
    pub reduce_lr_patience: u32,
    pub reduce_lr_min_delta: f64,
    pub precision: Precision,
    pub class_weights: ClassWeights,
    pub augment: Vec<Augment>,
    /// Attempts per fold before the job fails.
    pub max_attempts: u32,
    /// RAM budget for decoded images, per fold.
    pub cache_bytes: u64,
    /// Loader threads decoding and resizing images; 0 picks from the core count.
    pub loader_threads: u32,
    /// Intra-op threads for libtorch on the training thread; 0 picks from the core count.
    pub torch_threads: u32,
    /// Seconds between latest checkpoints: after an epoch, one is written only when this
    /// long has passed since the last (or since the attempt began); 0 writes one after
    /// every epoch. A worker that dies loses at most this much training plus an epoch; one
    /// told to stop still checkpoints the epoch in progress.
    pub checkpoint_interval_s: u32,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            image_size: 229,
            batch_size: 32,
            epochs: 10,
            lr: 1e-3,
            decay: 1e-4,
            label_smoothing: 0.1,
            normalize: Normalize::Unit,
            resize: Resize::Nearest,
            early_stopping_patience: 5,
            reduce_lr_factor: 0.1,
            reduce_lr_patience: 5,
            reduce_lr_min_delta: 1e-4,
            precision: Precision::Fp32,
            class_weights: ClassWeights::None,
            augment: Vec::new(),
            max_attempts: 3,
            cache_bytes: 2 << 30,
            loader_threads: 0,
            torch_threads: 0,
            checkpoint_interval_s: 30,
        }
    }
}

impl JobConfig {
    /// Parses TOML; unknown keys are errors so a typo never silently falls back to a default.
    pub fn from_toml(text: &str) -> Result<Self, ProtoError> {
        let config: JobConfig =
            toml::from_str(text).map_err(|e| ProtoError::InvalidConfig(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a config stored by an earlier version, where `model.pretrained` could be a
    /// path on the workers. Such a path is dropped and handed back, so the job's record
    /// still reads (its results, its history) and the caller decides what the lost
    /// weights mean for it; anything else is read exactly as [`JobConfig::from_toml`].
    pub fn from_stored_toml(text: &str) -> Result<(Self, Option<String>), ProtoError> {
        let strict = match Self::from_toml(text) {
            Ok(config) => return Ok((config, None)),
            Err(e) => e,
        };
        let Ok(mut table) = text.parse::<toml::Table>() else {
            return Err(strict);
        };
        let legacy = table
            .get_mut("model")
            .and_then(toml::Value::as_table_mut)
            .and_then(|model| match model.get("pretrained") {
                Some(toml::Value::String(path)) if parse_pretrained(path).is_err() => {
                    let path = path.clone();
                    model.remove("pretrained");
                    Some(path)
                }
                _ => None,
            });
        match legacy {
            Some(path) => Ok((Self::from_toml(&table.to_string())?, Some(path))),
            None => Err(strict),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a JobConfig always serialises")
    }

    /// Rejects values no training run could use, naming the key at fault.
    pub fn validate(&self) -> Result<(), ProtoError> {
        let bad = |key: &str, why: String| Err(ProtoError::InvalidConfig(format!("{key}: {why}")));
        if self.split.folds < 2 {
            return bad(
                "split.folds",
                format!("must be at least 2, got {}", self.split.folds),
            );
        }
        self.check_upper_limits()?;
        let t = &self.train;
        if t.image_size < 32 {
            return bad(
                "train.image_size",
                format!("must be at least 32 px, got {}", t.image_size),
            );
        }
        if t.batch_size == 0 {
            return bad("train.batch_size", "must be at least 1".into());
        }
        if t.epochs == 0 {
            return bad("train.epochs", "must be at least 1".into());
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return bad(
                "train.lr",
                format!("must be a positive number, got {}", t.lr),
            );
        }
        if !(t.decay.is_finite() && t.decay >= 0.0) {
            return bad("train.decay", format!("must be >= 0, got {}", t.decay));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return bad(
                "train.label_smoothing",
                format!("must be in [0, 1), got {}", t.label_smoothing),
            );
        }
        if !(t.reduce_lr_factor > 0.0 && t.reduce_lr_factor < 1.0) {
            return bad(
                "train.reduce_lr_factor",
                format!("must be in (0, 1), got {}", t.reduce_lr_factor),
            );
        }
        if t.max_attempts == 0 {
            return bad("train.max_attempts", "must be at least 1".into());
        }
        let m = &self.model;
        if m.head_units == 0 {
            return bad("model.head_units", "must be at least 1".into());
        }
        if m.head_l1 < 0.0 || m.head_l2 < 0.0 {
            return bad("model.head_l1/head_l2", "must be >= 0".into());
        }
        Ok(())
    }

    /// Rejects sizes and counts so large that a worker or the coordinator would run out of
    /// memory, threads or disk before training got anywhere.
    fn check_upper_limits(&self) -> Result<(), ProtoError> {
        let (s, m, t) = (&self.split, &self.model, &self.train);
        let limits: [(&str, u64, u64); 8] = [
            ("split.folds", s.folds.into(), MAX_FOLDS.into()),
            (
                "model.head_units",
                m.head_units.into(),
                MAX_HEAD_UNITS.into(),
            ),
            (
                "train.image_size",
                t.image_size.into(),
                MAX_IMAGE_SIZE.into(),
            ),
            (
                "train.batch_size",
                t.batch_size.into(),
                MAX_BATCH_SIZE.into(),
            ),
            ("train.cache_bytes", t.cache_bytes, MAX_CACHE_BYTES),
            (
                "train.loader_threads",
                t.loader_threads.into(),
                MAX_THREADS.into(),
            ),
            (
                "train.torch_threads",
                t.torch_threads.into(),
                MAX_THREADS.into(),
            ),
            (
                "train.max_attempts",
                t.max_attempts.into(),
                MAX_ATTEMPTS.into(),
            ),
        ];
        match limits.iter().find(|(_, value, max)| value > max) {
            Some((key, value, max)) => Err(ProtoError::InvalidConfig(format!(
                "{key} = {value} exceeds the maximum {max}"
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_seed_recipe() {
        let c = JobConfig::default();
        assert_eq!(
            (c.split.folds, c.split.seed, c.split.shuffle),
            (5, 42, true)
        );
        assert_eq!(c.model.arch, Arch::Densenet121);
        assert_eq!(c.model.pooling, Pooling::Max);
        assert_eq!(c.model.head_units, 2048);
        assert_eq!(c.model.backbone_bn, BackboneBn::Keras);
        assert_eq!(
            (c.model.backbone_bn.momentum(), c.model.backbone_bn.eps()),
            (0.01, 1.001e-5)
        );
        assert_eq!(c.train.resize, Resize::Nearest);
        assert_eq!(
            (c.train.image_size, c.train.batch_size, c.train.epochs),
            (229, 32, 10)
        );
        assert_eq!(
            (c.train.lr, c.train.decay, c.train.label_smoothing),
            (1e-3, 1e-4, 0.1)
        );
        assert_eq!(c.train.early_stopping_patience, 5);
        assert_eq!(
            (c.train.reduce_lr_factor, c.train.reduce_lr_patience),
            (0.1, 5)
        );
        c.validate().unwrap();
    }

    #[test]
    fn toml_round_trip_and_partial_files() {
        let c = JobConfig::from_toml("[train]\nepochs = 3\naugment = [\"hflip\"]\n").unwrap();
        assert_eq!(c.train.epochs, 3);
        assert_eq!(c.train.augment, vec![Augment::Hflip]);
        assert_eq!(c.train.batch_size, 32);
        assert_eq!(JobConfig::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = JobConfig::from_toml("[train]\nepoch = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("epoch"), "{err}");
        let err = JobConfig::from_toml("[train]\nimage_size = 16\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("train.image_size") && err.contains("16"),
            "{err}"
        );
        let err = JobConfig::from_toml("[model]\narch = \"resnet\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resnet"), "{err}");
    }

    #[test]
    fn pretrained_weights_are_named_by_blob_hash() {
        let hash = BlobHash::of(b"densenet weights");
        let text = format!("[model]\npretrained = \"blake3:{}\"\n", hash.to_hex());
        let c = JobConfig::from_toml(&text).unwrap();
        assert_eq!(c.model.pretrained, Some(hash));
        assert!(
            c.to_toml()
                .contains(&format!("pretrained = \"blake3:{hash}\""))
        );
        assert_eq!(JobConfig::from_toml(&c.to_toml()).unwrap(), c);
        // Unset stays unset, and is not written.
        let c = JobConfig::default();
        assert!(!c.to_toml().contains("pretrained"));
        assert_eq!(
            JobConfig::from_toml(&c.to_toml()).unwrap().model.pretrained,
            None
        );
    }

    #[test]
    fn a_stored_config_with_a_pretrained_path_still_reads_without_it() {
        let mut c = JobConfig::default();
        c.train.epochs = 7;
        let stored = c.to_toml().replace(
            "[model]\n",
            "[model]\npretrained = \"/models/densenet121.safetensors\"\n",
        );
        assert!(JobConfig::from_toml(&stored).is_err());
        let (read, legacy) = JobConfig::from_stored_toml(&stored).unwrap();
        assert_eq!(read, c);
        assert_eq!(legacy.as_deref(), Some("/models/densenet121.safetensors"));
        // A current config reads as it is; another fault is still an error.
        assert_eq!(
            JobConfig::from_stored_toml(&c.to_toml()).unwrap(),
            (c, None)
        );
        assert!(JobConfig::from_stored_toml("[train]\nepochs = 0\n").is_err());
    }

    #[test]
    fn a_pretrained_path_or_malformed_hash_is_refused_naming_the_key() {
        let hex = BlobHash::of(b"w").to_hex();
        for value in [
            "/models/densenet121.safetensors".to_string(),
            "densenet121.safetensors".to_string(),
            hex.clone(),
            format!("sha256:{hex}"),
            format!("blake3:{}", &hex[..63]),
            "blake3:".to_string(),
        ] {
            let err = JobConfig::from_toml(&format!("[model]\npretrained = {value:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("invalid config: "), "{err}");
            assert!(
                err.contains(&format!("model.pretrained = {value:?} is not a blob hash")),
                "{err}"
            );
            assert!(err.contains("--pretrained on submit or run"), "{err}");
        }
    }

    #[test]
    fn sizes_past_their_maximum_are_named_with_the_limit() {
        let cases = [
            (
                "[split]\nfolds = 101\n",
                "split.folds = 101 exceeds the maximum 100",
            ),
            (
                "[train]\nimage_size = 100000\n",
                "train.image_size = 100000 exceeds the maximum 4096",
            ),
            (
                "[train]\nbatch_size = 4097\n",
                "train.batch_size = 4097 exceeds the maximum 4096",
            ),
            (
                "[model]\nhead_units = 1000000\n",
                "model.head_units = 1000000 exceeds the maximum 16384",
            ),
            (
                "[train]\ncache_bytes = 1099511627777\n",
                "train.cache_bytes = 1099511627777 exceeds the maximum 1099511627776",
            ),
            (
                "[train]\nloader_threads = 5000\n",
                "train.loader_threads = 5000 exceeds the maximum 1024",
            ),
            (
                "[train]\ntorch_threads = 1025\n",
                "train.torch_threads = 1025 exceeds the maximum 1024",
            ),
            (
                "[train]\nmax_attempts = 1000\n",
                "train.max_attempts = 1000 exceeds the maximum 100",
            ),
        ];
        for (toml, expected) in cases {
            let err = JobConfig::from_toml(toml).unwrap_err().to_string();
            assert_eq!(err, format!("invalid config: {expected}"), "{toml}");
        }
    }

    #[test]
    fn sizes_at_their_maximum_are_accepted() {
        let mut c = JobConfig::default();
        c.split.folds = MAX_FOLDS;
        c.model.head_units = MAX_HEAD_UNITS;
        c.train.image_size = MAX_IMAGE_SIZE;
        c.train.batch_size = MAX_BATCH_SIZE;
        c.train.cache_bytes = MAX_CACHE_BYTES;
        c.train.loader_threads = MAX_THREADS;
        c.train.torch_threads = MAX_THREADS;
        c.train.max_attempts = MAX_ATTEMPTS;
        c.validate().unwrap();
        assert_eq!(JobConfig::from_toml(&c.to_toml()).unwrap(), c);
    }
}
