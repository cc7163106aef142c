//! Loading a data set: read the layout, inspect and hash every image, derive the
//! classes, and collect every problem into the report.

use std::collections::{BTreeMap, BTreeSet};

use super::DatasetError;
use super::csv_layout::read_csv_layout;
use super::finding::{Finding, FindingKind, Location, Severity};
use super::folder_layout::read_folder_layout;
use super::image_check::ImageProblem;
use super::inspect::{Inspection, Progress, inspect_all};
use super::manifest::{Dataset, Entry};
use super::paths::absolute;
use super::raw::{RawRow, RawRows, drop_duplicates};
use super::report::{ClassCount, ValidationReport};
use super::spec::{CheckOptions, DatasetSpec, Layout, LoadOptions, TestSet};
use super::test_truth::apply_test_truth;

/// A data set and what checking it found. The data set holds only the rows that passed;
/// it is fit for use only when the report has no errors.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub dataset: Dataset,
    pub report: ValidationReport,
}

impl Loaded {
    /// The data set, or an error naming the first problems when the report has errors.
    pub fn into_valid(self) -> Result<(Dataset, ValidationReport), DatasetError> {
        if self.report.has_errors() {
            let first: Vec<String> = self
                .report
                .errors()
                .take(3)
                .map(|f| f.to_string())
                .collect();
            return Err(DatasetError::Invalid {
                errors: self.report.error_count(),
                first: first.join("\n"),
            });
        }
        Ok((self.dataset, self.report))
    }
}

/// Reads and checks the data set `spec` describes. Never fails: every problem, down to
/// an unreadable CSV, is a finding in the report.
pub fn load(spec: &DatasetSpec, options: LoadOptions, progress: &dyn Progress) -> Loaded {
    let mut findings = Vec::new();
    let raw = read_layout(spec, &mut findings);
    let train = drop_duplicates(raw.train, &mut findings);
    let test = drop_duplicates(raw.test, &mut findings);
    let inspected = inspect_rows(train, test, spec.checks, progress, &mut findings);
    let classes = check_training_rows(&inspected.train, spec, options, &mut findings);

    let entry = |kept: KeptRow| to_entry(kept, &classes);
    let train: Vec<Entry> = inspected.train.into_iter().map(entry).collect();
    let mut test: Vec<Entry> = inspected.test.into_iter().map(entry).collect();
    if let Layout::Csv {
        test: Some(TestSet {
            truth: Some(truth), ..
        }),
        ..
    } = &spec.layout
    {
        apply_test_truth(truth, &mut test, &classes, &spec.columns, &mut findings);
    }
    let report = ValidationReport {
        findings,
        images_checked: inspected.images_checked,
        train_rows: train.len(),
        test_rows: test.len(),
        skipped: inspected.skipped,
        distribution: distribution(&classes, &train),
    };
    Loaded {
        dataset: Dataset {
            classes,
            train,
            test,
            group_column: spec.columns.group.clone(),
        },
        report,
    }
}

/// The rows the layout names, before duplicates are dropped.
fn read_layout(spec: &DatasetSpec, findings: &mut Vec<Finding>) -> RawRows {
    match &spec.layout {
        Layout::Csv {
            train_csv,
            train_dir,
            test,
        } => read_csv_layout(train_csv, train_dir, test.as_ref(), &spec.columns, findings),
        Layout::Folder {
            image_folder,
            metadata,
        } => RawRows {
            train: read_folder_layout(image_folder, metadata.as_deref(), &spec.columns, findings),
            test: Vec::new(),
        },
    }
}

/// The rows whose images passed inspection, and counts for the report.
struct Inspected {
    train: Vec<KeptRow>,
    test: Vec<KeptRow>,
    images_checked: usize,
    /// Bad images left out with a warning under `--skip-bad`.
    skipped: usize,
}

/// Inspects and hashes every image, training rows first; a row whose image fails is a
/// finding and left out.
fn inspect_rows(
    train: Vec<RawRow>,
    test: Vec<RawRow>,
    checks: CheckOptions,
    progress: &dyn Progress,
    findings: &mut Vec<Finding>,
) -> Inspected {
    let paths: Vec<_> = train.iter().chain(&test).map(|r| r.path.clone()).collect();
    let mut inspections = inspect_all(&paths, checks.deep_check, progress).into_iter();
    let mut skipped = 0;
    let mut keep = |rows: Vec<RawRow>, findings: &mut Vec<Finding>| -> Vec<KeptRow> {
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            let inspection = inspections.next().expect("one inspection per row");
            match judge(&row, inspection, checks.skip_bad) {
                Ok((size, hash)) => kept.push((row, size, hash)),
                Err(finding) => {
                    if finding.severity == Severity::Warning {
                        skipped += 1;
                    }
                    findings.push(finding);
                }
            }
        }
        kept
    };
    let train = keep(train, findings);
    let test = keep(test, findings);
    Inspected {
        train,
        test,
        images_checked: paths.len(),
        skipped,
    }
}

