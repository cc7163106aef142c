//! The worker's content-addressed blob cache: one file per blob, named by its BLAKE3 hex
//! hash, so [`HashDirSource`](crate::data::HashDirSource) reads training images from it.
//! A blob becomes visible only whole and verified (temp file, fsync, rename).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use foldtrain_proto::BlobHash;

use super::WorkerError;

/// Temp files start with this; a blob's name never does (it is 64 hex digits).
const TEMP_PREFIX: &str = ".partial-";

#[derive(Debug)]
pub struct BlobCache {
    dir: PathBuf,
    downloaded: AtomicU64,
    downloaded_bytes: AtomicU64,
    /// Makes temp names unique among concurrent writers of the same blob.
    temp_counter: AtomicU64,
}

impl BlobCache {
    /// Creates the directory if needed and removes temp files a crash left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, WorkerError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|e| WorkerError::cache(&dir, e))?;
        for entry in std::fs::read_dir(&dir).map_err(|e| WorkerError::cache(&dir, e))? {
            let entry = entry.map_err(|e| WorkerError::cache(&dir, e))?;
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                // A leftover we cannot remove does no harm: it is never read.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            dir,
            downloaded: AtomicU64::new(0),
            downloaded_bytes: AtomicU64::new(0),
            temp_counter: AtomicU64::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, hash: &BlobHash) -> PathBuf {
        self.dir.join(hash.to_hex())
    }

    /// Whether the blob is present. Its content is verified when it is read: a corrupt
    /// copy is removed then, and the next attempt downloads it again.
    pub fn contains(&self, hash: &BlobHash) -> bool {
        self.path_of(hash).is_file()
    }

    /// Verifies `bytes` against `hash` and stores them durably under the blob's name.
    /// `name` is the image the blob was fetched for, for the error message.
    pub fn store(&self, hash: BlobHash, name: &str, bytes: &[u8]) -> Result<(), WorkerError> {
        let actual = BlobHash::of(bytes);
        if actual != hash {
            return Err(WorkerError::CorruptBlob {
                name: name.to_string(),
                hash,
                actual,
            });
        }
        let target = self.path_of(&hash);
        let temp = self.dir.join(format!(
            "{TEMP_PREFIX}{}-{}-{}",
            hash.to_hex(),
            std::process::id(),
            self.temp_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &target)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&temp);
            return Err(WorkerError::cache(&target, e));
        }
        self.downloaded.fetch_add(1, Ordering::Relaxed);
        self.downloaded_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// The bytes of a cached blob, verified.
    pub fn read(&self, hash: &BlobHash) -> Result<Vec<u8>, WorkerError> {
        let path = self.path_of(hash);
        let bytes = std::fs::read(&path).map_err(|e| WorkerError::cache(&path, e))?;
        let actual = BlobHash::of(&bytes);
        if actual != *hash {
            let _ = std::fs::remove_file(&path);
            return Err(WorkerError::CorruptBlob {
                name: path.display().to_string(),
                hash: *hash,
                actual,
            });
        }
        Ok(bytes)
    }

    /// Blobs stored since this cache was opened.
    pub fn blobs_downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    pub fn bytes_downloaded(&self) -> u64 {
        self.downloaded_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_verified_blobs_and_refuses_corrupt_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path().join("cache")).unwrap();
        let cache_dir = cache.dir().to_path_buf();
        assert_eq!(std::fs::read_dir(&cache_dir).unwrap().count(), 0);

        let hash = BlobHash::of(b"frame");
        assert!(!cache.contains(&hash));
        cache.store(hash, "a.jpg", b"frame").unwrap();
        assert!(cache.contains(&hash));
        assert_eq!(cache.read(&hash).unwrap(), b"frame");
        assert_eq!((cache.blobs_downloaded(), cache.bytes_downloaded()), (1, 5));

        let err = cache.store(hash, "b.jpg", b"other").unwrap_err();
        assert!(
            matches!(err, WorkerError::CorruptBlob { .. }) && err.to_string().contains("b.jpg"),
            "{err}"
        );
        assert_eq!(cache.blobs_downloaded(), 1);
        let names: Vec<_> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![hash.to_hex()]);
    }

    #[test]
    fn leftover_temp_files_are_removed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(format!("{TEMP_PREFIX}abc-1-0"));
        std::fs::write(&stale, b"half").unwrap();
        BlobCache::open(dir.path()).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn an_unusable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"").unwrap();
        let err = BlobCache::open(&file).unwrap_err().to_string();
        assert!(err.contains("not-a-dir"), "{err}");
    }
}
