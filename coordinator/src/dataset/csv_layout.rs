//! The seed's layout: a training CSV (filename,label[,group]) naming files in a folder,
//! and optionally a test CSV (filename) naming files in another.

use std::path::Path;

use super::csv_table::Table;
use super::finding::{Finding, FindingKind, Location};
use super::paths::join_inside;
use super::raw::{RawRow, RawRows, row_group};
use super::spec::{Columns, TestSet};

pub(crate) fn read_csv_layout(
    train_csv: &Path,
    train_dir: &Path,
    test: Option<&TestSet>,
    columns: &Columns,
    findings: &mut Vec<Finding>,
) -> RawRows {
    RawRows {
        train: read_rows(train_csv, train_dir, columns, true, findings),
        test: test.map_or_else(Vec::new, |t| {
            read_rows(&t.csv, &t.dir, columns, false, findings)
        }),
    }
}

/// Rows of one CSV; rows with an unusable name, or (when `labelled`) without a label or
/// group, become error findings and are left out.
pub(crate) fn read_rows(
    csv: &Path,
    dir: &Path,
    columns: &Columns,
    labelled: bool,
    findings: &mut Vec<Finding>,
) -> Vec<RawRow> {
    let Some(table) = Table::read(csv, findings) else {
        return Vec::new();
    };
    let filename_col = table.column(columns.filename(), findings);
    let label_col = labelled.then(|| table.column(columns.csv_label(), findings));
    let group_col = match (labelled, columns.group.as_deref()) {
        (true, Some(group)) => Some(table.column(group, findings)),
        _ => None,
    };
    // A missing column has been reported; no row can be read without it.
    let Some(filename_col) = filename_col else {
        return Vec::new();
    };
    if label_col == Some(None) || group_col == Some(None) {
        return Vec::new();
    }
    let (label_col, group_col) = (label_col.flatten(), group_col.flatten());

    let mut rows = Vec::with_capacity(table.rows.len());
    for row in &table.rows {
        let name = row.fields[filename_col].clone();
        let location = Location {
            source: Some(csv.to_path_buf()),
            line: Some(row.line),
            file: Some(name.clone()),
        };
        let path = match join_inside(dir, &name) {
            Ok(path) => path,
            Err(message) => {
                findings.push(Finding::error(FindingKind::PathEscapes, location, message));
                continue;
            }
        };
        let label = label_col.map(|c| row.fields[c].clone());
        if label.as_ref().is_some_and(|l| l.is_empty()) {
            findings.push(Finding::error(
                FindingKind::MissingLabel,
                location,
                format!(
                    "the {:?} column is empty on this training row",
                    columns.csv_label()
                ),
            ));
            continue;
        }
        let Some(group) = row_group(row, group_col, columns, &location, findings) else {
            continue;
        };
        rows.push(RawRow {
            location,
            name,
            path,
            label,
            group,
        });
    }
    rows
}