/// The sorted class names of the training rows, after checking the classes, the groups
/// and that there is anything to train on.
fn check_training_rows(
    train: &[KeptRow],
    spec: &DatasetSpec,
    options: LoadOptions,
    findings: &mut Vec<Finding>,
) -> Vec<String> {
    let classes: Vec<String> = train
        .iter()
        .filter_map(|(r, _, _)| r.label.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    check_classes(train, &classes, options, findings);
    if spec.columns.group.is_some() {
        check_groups(train, options, findings);
    }
    if train.is_empty() {
        findings.push(Finding::error(
            FindingKind::NoTrainingRows,
            Location::default(),
            "no usable training rows",
        ));
    }
    classes
}

fn to_entry((row, size, hash): KeptRow, classes: &[String]) -> Entry {
    Entry {
        label: row.label.as_ref().map(|l| {
            classes
                .binary_search(l)
                .expect("labels are among the classes") as u32
        }),
        name: row.name,
        path: absolute(&row.path),
        group: row.group,
        size,
        hash,
    }
}

/// The row's size and hash, or the finding that keeps it out.
fn judge(
    row: &RawRow,
    inspection: Inspection,
    skip_bad: bool,
) -> Result<(u64, foldtrain_proto::BlobHash), Finding> {
    let path = row.path.display();
    let (kind, message) = match inspection {
        Inspection::Ok { size, hash } => return Ok((size, hash)),
        Inspection::Missing => {
            return Err(Finding::error(
                FindingKind::MissingFile,
                row.location.clone(),
                format!("file does not exist: {path}"),
            ));
        }
        Inspection::Unreadable(e) => {
            return Err(Finding::error(
                FindingKind::UnreadableFile,
                row.location.clone(),
                format!("cannot read {path}: {e}"),
            ));
        }
        Inspection::Bad(ImageProblem::Empty) => (
            FindingKind::ZeroByteImage,
            "the file is empty (0 bytes)".to_owned(),
        ),
        Inspection::Bad(ImageProblem::Undecodable(why)) => (FindingKind::UndecodableImage, why),
        Inspection::Bad(ImageProblem::Truncated(why)) => (FindingKind::TruncatedImage, why),
    };
    Err(if skip_bad {
        Finding::warning(kind, row.location.clone(), format!("{message}; left out"))
    } else {
        Finding::error(
            kind,
            row.location.clone(),
            format!("{message}; fix or remove it, or pass --skip-bad to leave it out"),
        )
    })
}

type KeptRow = (RawRow, u64, foldtrain_proto::BlobHash);

/// Labels that differ only in case (warned, never merged) and classes too small for the
/// folds (errors).
fn check_classes(
    train: &[KeptRow],
    classes: &[String],
    options: LoadOptions,
    findings: &mut Vec<Finding>,
) {
    let mut stats: BTreeMap<&str, (usize, &Location)> = BTreeMap::new();
    for (row, _, _) in train {
        if let Some(label) = &row.label {
            stats.entry(label).or_insert((0, &row.location)).0 += 1;
        }
    }
    let mut by_folded: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for class in classes {
        by_folded
            .entry(class.to_lowercase())
            .or_default()
            .push(class);
    }
    for spellings in by_folded.values().filter(|s| s.len() > 1) {
        let described: Vec<String> = spellings
            .iter()
            .map(|s| {
                let (count, at) = stats[s];
                format!(
                    "{s:?} ({count} rows, first on line {})",
                    at.line.unwrap_or(0)
                )
            })
            .collect();
        let (_, first_at) = stats[spellings[0]];
        findings.push(Finding::warning(
            FindingKind::LabelCase,
            Location { file: None, ..first_at.clone() },
            format!(
                "labels differ only in case: {}; they are kept as separate classes, fix the labels if they are one",
                described.join(", ")
            ),
        ));
    }
    if let Some(folds) = options.folds {
        for (class, (count, at)) in &stats {
            if *count < folds as usize {
                findings.push(Finding::error(
                    FindingKind::ClassTooSmall,
                    Location { file: None, ..(*at).clone() },
                    format!(
                        "class {class:?} has {count} rows, fewer than the {folds} folds; every fold needs one to validate on (use fewer folds, or add or drop the class)"
                    ),
                ));
            }
        }
    }
}

/// With a group column, the folds need at least as many groups.
fn check_groups(train: &[KeptRow], options: LoadOptions, findings: &mut Vec<Finding>) {
    let Some(folds) = options.folds else { return };
    let groups: BTreeSet<&str> = train
        .iter()
        .filter_map(|(r, _, _)| r.group.as_deref())
        .collect();
    if !train.is_empty() && groups.len() < folds as usize {
        findings.push(Finding::error(
            FindingKind::TooFewGroups,
            Location {
                source: train[0].0.location.source.clone(),
                ..Default::default()
            },
            format!(
                "{} distinct groups, fewer than the {folds} folds; no group may span two folds",
                groups.len()
            ),
        ));
    }
}

fn distribution(classes: &[String], train: &[Entry]) -> Vec<ClassCount> {
    let mut counts = vec![0usize; classes.len()];
    for entry in train {
        if let Some(label) = entry.label {
            counts[label as usize] += 1;
        }
    }
    let total = train.len().max(1) as f64;
    classes
        .iter()
        .zip(counts)
        .map(|(class, count)| ClassCount {
            class: class.clone(),
            count,
            share: count as f64 / total,
        })
        .collect()
}
