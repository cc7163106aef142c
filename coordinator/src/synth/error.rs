//! Why a synthetic data set cannot be generated.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SynthError {
    #[error(
        "--train {train} is too small for 14 classes of at least {per_class} images each; use at least {min}"
    )]
    TooFewImages {
        train: usize,
        min: usize,
        per_class: usize,
    },
    #[error("--image-size {0} is out of range; use 16 to 1024 pixels")]
    ImageSize(u32),
    #[error("--folds {0} is out of range; use at least 2")]
    Folds(u32),
    #[error("{} already holds a data set; pass --force to overwrite it", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot encode a jpeg: {0}")]
    Encode(String),
}
