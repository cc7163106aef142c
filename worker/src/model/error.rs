//! Errors of model construction and weight files.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read weights file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin} is not a valid safetensors file: {reason}")]
    Format { origin: String, reason: String },
    #[error(
        "{origin} has no tensor {name} (expected shape {expected:?}); is it weights for another architecture?"
    )]
    Missing {
        origin: String,
        name: String,
        expected: Vec<i64>,
    },
    #[error("{origin}: tensor {name} has shape {found:?} but the model expects {expected:?}")]
    Shape {
        origin: String,
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
    #[error(
        "{origin}: tensor {name} is not part of the model; is it weights for another architecture?"
    )]
    Unexpected { origin: String, name: String },
    #[error("{origin}: tensor {name} has unsupported dtype {dtype}")]
    Dtype {
        origin: String,
        name: String,
        dtype: String,
    },
    #[error("libtorch error on {what}: {source}")]
    Torch { what: String, source: tch::TchError },
}
