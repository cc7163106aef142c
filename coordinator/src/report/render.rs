//! Rendering every chart and the page into a results directory.

use std::path::Path;

use super::error::ReportError;
use super::html::{self, Images};
use super::{confusion, curves, label_chart};
use crate::aggregate::ResultsSummary;
use crate::store::{JobRecord, write_atomic};

/// Writes `report.html`, `label_distribution.png`, `curves_fold<k>.png` and
/// `confusion_matrix.png` for `job` into `dir`, each atomically, and returns the names
/// written (relative to `dir`).
///
/// A chart that fails does not stop the others or the page, which then leaves it out;
/// the first such failure is returned after everything else is written.
pub fn render_report(
    dir: &Path,
    summary: &ResultsSummary,
    job: &JobRecord,
) -> Result<Vec<String>, ReportError> {
    let metrics = &summary.metrics;
    let mut written = Vec::new();
    let mut first_error = None;
    let mut put = |name: String, bytes: Result<Vec<u8>, ReportError>| -> Option<String> {
        let outcome = bytes.and_then(|bytes| {
            write_atomic(&dir.join(&name), &bytes).map_err(|source| ReportError::Write {
                file: name.clone(),
                source,
            })
        });
        match outcome {
            Ok(()) => {
                written.push(name.clone());
                Some(name)
            }
            Err(e) => {
                first_error.get_or_insert(e);
                None
            }
        }
    };

    let mut images = Images {
        label_distribution: put(
            label_chart::FILE.to_string(),
            label_chart::render(&summary.label_counts),
        ),
        ..Images::default()
    };
    for (fold, history) in &summary.histories {
        let best = metrics
            .folds
            .iter()
            .find(|f| f.fold == fold.0)
            .map(|f| f.best_epoch)
            .ok_or_else(|| {
                ReportError::Inconsistent(format!("fold {fold} has a history but no metrics"))
            });
        let png = best.and_then(|best| curves::render(fold.0, history, best));
        if let Some(name) = put(curves::file_name(fold.0), png) {
            images.curves.push((fold.0, name));
        }
    }
    images.confusion_matrix = put(
        confusion::FILE.to_string(),
        confusion::render(&metrics.classes, &metrics.oof.confusion_matrix),
    );
    let page = html::render(job, summary, &images);
    put(html::FILE.to_string(), Ok(page.into_bytes()));

    match first_error {
        Some(e) => Err(e),
        None => Ok(written),
    }
}
