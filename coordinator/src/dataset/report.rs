//! The validation report: every finding, and the label distribution of what was kept.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::finding::{Finding, FindingKind, Severity};

/// What checking a data set found, and what it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidationReport {
    /// In the order found: layout and CSV problems first, then files, then classes.
    pub findings: Vec<Finding>,
    /// Image files read, hashed and checked.
    pub images_checked: usize,
    pub train_rows: usize,
    pub test_rows: usize,
    /// Rows left out under `--skip-bad`.
    pub skipped: usize,
    /// Per class, in sorted class order.
    pub distribution: Vec<ClassCount>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClassCount {
    pub class: String,
    pub count: usize,
    /// Fraction of the training rows, 0 to 1.
    pub share: f64,
}

impl ValidationReport {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    pub fn error_count(&self) -> usize {
        self.errors().count()
    }

    pub fn warning_count(&self) -> usize {
        self.findings.len() - self.error_count()
    }

    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }

    /// Largest class over smallest class; `None` without classes.
    pub fn imbalance_ratio(&self) -> Option<f64> {
        let counts = self.distribution.iter().map(|c| c.count);
        let (min, max) = (counts.clone().min()?, counts.max()?);
        (min > 0).then(|| max as f64 / min as f64)
    }

    /// The report as text. At most `max_per_kind` findings of each kind are listed
    /// (0 lists all); the rest are counted.
    pub fn render(&self, max_per_kind: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "training rows: {}    test rows: {}    left out: {}    classes: {}",
            self.train_rows,
            self.test_rows,
            self.skipped,
            self.distribution.len()
        );
        if !self.distribution.is_empty() {
            let width = self
                .distribution
                .iter()
                .map(|c| c.class.chars().count())
                .max()
                .unwrap_or(5);
            let width = width.max("class".len());
            let _ = writeln!(
                out,
                "\nlabel distribution\n  {:<width$}  {:>7}  {:>6}",
                "class", "count", "share"
            );
            for c in &self.distribution {
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:>7}  {:>5.1}%",
                    c.class,
                    c.count,
                    c.share * 100.0
                );
            }
            if let Some(ratio) = self.imbalance_ratio() {
                let _ = writeln!(
                    out,
                    "  imbalance ratio (largest / smallest class): {ratio:.1}"
                );
            }
        }
        let _ = writeln!(
            out,
            "\n{} error(s), {} warning(s)",
            self.error_count(),
            self.warning_count()
        );
        let mut shown: BTreeMap<(Severity, FindingKind), usize> = BTreeMap::new();
        for finding in &self.findings {
            let seen = shown.entry((finding.severity, finding.kind)).or_default();
            *seen += 1;
            if max_per_kind == 0 || *seen <= max_per_kind {
                let _ = writeln!(out, "{finding}");
            }
        }
        for ((severity, kind), count) in shown {
            if max_per_kind > 0 && count > max_per_kind {
                let severity = if severity == Severity::Error {
                    "error"
                } else {
                    "warning"
                };
                let _ = writeln!(
                    out,
                    "... and {} more {severity}[{}] findings",
                    count - max_per_kind,
                    kind.name()
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::finding::Location;

    fn class(name: &str, count: usize, total: usize) -> ClassCount {
        ClassCount {
            class: name.into(),
            count,
            share: count as f64 / total as f64,
        }
    }

    #[test]
    fn renders_distribution_imbalance_and_capped_findings() {
        let mut report = ValidationReport {
            train_rows: 80,
            distribution: vec![class("Normal clean mucosa", 73, 80), class("Polyp", 7, 80)],
            ..Default::default()
        };
        for i in 0..4 {
            report.findings.push(Finding::warning(
                FindingKind::ZeroByteImage,
                Location {
                    line: Some(i + 2),
                    ..Default::default()
                },
                "zero bytes",
            ));
        }
        let text = report.render(2);
        assert!(
            text.contains("Normal clean mucosa       73   91.2%"),
            "{text}"
        );
        assert!(
            text.contains("imbalance ratio (largest / smallest class): 10.4"),
            "{text}"
        );
        assert!(text.contains("0 error(s), 4 warning(s)"), "{text}");
        assert!(
            text.contains("line 3") && !text.contains("line 4"),
            "{text}"
        );
        assert!(
            text.contains("... and 2 more warning[zero-byte-image] findings"),
            "{text}"
        );
        assert!(!report.has_errors());
    }
}
