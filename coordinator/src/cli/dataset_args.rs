//! The data set flags every data-reading command shares (`check-data`, `split`, `submit`,
//! `run`), and their conversion to a library `DatasetSpec`.

use std::path::PathBuf;

use clap::Args;

use crate::dataset::{CheckOptions, Columns, DatasetError, DatasetSpec, Layout, TestSet};

/// Where the labelled images are: the seed's CSV layout or a class-folder layout.
#[derive(Debug, Clone, Default, Args)]
pub struct DatasetArgs {
    /// Training CSV (filename,label[,group]); names files in --train-dir.
    #[arg(long, env = "FOLDTRAIN_TRAIN_CSV", requires = "train_dir", conflicts_with_all = ["image_folder", "metadata"], help_heading = "Data set")]
    pub train_csv: Option<PathBuf>,
    /// Folder holding the training images named in --train-csv.
    #[arg(
        long,
        env = "FOLDTRAIN_TRAIN_DIR",
        requires = "train_csv",
        help_heading = "Data set"
    )]
    pub train_dir: Option<PathBuf>,
    /// Test CSV (filename) of images to predict; names files in --test-dir.
    #[arg(long, env = "FOLDTRAIN_TEST_CSV", requires_all = ["test_dir", "train_csv"], help_heading = "Data set")]
    pub test_csv: Option<PathBuf>,
    /// Folder holding the test images named in --test-csv.
    #[arg(
        long,
        env = "FOLDTRAIN_TEST_DIR",
        requires = "test_csv",
        help_heading = "Data set"
    )]
    pub test_dir: Option<PathBuf>,
    /// The test images' labels (filename,label), kept out of --test-csv: the results then
    /// score each fold's model and the ensemble on the test set.
    #[arg(
        long,
        env = "FOLDTRAIN_TEST_TRUTH",
        requires = "test_csv",
        help_heading = "Data set"
    )]
    pub test_truth: Option<PathBuf>,
    /// Folder of class folders (<folder>/<class name>/<image>), e.g. Kvasir-Capsule's
    /// labelled_images.
    #[arg(long, env = "FOLDTRAIN_IMAGE_FOLDER", conflicts_with_all = ["train_csv", "test_csv"], help_heading = "Data set")]
    pub image_folder: Option<PathBuf>,
    /// Metadata CSV for --image-folder (e.g. Kvasir-Capsule's semicolon-separated
    /// metadata.csv): row order, groups, and a label column checked against the folders.
    #[arg(
        long,
        env = "FOLDTRAIN_METADATA",
        requires = "image_folder",
        help_heading = "Data set"
    )]
    pub metadata: Option<PathBuf>,
    /// Column holding the image file name [default: filename].
    #[arg(long, env = "FOLDTRAIN_FILENAME_COLUMN", help_heading = "Data set")]
    pub filename_column: Option<String>,
    /// Column holding the label [default: label; finding_class in --metadata].
    #[arg(long, env = "FOLDTRAIN_LABEL_COLUMN", help_heading = "Data set")]
    pub label_column: Option<String>,
    /// Column holding the group (e.g. video_id); no group ever spans two folds.
    #[arg(long, env = "FOLDTRAIN_GROUP_COLUMN", help_heading = "Data set")]
    pub group_column: Option<String>,
    /// Leave out zero-byte, undecodable and truncated images with a warning, instead of
    /// failing on them.
    #[arg(long, env = "FOLDTRAIN_SKIP_BAD", help_heading = "Data set")]
    pub skip_bad: bool,
    /// Decode every image fully instead of the fast check of header and end marker.
    #[arg(long, env = "FOLDTRAIN_DEEP_CHECK", help_heading = "Data set")]
    pub deep_check: bool,
}

impl TryFrom<&DatasetArgs> for DatasetSpec {
    type Error = DatasetError;

    fn try_from(args: &DatasetArgs) -> Result<Self, DatasetError> {
        let layout = match (&args.train_csv, &args.train_dir, &args.image_folder) {
            (Some(train_csv), Some(train_dir), None) => Layout::Csv {
                train_csv: train_csv.clone(),
                train_dir: train_dir.clone(),
                test: match (&args.test_csv, &args.test_dir) {
                    (Some(csv), Some(dir)) => Some(TestSet {
                        csv: csv.clone(),
                        dir: dir.clone(),
                        truth: args.test_truth.clone(),
                    }),
                    _ => None,
                },
            },
            (None, None, Some(folder)) => Layout::Folder {
                image_folder: folder.clone(),
                metadata: args.metadata.clone(),
            },
            _ => return Err(DatasetError::NoLayout),
        };
        Ok(DatasetSpec {
            layout,
            columns: Columns {
                filename: args.filename_column.clone(),
                label: args.label_column.clone(),
                group: args.group_column.clone(),
            },
            checks: CheckOptions {
                skip_bad: args.skip_bad,
                deep_check: args.deep_check,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Harness {
        #[command(flatten)]
        dataset: DatasetArgs,
    }

    fn spec(args: &[&str]) -> Result<DatasetSpec, String> {
        let parsed =
            Harness::try_parse_from(std::iter::once("foldtrain").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        DatasetSpec::try_from(&parsed.dataset).map_err(|e| e.to_string())
    }

    #[test]
    fn csv_layout_with_test_set_and_columns() {
        let spec = spec(&[
            "--train-csv",
            "Training_set.csv",
            "--train-dir",
            "train",
            "--test-csv",
            "Testing_set.csv",
            "--test-dir",
            "test",
            "--label-column",
            "class",
            "--group-column",
            "video_id",
            "--skip-bad",
        ])
        .unwrap();
        let Layout::Csv {
            train_csv, test, ..
        } = &spec.layout
        else {
            panic!("{spec:?}")
        };
        assert_eq!(train_csv, &PathBuf::from("Training_set.csv"));
        assert_eq!(test.as_ref().unwrap().dir, PathBuf::from("test"));
        assert_eq!(spec.columns.csv_label(), "class");
        assert_eq!(spec.columns.group.as_deref(), Some("video_id"));
        assert!(spec.checks.skip_bad && !spec.checks.deep_check);
    }

    #[test]
    fn folder_layout_and_refusals() {
        let folder = spec(&[
            "--image-folder",
            "labelled_images",
            "--metadata",
            "metadata.csv",
        ])
        .unwrap();
        assert!(matches!(
            folder.layout,
            Layout::Folder {
                metadata: Some(_),
                ..
            }
        ));
        assert!(spec(&[]).unwrap_err().contains("no data set given"));
        assert!(
            spec(&["--train-csv", "a.csv"])
                .unwrap_err()
                .contains("--train-dir")
        );
        assert!(
            spec(&[
                "--train-csv",
                "a.csv",
                "--train-dir",
                "t",
                "--image-folder",
                "x"
            ])
            .is_err()
        );
        assert!(spec(&["--metadata", "m.csv"]).is_err());
    }
}
