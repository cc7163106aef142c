//! One problem found in a data set: what it is, how serious, and where (file and CSV line).

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// What kind of problem a finding is; the report groups findings by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    UnreadableCsv,
    MissingColumn,
    MalformedRow,
    MissingFile,
    UnreadableFile,
    PathEscapes,
    MissingLabel,
    MissingGroup,
    DuplicateFilename,
    ClassTooSmall,
    TooFewGroups,
    NoTrainingRows,
    ZeroByteImage,
    UndecodableImage,
    TruncatedImage,
    LabelCase,
    LabelMismatch,
    UnlistedImage,
}

impl FindingKind {
    /// A short stable name, as printed in the report.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::UnreadableCsv => "unreadable-csv",
            FindingKind::MissingColumn => "missing-column",
            FindingKind::MalformedRow => "malformed-row",
            FindingKind::MissingFile => "missing-file",
            FindingKind::UnreadableFile => "unreadable-file",
            FindingKind::PathEscapes => "path-escapes",
            FindingKind::MissingLabel => "missing-label",
            FindingKind::MissingGroup => "missing-group",
            FindingKind::DuplicateFilename => "duplicate-filename",
            FindingKind::ClassTooSmall => "class-too-small",
            FindingKind::TooFewGroups => "too-few-groups",
            FindingKind::NoTrainingRows => "no-training-rows",
            FindingKind::ZeroByteImage => "zero-byte-image",
            FindingKind::UndecodableImage => "undecodable-image",
            FindingKind::TruncatedImage => "truncated-image",
            FindingKind::LabelCase => "label-case",
            FindingKind::LabelMismatch => "label-mismatch",
            FindingKind::UnlistedImage => "unlisted-image",
        }
    }

    /// Bad image files: errors, or warnings (and left out) under `--skip-bad`.
    pub fn is_bad_image(self) -> bool {
        matches!(
            self,
            FindingKind::ZeroByteImage
                | FindingKind::UndecodableImage
                | FindingKind::TruncatedImage
        )
    }
}

/// Where a finding points: the CSV (or folder) and its line, and the image file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The CSV file, or the image folder for the folder layout.
    pub source: Option<PathBuf>,
    /// One-based line in `source` (the header is line 1).
    pub line: Option<u64>,
    /// The image as named in the CSV, or its path relative to the image folder.
    pub file: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        match (&self.source, self.line) {
            (Some(source), Some(line)) => parts.push(format!("{} line {line}", source.display())),
            (Some(source), None) => parts.push(source.display().to_string()),
            (None, Some(line)) => parts.push(format!("line {line}")),
            (None, None) => {}
        }
        if let Some(file) = &self.file {
            parts.push(format!("{file:?}"));
        }
        f.write_str(&parts.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub kind: FindingKind,
    pub location: Location,
    pub message: String,
}

impl Finding {
    pub fn error(kind: FindingKind, location: Location, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            kind,
            location,
            message: message.into(),
        }
    }

    pub fn warning(kind: FindingKind, location: Location, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            kind,
            location,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let location = self.location.to_string();
        if location.is_empty() {
            write!(f, "{severity}[{}]: {}", self.kind.name(), self.message)
        } else {
            write!(
                f,
                "{severity}[{}]: {location}: {}",
                self.kind.name(),
                self.message
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_file_and_line() {
        let finding = Finding::error(
            FindingKind::MissingFile,
            Location {
                source: Some(PathBuf::from("Training_set.csv")),
                line: Some(5),
                file: Some("Image_3.jpg".into()),
            },
            "file does not exist: train/Image_3.jpg",
        );
        assert_eq!(
            finding.to_string(),
            "error[missing-file]: Training_set.csv line 5, \"Image_3.jpg\": file does not exist: train/Image_3.jpg"
        );
    }
}
