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
    /// Scores on the test set, when its labels were given (`--test-truth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<TestMetrics>,
    /// Where the job's time went; filled in once aggregation and the report are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<super::JobTiming>,
}

/// Accuracy and macro-F1 of one set of predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub accuracy: f64,
    pub macro_f1: f64,
}

impl Scores {
    fn of(classes: usize, y_true: &[u32], y_pred: &[u32]) -> Self {
        let cm = ConfusionMatrix::new(classes, y_true, y_pred);
        Self {
            accuracy: cm.accuracy(),
            macro_f1: cm.macro_f1(),
        }
    }
}

/// What predicting the training set's most frequent class for every row scores: the
/// floor a model must clear on imbalanced data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MajorityBaseline {
    pub class: String,
    pub accuracy: f64,
    pub macro_f1: f64,
}

impl MajorityBaseline {
    /// The baseline of `majority` (a class index) on the rows labelled `y_true`.
    fn of(job: &JobRecord, majority: u32, y_true: &[u32]) -> Self {
        let scores = Scores::of(job.class_names.len(), y_true, &vec![majority; y_true.len()]);
        Self {
            class: job.class_names[majority as usize].clone(),
            accuracy: scores.accuracy,
            macro_f1: scores.macro_f1,
        }
    }
}

/// The test set scored against its labels: each fold's model alone, and the ensemble
/// (the folds' mean probabilities), which is what the ensemble buys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestMetrics {
    pub rows: usize,
    pub ensemble: Scores,
    pub folds: Vec<FoldTestScores>,
    pub majority_baseline: MajorityBaseline,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FoldTestScores {
    pub fold: u32,
    pub accuracy: f64,
    pub macro_f1: f64,
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
    /// The same rows all predicted as the most frequent training class.
    pub majority_baseline: MajorityBaseline,
}

/// Computes the metrics from the folds' results, the out-of-fold matrix and the
/// ensemble's test probabilities.
pub fn compute(
    job: &JobRecord,
    folds: &[FoldResult],
    oof: &[f32],
    ensemble: &[f32],
) -> Result<MetricsJson> {
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
    let majority = majority_class(classes, &y_true);
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
            majority_baseline: MajorityBaseline::of(job, majority, &y_true),
        },
        test: test_metrics(job, folds, ensemble, majority),
        timing: None,
    })
}

/// The most frequent label; the lowest class index wins a tie.
fn majority_class(classes: usize, labels: &[u32]) -> u32 {
    let mut counts = vec![0u64; classes];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let best = counts.iter().copied().max().unwrap_or(0);
    counts.iter().position(|&c| c == best).unwrap_or(0) as u32
}

/// Test scores when every test row has a label; `None` otherwise.
fn test_metrics(
    job: &JobRecord,
    folds: &[FoldResult],
    ensemble: &[f32],
    majority: u32,
) -> Option<TestMetrics> {
    let y_true: Vec<u32> = job.test.iter().map(|i| i.label).collect::<Option<_>>()?;
    if y_true.is_empty() {
        return None;
    }
    let classes = job.class_names.len();
    let scores = |probs: &[f32]| Scores::of(classes, &y_true, &argmax_rows(probs, classes));
    Some(TestMetrics {
        rows: y_true.len(),
        ensemble: scores(ensemble),
        folds: folds
            .iter()
            .map(|f| {
                let s = scores(&f.test);
                FoldTestScores {
                    fold: f.fold.0,
                    accuracy: s.accuracy,
                    macro_f1: s.macro_f1,
                }
            })
            .collect(),
        majority_baseline: MajorityBaseline::of(job, majority, &y_true),
    })
}

impl MetricsJson {
    /// The short summary `status` shows: CV means and stds, the OOF headline scores next to
    /// the majority-class baseline, and the test scores when the test set was labelled.
    pub fn summary_json(&self) -> String {
        let mut summary = serde_json::json!({
            "cv": self.cv,
            "oof": {
                "accuracy": self.oof.accuracy,
                "macro_f1": self.oof.macro_f1,
                "mcc": self.oof.mcc,
                "majority_baseline": self.oof.majority_baseline,
            },
        });
        if let Some(test) = &self.test {
            summary["test"] = serde_json::json!(test);
        }
        summary.to_string()
    }
}
