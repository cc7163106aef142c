//! `--test-truth`: the test images' labels (filename,label), kept apart from the unlabelled
//! test CSV. With it, the results score each fold's model and the ensemble on the test set.

use std::collections::HashMap;
use std::path::Path;

use super::csv_table::Table;
use super::finding::{Finding, FindingKind, Location};
use super::manifest::Entry;
use super::spec::Columns;

/// Gives every test row its label from `truth`. Every test image needs exactly one label
/// among the training classes; a row naming an image that is not in the test set is a
/// warning. Problems are findings naming the file and line.
pub(crate) fn apply_test_truth(
    truth: &Path,
    test: &mut [Entry],
    classes: &[String],
    columns: &Columns,
    findings: &mut Vec<Finding>,
) {
    let Some(table) = Table::read(truth, findings) else {
        return;
    };
    let (Some(name_col), Some(label_col)) = (
        table.column(columns.filename(), findings),
        table.column(columns.csv_label(), findings),
    ) else {
        return;
    };
    let at = |line: u64, file: &str| Location {
        source: Some(truth.to_path_buf()),
        line: Some(line),
        file: Some(file.to_owned()),
    };
    let mut labels: HashMap<&str, (u32, u64)> = HashMap::with_capacity(table.rows.len());
    for row in &table.rows {
        let (name, label) = (&row.fields[name_col], &row.fields[label_col]);
        let Ok(index) = classes.binary_search(label) else {
            findings.push(Finding::error(
                FindingKind::LabelMismatch,
                at(row.line, name),
                format!(
                    "label {label:?} is not one of the {} training classes",
                    classes.len()
                ),
            ));
            continue;
        };
        if let Some((_, first)) = labels.insert(name, (index as u32, row.line)) {
            findings.push(Finding::error(
                FindingKind::DuplicateFilename,
                at(row.line, name),
                format!("labelled twice (first on line {first})"),
            ));
        }
    }
    for entry in test.iter_mut() {
        match labels.remove(entry.name.as_str()) {
            Some((label, _)) => entry.label = Some(label),
            None => findings.push(Finding::error(
                FindingKind::MissingLabel,
                Location {
                    source: Some(truth.to_path_buf()),
                    line: None,
                    file: Some(entry.name.clone()),
                },
                "this test image has no label in the truth file",
            )),
        }
    }
    let mut unlisted: Vec<(&str, u64)> = labels.into_iter().map(|(n, (_, l))| (n, l)).collect();
    unlisted.sort_by_key(|(_, line)| *line);
    for (name, line) in unlisted {
        findings.push(Finding::warning(
            FindingKind::UnlistedImage,
            at(line, name),
            "not in the test set; ignored",
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use foldtrain_proto::BlobHash;

    use super::*;

    fn entry(name: &str) -> Entry {
        Entry {
            name: name.into(),
            path: PathBuf::from(name),
            label: None,
            group: None,
            size: 1,
            hash: BlobHash::of(name.as_bytes()),
        }
    }

    fn apply(csv: &str, names: &[&str]) -> (Vec<Option<u32>>, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("truth.csv");
        std::fs::write(&path, csv).unwrap();
        let mut test: Vec<Entry> = names.iter().map(|n| entry(n)).collect();
        let classes = ["cat".to_owned(), "dog".to_owned()];
        let mut findings = Vec::new();
        apply_test_truth(
            &path,
            &mut test,
            &classes,
            &Columns::default(),
            &mut findings,
        );
        let shown = findings
            .iter()
            .map(|f| {
                f.to_string()
                    .replace(&dir.path().display().to_string(), "DIR")
            })
            .collect();
        (test.iter().map(|e| e.label).collect(), shown)
    }

    #[test]
    fn every_test_row_gets_its_label_in_any_row_order() {
        let (labels, findings) = apply(
            "filename,label\nb.jpg,cat\na.jpg,dog\n",
            &["a.jpg", "b.jpg"],
        );
        assert_eq!(labels, [Some(1), Some(0)]);
        assert!(findings.is_empty(), "{findings:?}");
    }

    #[test]
    fn problems_name_the_file_line_and_image() {
        let (labels, findings) = apply(
            "filename,label\na.jpg,cat\na.jpg,dog\nc.jpg,bird\nz.jpg,cat\n",
            &["a.jpg", "b.jpg"],
        );
        assert_eq!(labels, [Some(1), None]);
        assert_eq!(
            findings,
            [
                "error[duplicate-filename]: DIR/truth.csv line 3, \"a.jpg\": labelled twice (first on line 2)",
                "error[label-mismatch]: DIR/truth.csv line 4, \"c.jpg\": label \"bird\" is not one of the 2 training classes",
                "error[missing-label]: DIR/truth.csv, \"b.jpg\": this test image has no label in the truth file",
                "warning[unlisted-image]: DIR/truth.csv line 5, \"z.jpg\": not in the test set; ignored",
            ]
        );
    }

    #[test]
    fn a_missing_label_column_is_one_finding() {
        let (labels, findings) = apply("filename\na.jpg\n", &["a.jpg"]);
        assert_eq!(labels, [None]);
        assert_eq!(findings.len(), 1, "{findings:?}");
        assert!(findings[0].contains("missing-column"), "{findings:?}");
    }
}
