//! The unlabelled images of a prediction: every image file under a folder (recursively), or
//! the filename column of a CSV naming files in a folder; each read and hashed, in input
//! order. Whether an image decodes is the worker's to find out, image by image.

use std::path::{Path, PathBuf};

use foldtrain_proto::BlobHash;
use rayon::prelude::*;

use super::csv_layout::read_rows;
use super::finding::{Finding, FindingKind, Location};
use super::folder_layout::{IMAGE_EXTENSIONS, sorted_entries};
use super::raw::RawRow;
use super::{Columns, DatasetError, Entry, Progress};

/// Where the images to predict are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageList {
    /// Every image file under this folder, named by its path relative to it.
    Folder(PathBuf),
    /// The `filename_column` (default `filename`) of `csv`, naming files in `dir`.
    Csv {
        csv: PathBuf,
        dir: PathBuf,
        filename_column: Option<String>,
    },
}

/// Reads and hashes every image of `list`, in input order. Fails with every problem found
/// (an unreadable CSV, a missing column, a name that leaves the folder, a missing file),
/// each naming the file and line, or on an empty list.
pub fn list_images(list: &ImageList, progress: &dyn Progress) -> Result<Vec<Entry>, DatasetError> {
    let mut findings = Vec::new();
    let rows = match list {
        ImageList::Folder(dir) => walk(dir, &mut findings),
        ImageList::Csv {
            csv,
            dir,
            filename_column,
        } => {
            let columns = Columns {
                filename: filename_column.clone(),
                ..Columns::default()
            };
            read_rows(csv, dir, &columns, false, &mut findings)
        }
    };
    progress.begin(rows.len() as u64, "hashing images");
    let hashed: Vec<Result<(u64, BlobHash), String>> = rows
        .par_iter()
        .map(|row| {
            let bytes = std::fs::read(&row.path);
            progress.advance(1);
            let bytes = bytes.map_err(|e| format!("cannot read {}: {e}", row.path.display()))?;
            Ok((bytes.len() as u64, BlobHash::of(&bytes)))
        })
        .collect();
    progress.finish();
    let mut entries = Vec::with_capacity(rows.len());
    for (row, hashed) in rows.into_iter().zip(hashed) {
        match hashed {
            Ok((size, hash)) => entries.push(Entry {
                name: row.name,
                path: row.path,
                label: None,
                group: None,
                size,
                hash,
            }),
            Err(message) => findings.push(Finding::error(
                FindingKind::MissingFile,
                row.location,
                message,
            )),
        }
    }
    let errors: Vec<String> = findings
        .iter()
        .filter(|f| f.severity == super::Severity::Error)
        .map(|f| f.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(DatasetError::Invalid {
            errors: errors.len(),
            first: errors[..errors.len().min(3)].join("\n"),
        });
    }
    if entries.is_empty() {
        return Err(DatasetError::NoImages(match list {
            ImageList::Folder(dir) => dir.display().to_string(),
            ImageList::Csv { csv, .. } => csv.display().to_string(),
        }));
    }
    Ok(entries)
}

/// Every image file under `root`, depth first in name order, named relative to `root`.
fn walk(root: &Path, findings: &mut Vec<Finding>) -> Vec<RawRow> {
    let mut rows = Vec::new();
    let mut stack = vec![(String::new(), root.to_path_buf())];
    while let Some((prefix, dir)) = stack.pop() {
        let entries = match sorted_entries(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                findings.push(Finding::error(
                    FindingKind::UnreadableFile,
                    at(&dir, None),
                    format!("cannot list the folder: {e}"),
                ));
                continue;
            }
        };
        let mut subdirs = Vec::new();
        for (file, path) in entries {
            let name = format!("{prefix}{file}");
            if file.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                subdirs.push((format!("{name}/"), path));
                continue;
            }
            let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if IMAGE_EXTENSIONS
                .iter()
                .any(|e| e.eq_ignore_ascii_case(extension))
            {
                rows.push(RawRow {
                    location: at(root, Some(name.clone())),
                    name,
                    path,
                    label: None,
                    group: None,
                });
            }
        }
        // Popped in reverse, so subfolders are visited in name order.
        stack.extend(subdirs.into_iter().rev());
    }
    // Files of a folder come before its subfolders' files, every level in name order.
    rows
}

fn at(source: &Path, file: Option<String>) -> Location {
    Location {
        source: Some(source.to_path_buf()),
        line: None,
        file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::NoProgress;

    #[test]
    fn a_folder_is_listed_recursively_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).unwrap();
        for (name, bytes) in [
            ("z.png", &b"z"[..]),
            ("a.jpg", b"a"),
            ("b/c/d.JPG", b"d"),
            ("b/e.png", b"e"),
            ("notes.txt", b"n"),
            (".hidden.png", b"h"),
        ] {
            std::fs::write(root.join(name), bytes).unwrap();
        }
        let entries = list_images(&ImageList::Folder(root.to_path_buf()), &NoProgress).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.jpg", "z.png", "b/e.png", "b/c/d.JPG"]);
        assert_eq!(entries[0].hash, BlobHash::of(b"a"));
        assert_eq!(entries[0].size, 1);
    }

    #[test]
    fn a_csv_keeps_its_order_and_names_a_missing_file_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("1.png"), b"one").unwrap();
        std::fs::write(root.join("2.png"), b"two").unwrap();
        let csv = root.join("images.csv");
        std::fs::write(&csv, "image\n2.png\n1.png\n").unwrap();
        let list = ImageList::Csv {
            csv: csv.clone(),
            dir: root.to_path_buf(),
            filename_column: Some("image".into()),
        };
        let names: Vec<String> = list_images(&list, &NoProgress)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["2.png", "1.png"]);

        std::fs::write(&csv, "image\n2.png\ngone.png\n").unwrap();
        let err = list_images(&list, &NoProgress).unwrap_err().to_string();
        assert!(err.contains("line 3") && err.contains("gone.png"), "{err}");

        let wrong_column = ImageList::Csv {
            csv,
            dir: root.to_path_buf(),
            filename_column: None,
        };
        let err = list_images(&wrong_column, &NoProgress)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"filename\""), "{err}");
    }
}
