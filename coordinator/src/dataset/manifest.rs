//! The loaded data set: every usable image with its label, group, size and hash.

use std::path::PathBuf;

use foldtrain_proto::{BlobHash, ImageRef};

/// A labelled image set, ready to split and ship. Rows keep their input order (CSV or
/// metadata order), which the fold split depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The distinct training labels, sorted; a label index points into this list.
    pub classes: Vec<String>,
    pub train: Vec<Entry>,
    pub test: Vec<Entry>,
    /// The column the groups came from, when groups were read.
    pub group_column: Option<String>,
}

/// One image of the manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The name as the CSV gives it (folder layout: `<class>/<file>`).
    pub name: String,
    pub path: PathBuf,
    /// Index into `Dataset::classes`; `None` for test rows.
    pub label: Option<u32>,
    pub group: Option<String>,
    pub size: u64,
    pub hash: BlobHash,
}

impl Dataset {
    /// The class name of a training entry.
    pub fn label_name(&self, entry: &Entry) -> Option<&str> {
        entry.label.map(|l| self.classes[l as usize].as_str())
    }

    /// Training labels by name, in row order: the input the fold split needs.
    pub fn train_label_names(&self) -> Vec<&str> {
        self.train
            .iter()
            .map(|e| self.label_name(e).unwrap_or_default())
            .collect()
    }

    /// Training groups in row order, when the data set has groups.
    pub fn train_groups(&self) -> Option<Vec<&str>> {
        self.train.iter().map(|e| e.group.as_deref()).collect()
    }

    /// Total bytes of all images, train and test.
    pub fn total_bytes(&self) -> u64 {
        self.train.iter().chain(&self.test).map(|e| e.size).sum()
    }
}

impl From<&Entry> for ImageRef {
    fn from(entry: &Entry) -> Self {
        ImageRef {
            hash: entry.hash,
            name: entry.name.clone(),
            label: entry.label,
            group: entry.group.clone().unwrap_or_default(),
            size: entry.size,
        }
    }
}
