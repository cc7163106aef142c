//! Errors of the input pipeline, each naming the image at fault and saying whether a retry
//! could help.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DataError {
    /// The bytes could not be read (I/O, missing blob); another attempt may succeed.
    #[error("cannot read image {name}: {reason}")]
    Fetch { name: String, reason: String },
    /// The stored blob does not match its content hash; the corrupt copy was removed so a
    /// later attempt fetches it afresh.
    #[error("image {name} is corrupt in {path}: expected blake3 {expected}, got {actual}")]
    HashMismatch {
        name: String,
        path: String,
        expected: String,
        actual: String,
    },
    /// The bytes are not a readable image (zero bytes, truncated, unknown format).
    #[error("cannot decode image {name}: {reason}")]
    Decode { name: String, reason: String },
    /// The image name cannot be used as a path below the source folder.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("batch order refers to image {index}, but there are only {len} images")]
    IndexOutOfRange { index: usize, len: usize },
    #[error("invalid pipeline option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    /// A bug in the pipeline or a dependency; surfaced as an error instead of a hang.
    #[error("image loader thread panicked while building batch {batch}: {message}")]
    LoaderPanic { batch: usize, message: String },
}

impl DataError {
    /// Whether running the fold again may succeed. Corrupt or undecodable images and bad
    /// options fail the same way every time.
    pub fn retryable(&self) -> bool {
        match self {
            DataError::Fetch { .. } | DataError::HashMismatch { .. } => true,
            DataError::Decode { .. }
            | DataError::InvalidName { .. }
            | DataError::IndexOutOfRange { .. }
            | DataError::InvalidOption { .. }
            | DataError::LoaderPanic { .. } => false,
        }
    }

    pub(crate) fn decode(name: &str, reason: impl std::fmt::Display) -> Self {
        DataError::Decode {
            name: name.to_owned(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn fetch(name: &str, reason: impl std::fmt::Display) -> Self {
        DataError::Fetch {
            name: name.to_owned(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_failures_retry_and_bad_images_do_not() {
        assert!(DataError::fetch("a.jpg", "timed out").retryable());
        assert!(!DataError::decode("a.jpg", "truncated").retryable());
        let message = DataError::decode("a.jpg", "file is empty").to_string();
        assert_eq!(message, "cannot decode image a.jpg: file is empty");
    }
}
