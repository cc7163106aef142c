//! Why a prediction cannot go on; each message names the file, image or shard at fault.

use std::path::PathBuf;

use crate::error::CoordinatorError;

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error("model folder {}: {message}", dir.display())]
    ModelDir { dir: PathBuf, message: String },
    #[error(
        "the model folder lacks {}; pass the folder `foldtrain run --out` or `foldtrain results` wrote, with every fold's weights",
        missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingWeights { missing: Vec<PathBuf> },
    #[error("{message}; pass --skip-bad to predict the other images without it")]
    BadImage { name: String, message: String },
    #[error("shard {shard} failed: {message}")]
    Shard { shard: u64, message: String },
    #[error("no worker slot is left to run shard {shard}; the last failure: {message}")]
    NoSlots { shard: u64, message: String },
    #[error(transparent)]
    Store(#[from] CoordinatorError),
}
