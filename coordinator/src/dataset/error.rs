//! Why a data set cannot be used.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DatasetError {
    #[error(
        "the data set has {errors} error(s); `foldtrain check-data` lists them all. first:\n{first}"
    )]
    Invalid { errors: usize, first: String },
    #[error(
        "no data set given: pass --train-csv and --train-dir (with optional --test-csv and --test-dir), or --image-folder (with optional --metadata)"
    )]
    NoLayout,
    #[error("no images to predict in {0}")]
    NoImages(String),
}
