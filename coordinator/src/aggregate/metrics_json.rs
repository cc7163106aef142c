//! `metrics.json`: per-fold scores at each fold's best epoch, their CV mean and std, and
//! the out-of-fold scores over every training row.

use foldtrain_proto::metrics::{ConfusionMatrix, argmax_rows, mean_std};
use serde::{Deserialize, Serialize};

use super::FoldResult;
use crate::error::{CoordinatorError, Result};
use crate::store::JobRecord;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsJson {
    pub classes: Vec<String>,
    pub folds: Vec<FoldMetrics>,
    pub cv: CvSummary,
    pub oof: OofMetrics,
}

/// One fold's validation scores at its best epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldMetrics {
    pub fold: u32,
    pub best_epoch: u32,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub val_f1: f64,
    pub epochs_run: u32,
    pub early_stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    /// Population standard deviation (numpy's default, ddof=0).
    pub std: f64,
}

impl MeanStd {
    fn of(values: impl Iterator<Item = f64>) -> Self {
        let (mean, std) = mean_std(&values.collect::<Vec<_>>());
        Self { mean, std }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    pub val_loss: MeanStd,
    pub val_accuracy: MeanStd,
    pub val_f1: MeanStd,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub class: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OofMetrics {
    pub rows: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub mcc: f64,
    pub per_class: Vec<ClassMetrics>,
    /// `confusion_matrix[true][predicted]`, classes in `classes` order.
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// Computes the metrics from the folds' results and the out-of-fold matrix.
pub fn compute(job: &JobRecord, folds: &[FoldResult], oof: &[f32]) -> Result<MetricsJson> {
    let classes = job.class_names.len();
    let per_fold = folds
        .iter()
        .map(|f| {
            let best = f
                .history
                .iter()
                .find(|e| e.epoch == f.summary.best_epoch)
                .ok_or_else(|| CoordinatorError::BadFoldResult {
                    job: job.id.clone(),
                    fold: f.fold,
                    message: format!(
                        "best epoch {} is missing from its history",
                        f.summary.best_epoch
                    ),
                })?;
            Ok(FoldMetrics {
                fold: f.fold.0,
                best_epoch: best.epoch,
                val_loss: best.val_loss,
                val_accuracy: best.val_accuracy,
                val_f1: best.val_f1,
                epochs_run: f.summary.epochs_run,
                early_stopped: f.summary.early_stopped,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let cv = CvSummary {
        val_loss: MeanStd::of(per_fold.iter().map(|f| f.val_loss)),
        val_accuracy: MeanStd::of(per_fold.iter().map(|f| f.val_accuracy)),
        val_f1: MeanStd::of(per_fold.iter().map(|f| f.val_f1)),
    };
    let y_true: Vec<u32> = job
        .train
        .iter()
        .map(|i| i.label.unwrap_or_default())
        .collect();
    let y_pred = argmax_rows(oof, classes);
    let cm = ConfusionMatrix::new(classes, &y_true, &y_pred);
    let per_class = cm
        .per_class()
        .into_iter()
        .zip(&job.class_names)
        .map(|(s, class)| ClassMetrics {
            class: class.clone(),
            precision: s.precision,
            recall: s.recall,
            f1: s.f1,
            support: s.support,
        })
        .collect();
    Ok(MetricsJson {
        classes: job.class_names.clone(),
        folds: per_fold,
        cv,
        oof: OofMetrics {
            rows: y_true.len(),
            accuracy: cm.accuracy(),
            macro_f1: cm.macro_f1(),
            mcc: cm.mcc(),
            per_class,
            confusion_matrix: cm.matrix.clone(),
        },
    })
}

impl MetricsJson {
    /// The short summary `status` shows: CV means and stds plus the OOF headline scores.
    pub fn summary_json(&self) -> String {
        serde_json::json!({
            "cv": self.cv,
            "oof": {
                "accuracy": self.oof.accuracy,
                "macro_f1": self.oof.macro_f1,
                "mcc": self.oof.mcc,
            },
        })
        .to_string()
    }
}
