//! Rows as a layout reads them, before the files are inspected.

use std::collections::HashMap;
use std::path::PathBuf;

use super::finding::{Finding, FindingKind, Location};

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
