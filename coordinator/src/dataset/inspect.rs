//! Reading, hashing (BLAKE3) and checking every image on a thread pool.

use std::path::{Path, PathBuf};

use foldtrain_proto::BlobHash;
use rayon::prelude::*;

use super::image_check::{ImageProblem, check_image};

/// Reports progress of long work; the command line draws a bar, tests pass `NoProgress`.
pub trait Progress: Sync {
    fn begin(&self, _total: u64, _what: &str) {}
    fn advance(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {}

/// What reading one image found.
#[derive(Debug)]
pub(crate) enum Inspection {
    Ok { size: u64, hash: BlobHash },
    Missing,
    Unreadable(String),
    Bad(ImageProblem),
}

/// Inspects every path, in parallel, returning results in input order.
pub(crate) fn inspect_all(
    paths: &[PathBuf],
    deep: bool,
    progress: &dyn Progress,
) -> Vec<Inspection> {
    progress.begin(paths.len() as u64, "checking images");
    let results = paths
        .par_iter()
        .map(|path| {
            let result = inspect(path, deep);
            progress.advance(1);
            result
        })
        .collect();
    progress.finish();
    results
}

fn inspect(path: &Path, deep: bool) -> Inspection {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Inspection::Missing,
        Err(e) => return Inspection::Unreadable(e.to_string()),
    };
    match check_image(&bytes, deep) {
        Ok(()) => Inspection::Ok {
            size: bytes.len() as u64,
            hash: BlobHash::of(&bytes),
        },
        Err(problem) => Inspection::Bad(problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_blake3_and_order_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.jpg");
        let img = image::RgbImage::from_pixel(8, 8, image::Rgb([200, 80, 90]));
        img.save(&good).unwrap();
        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        let folder = dir.path().join("folder.jpg");
        std::fs::create_dir(&folder).unwrap();
        let paths = vec![good.clone(), dir.path().join("missing.jpg"), empty, folder];
        let results = inspect_all(&paths, true, &NoProgress);
        let bytes = std::fs::read(&good).unwrap();
        match &results[0] {
            Inspection::Ok { size, hash } => {
                assert_eq!(*size, bytes.len() as u64);
                assert_eq!(*hash, BlobHash::of(&bytes));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(results[1], Inspection::Missing));
        assert!(matches!(results[2], Inspection::Bad(ImageProblem::Empty)));
        assert!(matches!(results[3], Inspection::Unreadable(_)));
    }
}
