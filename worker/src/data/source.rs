//! Where image bytes come from: a plain folder of named files, or a content-addressed
//! directory of blobs named by their BLAKE3 hash.

use std::path::{Component, Path, PathBuf};

use foldtrain_proto::{BlobHash, ImageRef};

use super::DataError;

/// The bytes of images, fetched by the loader threads.
pub trait BlobSource: Send + Sync {
    /// The bytes of one image; the error names the image.
    fn fetch(&self, image: &ImageRef) -> Result<Vec<u8>, DataError>;
}

/// Reads `<root>/<image.name>`; for tests and local runs.
#[derive(Debug, Clone)]
pub struct FolderSource {
    root: PathBuf,
}

impl FolderSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path_of(&self, name: &str) -> Result<PathBuf, DataError> {
        let relative = Path::new(name);
        // A name must stay below the root: dataset rows are user input.
        let escapes = relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
        if name.is_empty() || escapes {
            return Err(DataError::InvalidName {
                name: name.to_owned(),
                reason: "expected a relative path without '..'".to_owned(),
            });
        }
        Ok(self.root.join(relative))
    }
}

impl BlobSource for FolderSource {
    fn fetch(&self, image: &ImageRef) -> Result<Vec<u8>, DataError> {
        let path = self.path_of(&image.name)?;
        std::fs::read(&path)
            .map_err(|e| DataError::fetch(&image.name, format!("{}: {e}", path.display())))
    }
}

/// Reads `<dir>/<hex blake3 hash>` and checks the hash of what it read.
#[derive(Debug, Clone)]
pub struct HashDirSource {
    dir: PathBuf,
}

impl HashDirSource {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Where the blob with this hash lives.
    pub fn path_of(&self, hash: &BlobHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }
}

impl BlobSource for HashDirSource {
    fn fetch(&self, image: &ImageRef) -> Result<Vec<u8>, DataError> {
        let path = self.path_of(&image.hash);
        let bytes = std::fs::read(&path)
            .map_err(|e| DataError::fetch(&image.name, format!("{}: {e}", path.display())))?;
        let actual = BlobHash::of(&bytes);
        if actual != image.hash {
            // Remove the bad copy so that whoever fills the directory fetches it again on retry;
            // a failure to remove changes nothing about the error we report.
            let _ = std::fs::remove_file(&path);
            return Err(DataError::HashMismatch {
                name: image.name.clone(),
                path: path.display().to_string(),
                expected: image.hash.to_hex(),
                actual: actual.to_hex(),
            });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(name: &str, bytes: &[u8]) -> ImageRef {
        ImageRef {
            hash: BlobHash::of(bytes),
            name: name.to_owned(),
            label: Some(0),
            group: String::new(),
            size: bytes.len() as u64,
        }
    }

    #[test]
    fn folder_source_reads_by_name_and_rejects_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.jpg"), b"abc").unwrap();
        let source = FolderSource::new(dir.path());
        assert_eq!(source.fetch(&image("sub/a.jpg", b"abc")).unwrap(), b"abc");

        let missing = source.fetch(&image("b.jpg", b"")).unwrap_err();
        assert!(missing.retryable());
        assert!(missing.to_string().contains("b.jpg"), "{missing}");

        for bad in ["../x.jpg", "/etc/passwd", ""] {
            let err = source.fetch(&image(bad, b"")).unwrap_err();
            assert!(matches!(err, DataError::InvalidName { .. }), "{bad}: {err}");
            assert!(!err.retryable());
        }
    }

    #[test]
    fn hash_dir_source_verifies_and_drops_corrupt_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let source = HashDirSource::new(dir.path());
        let good = image("good.jpg", b"good bytes");
        std::fs::write(source.path_of(&good.hash), b"good bytes").unwrap();
        assert_eq!(source.fetch(&good).unwrap(), b"good bytes");

        let bad = image("bad.jpg", b"expected bytes");
        let path = source.path_of(&bad.hash);
        std::fs::write(&path, b"flipped bytes").unwrap();
        let err = source.fetch(&bad).unwrap_err();
        assert!(matches!(err, DataError::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains("bad.jpg"), "{err}");
        assert!(err.retryable());
        assert!(!path.exists(), "the corrupt blob is removed");

        let err = source.fetch(&bad).unwrap_err();
        assert!(matches!(err, DataError::Fetch { .. }), "{err}");
    }
}
