//! The latest-checkpoint format: one self-describing safetensors file whose tensors are
//! the weights (`model.*`), the best weights so far (`best.*`) and the Adam moments
//! (`adam.m.*`, `adam.v.*`), and whose metadata holds the rest of the state as JSON under
//! the key `foldtrain.resume`.

use std::collections::HashMap;

use foldtrain_proto::task::EpochRecord;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::adam::AdamState;
use super::amp::ScalerState;
use super::callbacks::{BestCheckpoint, EarlyStopping, ReduceLrOnPlateau};
use super::meter::EpochMeter;

const METADATA_KEY: &str = "foldtrain.resume";
pub const FORMAT_VERSION: u32 = 1;

/// Everything but the tensors that a resumed fold needs to continue bit-identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    pub version: u32,
    /// Identity checks, so a checkpoint is never resumed into another fold or model.
    pub fold: u32,
    pub seed: u64,
    pub arch: String,
    pub classes: u32,
    /// Epochs completed (one-based count); training continues at `epochs_done + 1`.
    pub epochs_done: u32,
    pub adam: AdamState,
    pub best: BestCheckpoint,
    pub early_stopping: EarlyStopping,
    pub reduce_lr: ReduceLrOnPlateau,
    pub scaler: Option<ScalerState>,
    pub history: Vec<EpochRecord>,
    /// Set when the checkpoint was taken part way through epoch `epochs_done + 1` (a
    /// draining worker handing the fold back): training continues at its next batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial_epoch: Option<PartialEpoch>,
    /// Randomness is never carried from epoch to epoch: shuffles and augmentations are
    /// drawn from (seed, fold, epoch) and the global generator is seeded from (seed, fold)
    /// only for initialisation. Recorded so the file documents it.
    pub rng: String,
}

/// How far an unfinished epoch got: its first `batches_done` training batches are in the
/// weights, and `meter` has counted their rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialEpoch {
    pub epoch: u32,
    pub batches_done: u32,
    pub meter: EpochMeter,
}

#[derive(Debug, thiserror::Error)]
#[error("checkpoint: {0}")]
pub struct CheckpointError(pub String);

fn dtype_of(kind: Kind) -> Result<Dtype, CheckpointError> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => {
            return Err(CheckpointError(format!(
                "unsupported tensor kind {other:?}"
            )));
        }
    })
}

fn kind_of(dtype: Dtype) -> Result<Kind, CheckpointError> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        other => return Err(CheckpointError(format!("unsupported dtype {other:?}"))),
    })
}

/// The raw little-endian bytes of a tensor, copied to the CPU.
fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>, CheckpointError> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .contiguous()
        .flatten(0, -1);
    let bytes = flat.view_dtype(Kind::Uint8);
    Vec::<u8>::try_from(&bytes).map_err(|e| CheckpointError(format!("reading tensor bytes: {e}")))
}

