//! `--pretrained F`: the weights file on the user's machine, checked and hashed so the job
//! can name it by blob hash and the CLI can upload it with the images.

use std::path::{Path, PathBuf};

use foldtrain_proto::BlobHash;

use crate::dataset::Entry;
use crate::server::MAX_UPLOAD_BLOB;

/// Why the `--pretrained` file cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("--pretrained {}: {message}", path.display())]
pub struct PretrainedFileError {
    pub path: PathBuf,
    pub message: String,
}

/// Hashes the weights file (streaming, so a large one is never held whole) and returns it
/// as an upload entry; refuses a file that is missing, unreadable, not a file, empty or
/// larger than the coordinator stores.
pub fn hash_weights_file(path: &Path) -> Result<Entry, PretrainedFileError> {
    let fail = |message: String| PretrainedFileError {
        path: path.to_path_buf(),
        message,
    };
    let io = |what: &str, e: std::io::Error| fail(format!("cannot {what} the weights file: {e}"));
    let mut file = std::fs::File::open(path).map_err(|e| io("open", e))?;
    let meta = file.metadata().map_err(|e| io("read", e))?;
    if !meta.is_file() {
        return Err(fail(
            "is not a file; pass a safetensors file of torchvision DenseNet weights".into(),
        ));
    }
    if meta.len() == 0 {
        return Err(fail("is empty".into()));
    }
    if meta.len() > MAX_UPLOAD_BLOB {
        return Err(fail(format!(
            "is {} bytes, more than the {MAX_UPLOAD_BLOB} bytes the coordinator stores per blob",
            meta.len()
        )));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(&mut file).map_err(|e| io("read", e))?;
    let size = hasher.count();
    Ok(Entry {
        name: format!("pretrained weights {}", path.display()),
        path: path.to_path_buf(),
        label: None,
        group: None,
        size,
        hash: BlobHash::from(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weights_file_is_hashed_as_its_blob() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let entry = hash_weights_file(&path).unwrap();
        assert_eq!(entry.hash, BlobHash::of(&bytes));
        assert_eq!(entry.size, bytes.len() as u64);
        assert_eq!(entry.path, path);
    }

    #[test]
    fn a_missing_empty_or_directory_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.safetensors");
        let err = hash_weights_file(&absent).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("--pretrained {}: cannot open", absent.display())),
            "{err}"
        );
        let err = hash_weights_file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not a file"), "{err}");
        let empty = dir.path().join("empty.safetensors");
        std::fs::write(&empty, b"").unwrap();
        let err = hash_weights_file(&empty).unwrap_err().to_string();
        assert_eq!(err, format!("--pretrained {}: is empty", empty.display()));
    }
}
