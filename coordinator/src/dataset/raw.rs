//! Rows as a layout reads them, before the files are inspected.

use std::collections::HashMap;
use std::path::PathBuf;

use super::csv_table::Row;
use super::finding::{Finding, FindingKind, Location};
use super::spec::Columns;

/// One image named by a layout: where it was named, its file, label and group.
#[derive(Debug, Clone)]
pub(crate) struct RawRow {
    pub location: Location,
    pub name: String,
    pub path: PathBuf,
    pub label: Option<String>,
    pub group: Option<String>,
}

#[derive(Debug, Default)]
pub(crate) struct RawRows {
    pub train: Vec<RawRow>,
    pub test: Vec<RawRow>,
}

/// The group of a CSV row read from `group_col` (`Some(None)` when there is no group
/// column). An empty group is an error finding at `location`, and `None` tells the caller
/// to leave the row out: splitting by group needs every row's group.
pub(crate) fn row_group(
    row: &Row,
    group_col: Option<usize>,
    columns: &Columns,
    location: &Location,
    findings: &mut Vec<Finding>,
) -> Option<Option<String>> {
    let group = group_col.map(|c| row.fields[c].clone());
    if group.as_ref().is_some_and(|g| g.is_empty()) {
        let column = columns.group.as_deref().unwrap_or_default();
        findings.push(Finding::error(
            FindingKind::MissingGroup,
            location.clone(),
            format!("the group column {column:?} is empty on this row"),
        ));
        return None;
    }
    Some(group)
}

/// Keeps the first row of each name; every later one is a duplicate error that points
/// back at the first.
pub(crate) fn drop_duplicates(rows: Vec<RawRow>, findings: &mut Vec<Finding>) -> Vec<RawRow> {
    let mut first_line: HashMap<String, Option<u64>> = HashMap::new();
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(first) = first_line.get(&row.name) {
            let first = first.map_or_else(|| "earlier".to_owned(), |l| format!("on line {l}"));
            findings.push(Finding::error(
                FindingKind::DuplicateFilename,
                row.location.clone(),
                format!(
                    "{:?} is listed again (first {first}); each image may appear once",
                    row.name
                ),
            ));
            continue;
        }
        first_line.insert(row.name.clone(), row.location.line);
        kept.push(row);
    }
    kept
}
