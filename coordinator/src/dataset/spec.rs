//! What to read: which layout, which columns, and how strictly to check the images.

use std::path::PathBuf;

/// A labelled image set on disk, in one of the two layouts real users have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub layout: Layout,
    pub columns: Columns,
    pub checks: CheckOptions,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// The seed's layout: `Training_set.csv` (filename,label) naming files in `train/`,
    /// and optionally `Testing_set.csv` (filename) naming files in `test/`.
    Csv {
        train_csv: PathBuf,
        train_dir: PathBuf,
        test: Option<TestSet>,
    },
    /// Kvasir-Capsule's layout: `<folder>/<class name>/<image>`, optionally with a
    /// `metadata.csv` (often semicolon-separated) giving each filename its group and
    /// fixing the row order.
    Folder {
        image_folder: PathBuf,
        metadata: Option<PathBuf>,
    },
}

/// The unlabelled images to predict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSet {
    pub csv: PathBuf,
    pub dir: PathBuf,
    /// Their labels (filename,label), kept apart from `csv`: with it the results score
    /// each fold and the ensemble on the test set.
    pub truth: Option<PathBuf>,
}

/// Column names; `None` means the layout's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Columns {
    pub filename: Option<String>,
    pub label: Option<String>,
    /// The group (e.g. a video id); no group is read when unset.
    pub group: Option<String>,
}

impl Columns {
    pub fn filename(&self) -> &str {
        self.filename.as_deref().unwrap_or("filename")
    }

    /// The label column of a training CSV.
    pub fn csv_label(&self) -> &str {
        self.label.as_deref().unwrap_or("label")
    }

    /// The label column of a folder layout's metadata, checked against the folder name.
    pub fn metadata_label(&self) -> &str {
        self.label.as_deref().unwrap_or("finding_class")
    }
}

/// How strictly images are checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Leave out zero-byte, undecodable and truncated images with a warning, instead of
    /// reporting them as errors.
    pub skip_bad: bool,
    /// Decode every image fully, instead of the fast structural check (header and end
    /// marker).
    pub deep_check: bool,
}

/// Options for one load that are not properties of the data set itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The number of folds the data set must support: every class needs at least this
    /// many rows (and, with a group column, there must be this many groups).
    pub folds: Option<u32>,
}