/// Serializes the state and the named tensors into one safetensors buffer.
pub fn encode(
    state: &ResumeState,
    tensors: &[(String, &Tensor)],
) -> Result<Vec<u8>, CheckpointError> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let dtype = dtype_of(t.kind())?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype, shape, tensor_bytes(t)?));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, dtype, shape, bytes) in &owned {
        let view = TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| CheckpointError(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    let json = serde_json::to_string(state).map_err(|e| CheckpointError(e.to_string()))?;
    let metadata = HashMap::from([(METADATA_KEY.to_string(), json)]);
    safetensors::tensor::serialize(views, Some(metadata))
        .map_err(|e| CheckpointError(e.to_string()))
}

/// Parses a buffer written by [`encode`]: the state and every tensor, on the CPU.
pub fn decode(bytes: &[u8]) -> Result<(ResumeState, HashMap<String, Tensor>), CheckpointError> {
    let (_, metadata) = SafeTensors::read_metadata(bytes)
        .map_err(|e| CheckpointError(format!("not a safetensors file: {e}")))?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(METADATA_KEY))
        .ok_or_else(|| {
            CheckpointError(format!(
                "no `{METADATA_KEY}` metadata: not a resume checkpoint"
            ))
        })?;
    let state: ResumeState = serde_json::from_str(json)
        .map_err(|e| CheckpointError(format!("bad `{METADATA_KEY}` metadata: {e}")))?;
    if state.version != FORMAT_VERSION {
        return Err(CheckpointError(format!(
            "format version {} is not supported (expected {FORMAT_VERSION})",
            state.version
        )));
    }
    let file = SafeTensors::deserialize(bytes).map_err(|e| CheckpointError(e.to_string()))?;
    let mut tensors = HashMap::new();
    for (name, view) in file.tensors() {
        let kind = kind_of(view.dtype())
            .map_err(|e| CheckpointError(format!("tensor `{name}`: {}", e.0)))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .map_err(|e| CheckpointError(format!("tensor `{name}`: {e}")))?;
        tensors.insert(name, t);
    }
    Ok((state, tensors))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_state() -> ResumeState {
        let mut best = BestCheckpoint::default();
        best.on_epoch_end(1, 0.7);
        ResumeState {
            version: FORMAT_VERSION,
            fold: 2,
            seed: 42,
            arch: "densenet-tiny".into(),
            classes: 3,
            epochs_done: 1,
            adam: AdamState {
                iterations: 12,
                lr: 1e-3,
                decay: 1e-4,
            },
            best,
            early_stopping: EarlyStopping::new(5),
            reduce_lr: ReduceLrOnPlateau::new(0.1, 5, 1e-4),
            scaler: None,
            history: vec![EpochRecord {
                epoch: 1,
                val_loss: 0.7,
                ..Default::default()
            }],
            partial_epoch: None,
            rng: "derived from (seed, fold, epoch)".into(),
        }
    }

    #[test]
    fn round_trips_state_and_tensors_bit_for_bit() {
        let w = crate::model::seeded(11, || Tensor::randn([3, 4], (Kind::Float, Device::Cpu)));
        let scalar = Tensor::from_slice(&[7i64]).squeeze();
        let half = crate::model::seeded(11, || Tensor::randn([5], (Kind::Half, Device::Cpu)));
        let bytes = encode(
            &sample_state(),
            &[
                ("model.w".into(), &w),
                ("model.n".into(), &scalar),
                ("adam.m.h".into(), &half),
            ],
        )
        .unwrap();
        let (state, tensors) = decode(&bytes).unwrap();
        assert_eq!(state, sample_state());
        assert!(tensors["model.w"].equal(&w));
        assert_eq!(tensors["model.n"].size(), Vec::<i64>::new());
        assert_eq!(tensors["model.n"].int64_value(&[]), 7);
        assert!(tensors["adam.m.h"].equal(&half));
    }

    #[test]
    fn every_float_of_the_state_comes_back_exactly() {
        // serde_json parses this one 1 ulp off unless its `float_roundtrip` is on, and a
        // resumed fold then reports a best val_loss that is not its first attempt's.
        let mut state = sample_state();
        let val_loss = 1.713_855_159_282_684_3;
        state.best.best = val_loss;
        state.history[0].val_loss = val_loss;
        let w = Tensor::zeros([1], (Kind::Float, Device::Cpu));
        let bytes = encode(&state, &[("model.w".into(), &w)]).unwrap();
        let (back, _) = decode(&bytes).unwrap();
        assert_eq!(back.best.best.to_bits(), val_loss.to_bits());
        assert_eq!(back, state);
    }

    #[test]
    fn rejects_foreign_files_with_a_clear_message() {
        let err = decode(b"not a checkpoint").unwrap_err().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
        let w = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        let plain = w.to_kind(Kind::Float);
        let view_bytes = tensor_bytes(&plain).unwrap();
        let view = TensorView::new(Dtype::F32, vec![2], &view_bytes).unwrap();
        let weights_only = safetensors::tensor::serialize([("w", view)], None).unwrap();
        let err = decode(&weights_only).unwrap_err().to_string();
        assert!(err.contains("not a resume checkpoint"), "{err}");
    }
}
