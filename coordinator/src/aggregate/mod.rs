//! Turning finished folds into the results contract: the ensemble's predictions and
//! probabilities, the out-of-fold table, metrics.json, per-fold files and the config.

mod csv_out;
mod ensemble;
mod metrics_json;
mod timing;

#[cfg(test)]
mod tests;

use std::path::Path;

use foldtrain_proto::FoldIndex;
use foldtrain_proto::metrics::argmax_rows;
use foldtrain_proto::task::{EpochRecord, FoldSummary};

pub use ensemble::{mean_test_probabilities, out_of_fold};
pub use metrics_json::{
    ClassMetrics, CvSummary, FoldMetrics, FoldTestScores, MajorityBaseline, MeanStd, MetricsJson,
    OofMetrics, Scores, TestMetrics,
};
pub use timing::{ClientTiming, FoldSeconds, JobTiming, TimingInputs};

use crate::error::Result;
use crate::store::{JobRecord, write_atomic};

/// Everything one finished fold contributes.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldResult {
    pub fold: FoldIndex,
    pub summary: FoldSummary,
    pub history: Vec<EpochRecord>,
    /// Validation probabilities, rows in the fold's validation order (input order).
    pub oof: Vec<f32>,
    /// Test probabilities, rows in test input order.
    pub test: Vec<f32>,
    /// The best weights (safetensors), when the fold sent them.
    pub best_weights: Option<Vec<u8>>,
}

/// What the written results contain, for whatever renders a report from them
/// (plots of the label distribution, the curves and the confusion matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct ResultsSummary {
    pub metrics: MetricsJson,
    /// Training rows per class, classes in sorted order.
    pub label_counts: Vec<(String, u64)>,
    pub histories: Vec<(FoldIndex, Vec<EpochRecord>)>,
    /// The ensemble's test probabilities, `test rows × classes`.
    pub test_probabilities: Vec<f32>,
    /// Paths written, relative to the results directory.
    pub files: Vec<String>,
}

/// Writes one finished fold's files (`folds/K/...`: history, test probabilities, best
/// weights) into `dir`, each atomically, as soon as the fold is done: a job that is later
/// cancelled, fails or loses its coordinator keeps what was finished. Returns the paths.
pub fn write_fold_results(job: &JobRecord, fold: &FoldResult, dir: &Path) -> Result<Vec<String>> {
    let k = fold.fold.0;
    let mut files = vec![
        (
            format!("folds/{k}/history.csv"),
            csv_out::history_csv(&fold.history)?,
        ),
        (
            format!("folds/{k}/probabilities.csv"),
            csv_out::probabilities_csv(job, &fold.test)?,
        ),
    ];
    if let Some(weights) = &fold.best_weights {
        files.push((format!("folds/{k}/best.safetensors"), weights.clone()));
    }
    for (name, bytes) in &files {
        write_atomic(&dir.join(name), bytes)?;
    }
    Ok(files.into_iter().map(|(name, _)| name).collect())
}

/// Writes the results of `job` into `dir`, each file atomically, and returns what they hold.
pub fn write_results(job: &JobRecord, folds: &[FoldResult], dir: &Path) -> Result<ResultsSummary> {
    let classes = job.class_names.len();
    let mut folds = folds.to_vec();
    folds.sort_by_key(|f| f.fold);

    let mean = mean_test_probabilities(job, &folds)?;
    let oof = out_of_fold(job, &folds)?;
    let metrics = metrics_json::compute(job, &folds, &oof, &mean)?;
    let mut files = Vec::new();
    let mut put = |name: String, bytes: &[u8]| -> Result<()> {
        write_atomic(&dir.join(&name), bytes)?;
        files.push(name);
        Ok(())
    };

    put(
        "predictions.csv".into(),
        &csv_out::predictions_csv(job, &argmax_rows(&mean, classes))?,
    )?;
    put(
        "probabilities.csv".into(),
        &csv_out::probabilities_csv(job, &mean)?,
    )?;
    put(
        "oof.csv".into(),
        &csv_out::oof_csv(job, &oof, &argmax_rows(&oof, classes))?,
    )?;
    let json = serde_json::to_vec_pretty(&metrics)
        .map_err(|e| crate::error::CoordinatorError::encode("metrics.json", e))?;
    put("metrics.json".into(), &json)?;
    put("config.toml".into(), job.config.to_toml().as_bytes())?;
    for f in &folds {
        files.extend(write_fold_results(job, f, dir)?);
    }

    let mut label_counts: Vec<(String, u64)> =
        job.class_names.iter().map(|c| (c.clone(), 0)).collect();
    for image in &job.train {
        if let Some(l) = image.label {
            label_counts[l as usize].1 += 1;
        }
    }
    Ok(ResultsSummary {
        metrics,
        label_counts,
        histories: folds.iter().map(|f| (f.fold, f.history.clone())).collect(),
        test_probabilities: mean,
        files,
    })
}
