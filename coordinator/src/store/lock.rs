//! One coordinator per data directory: an exclusive OS advisory lock (`flock`) on a file
//! in it, held while the store is open and dropped by the OS if the process dies.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CoordinatorError, Result};

/// The lock file's name inside the data directory.
pub const LOCK_FILE: &str = "coordinator.lock";

/// The held lock on a data directory; dropping it releases the lock.
#[derive(Debug)]
pub struct DataDirLock {
    // Held for its lock: the OS releases it when the file is closed.
    _file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock on `dir` without waiting. Another holder, in this process or any
    /// other, is a [`CoordinatorError::DataDirLocked`] naming the directory.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let io = |what: &str, e| CoordinatorError::io(format!("{what} {}", path.display()), e);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("opening", e))?;
        // flock, not fcntl: its lock belongs to this open file, so a second open in the
        // same process is refused too. (std's File::try_lock is newer than our MSRV.)
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(CoordinatorError::DataDirLocked {
                    dir: dir.to_path_buf(),
                    lock: path,
                });
            }
            Err(e) => return Err(io("locking", e.into())),
        }
        // The holder's process id, for an operator who finds the directory taken.
        file.set_len(0).map_err(|e| io("writing", e))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| io("writing", e))?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        assert_eq!(first.path(), dir.path().join(LOCK_FILE));
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        let err = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(err, CoordinatorError::DataDirLocked { .. }),
            "{err}"
        );
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            err.to_string(),
            format!(
                "another coordinator holds the data directory {} (lock file {}); stop it, or \
                 give this one another --data-dir",
                dir.path().display(),
                dir.path().join(LOCK_FILE).display()
            )
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
