//! Content-addressed blobs on disk (`blobs/ab/cdef...`): a blob becomes visible only
//! once its bytes are verified against its BLAKE3 hash and durably renamed into place.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use foldtrain_proto::BlobHash;

use super::files::{sync_dir, temp_path_for};
use crate::error::{CoordinatorError, Result};

/// The blob directory of a data directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the blob store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)
            .map_err(|e| CoordinatorError::io(format!("creating {}", tmp.display()), e))?;
        // Temporaries left by a crash are never renamed into place: clear them.
        if let Ok(entries) = fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self { root })
    }

    /// Where the blob with `hash` lives once it is visible.
    pub fn path(&self, hash: &BlobHash) -> PathBuf {
        let hex = hash.to_hex();
        self.root.join(&hex[..2]).join(&hex[2..])
    }

    pub fn contains(&self, hash: &BlobHash) -> bool {
        self.path(hash).is_file()
    }

    /// The hashes among `hashes` that are not stored, in the order given.
    pub fn missing(&self, hashes: &[BlobHash]) -> Vec<BlobHash> {
        hashes
            .iter()
            .filter(|h| !self.contains(h))
            .copied()
            .collect()
    }

    /// Starts receiving a blob that must hash to `expected`.
    pub fn writer(&self, expected: BlobHash) -> Result<BlobWriter> {
        let final_path = self.path(&expected);
        let tmp = temp_path_for(&self.root.join("tmp").join(expected.to_hex()));
        let file = File::create(&tmp)
            .map_err(|e| CoordinatorError::io(format!("creating {}", tmp.display()), e))?;
        Ok(BlobWriter {
            expected,
            tmp,
            final_path,
            file: Some(file),
            hasher: Some(blake3::Hasher::new()),
            written: 0,
        })
    }

    /// Stores `bytes` whole and returns their hash.
    pub fn put(&self, bytes: &[u8]) -> Result<BlobHash> {
        let hash = BlobHash::of(bytes);
        if !self.contains(&hash) {
            let mut writer = self.writer(hash)?;
            // The hash was just taken from these very bytes: a second pass to check it
            // would only cost time (a latest checkpoint is over 100 MB every epoch).
            writer.hasher = None;
            writer.write(bytes)?;
            writer.finish()?;
        }
        Ok(hash)
    }

    /// Removes a blob nothing refers to any more (the caller checked, see
    /// [`super::refs::unreferenced`]) and returns the bytes freed; a blob already gone
    /// frees nothing.
    pub fn remove(&self, hash: &BlobHash) -> Result<u64> {
        let path = self.path(hash);
        let io = |e| CoordinatorError::io(format!("removing {}", path.display()), e);
        let size = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io(e)),
        }
    }

    pub fn read(&self, hash: &BlobHash) -> Result<Vec<u8>> {
        let path = self.path(hash);
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CoordinatorError::BlobNotFound(*hash),
            _ => CoordinatorError::io(format!("reading {}", path.display()), e),
        })
    }
}

/// A blob being received: bytes go to a temporary file and are hashed on the way.
#[derive(Debug)]
pub struct BlobWriter {
    expected: BlobHash,
    tmp: PathBuf,
    final_path: PathBuf,
    file: Option<File>,
    /// `None` when the bytes' hash is already known to be `expected`.
    hasher: Option<blake3::Hasher>,
    written: u64,
}

impl BlobWriter {
    pub fn expected(&self) -> BlobHash {
        self.expected
    }

    /// Bytes received so far: the offset the next chunk must start at.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let file = self.file.as_mut().ok_or(CoordinatorError::ShuttingDown)?;
        file.write_all(data)
            .map_err(|e| CoordinatorError::io(format!("writing {}", self.tmp.display()), e))?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(data);
        }
        self.written += data.len() as u64;
        Ok(())
    }

    /// Verifies the hash, fsyncs and renames the blob into place. On a mismatch the
    /// temporary file is removed and nothing becomes visible.
    pub fn finish(mut self) -> Result<u64> {
        if let Some(hasher) = &self.hasher {
            let actual = BlobHash::from(hasher.finalize());
            if actual != self.expected {
                return Err(CoordinatorError::BlobHashMismatch {
                    expected: self.expected,
                    actual,
                });
            }
        }
        let file = self.file.take().ok_or(CoordinatorError::ShuttingDown)?;
        let io = |e| CoordinatorError::io(format!("storing blob {}", self.expected), e);
        file.sync_all().map_err(io)?;
        drop(file);
        let dir = self.final_path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io)?;
        fs::rename(&self.tmp, &self.final_path).map_err(io)?;
        sync_dir(dir).map_err(io)?;
        Ok(self.written)
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Unfinished or rejected: the partial bytes must never surface.
        if self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_blobs_become_visible_under_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"a capsule frame".repeat(1000);
        let hash = BlobHash::of(&data);
        assert_eq!(store.missing(&[hash]), vec![hash]);
        let mut w = store.writer(hash).unwrap();
        for part in data.chunks(4096) {
            w.write(part).unwrap();
            assert!(!store.contains(&hash), "visible before verification");
        }
        assert_eq!(w.finish().unwrap(), data.len() as u64);
        assert!(store.missing(&[hash]).is_empty());
        assert_eq!(store.read(&hash).unwrap(), data);
        let hex = hash.to_hex();
        assert!(dir.path().join(&hex[..2]).join(&hex[2..]).is_file());
    }

    #[test]
    fn whole_blobs_are_put_under_their_hash_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"a latest checkpoint".repeat(5000);
        let hash = store.put(&data).unwrap();
        assert_eq!(hash, BlobHash::of(&data));
        assert_eq!(store.read(&hash).unwrap(), data);
        assert_eq!(store.put(&data).unwrap(), hash);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn a_hash_mismatch_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let claimed = BlobHash::of(b"what the client said");
        let mut w = store.writer(claimed).unwrap();
        w.write(b"what the client sent").unwrap();
        let err = w.finish().unwrap_err();
        let actual = BlobHash::of(b"what the client sent");
        assert_eq!(
            err.to_string(),
            format!("blob hash mismatch: expected {claimed}, got {actual}")
        );
        assert!(!store.contains(&claimed) && !store.contains(&actual));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(matches!(
            store.read(&claimed),
            Err(CoordinatorError::BlobNotFound(_))
        ));
    }

    #[test]
    fn an_abandoned_upload_is_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer(BlobHash::of(b"x")).unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert_eq!(store.put(b"x").unwrap(), BlobHash::of(b"x"));
        assert!(store.contains(&BlobHash::of(b"x")));
    }
}
