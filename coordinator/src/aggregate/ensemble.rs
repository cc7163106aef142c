//! Combining the folds: the mean of their test probabilities, and the out-of-fold
//! matrix that puts every training row's validation probabilities back in input order.

use foldtrain_proto::FoldIndex;

use super::FoldResult;
use crate::error::{CoordinatorError, Result};
use crate::store::JobRecord;

/// The element-wise mean of the folds' test probabilities (`rows × classes`, row-major).
/// Sums run in f64 so the mean is as exact as f32 output allows.
pub fn mean_test_probabilities(job: &JobRecord, folds: &[FoldResult]) -> Result<Vec<f32>> {
    let classes = job.class_names.len();
    let len = job.test.len() * classes;
    let mut sum = vec![0f64; len];
    for f in folds {
        if f.test.len() != len {
            return Err(mismatch(job, f.fold, "test", f.test.len(), len));
        }
        for (s, p) in sum.iter_mut().zip(&f.test) {
            *s += *p as f64;
        }
    }
    let n = folds.len().max(1) as f64;
    Ok(sum.into_iter().map(|s| (s / n) as f32).collect())
}

/// Out-of-fold probabilities of every training row, in input order, and the fold that
/// produced each row. Fails unless every row is covered exactly once.
pub fn out_of_fold(job: &JobRecord, folds: &[FoldResult]) -> Result<Vec<f32>> {
    let classes = job.class_names.len();
    let mut oof = vec![f32::NAN; job.train.len() * classes];
    let mut covered = vec![false; job.train.len()];
    for f in folds {
        let rows = job.val_rows(f.fold);
        if f.oof.len() != rows.len() * classes {
            return Err(mismatch(
                job,
                f.fold,
                "out-of-fold",
                f.oof.len(),
                rows.len() * classes,
            ));
        }
        for (i, &row) in rows.iter().enumerate() {
            if std::mem::replace(&mut covered[row], true) {
                return Err(CoordinatorError::BadFoldResult {
                    job: job.id.clone(),
                    fold: f.fold,
                    message: format!("train row {row} ({}) is covered twice", job.train[row].name),
                });
            }
            oof[row * classes..(row + 1) * classes]
                .copy_from_slice(&f.oof[i * classes..(i + 1) * classes]);
        }
    }
    if let Some(row) = covered.iter().position(|c| !c) {
        return Err(CoordinatorError::BadFoldResult {
            job: job.id.clone(),
            fold: FoldIndex(job.fold_of[row]),
            message: format!(
                "train row {row} ({}) has no out-of-fold prediction",
                job.train[row].name
            ),
        });
    }
    Ok(oof)
}

fn mismatch(
    job: &JobRecord,
    fold: FoldIndex,
    what: &str,
    got: usize,
    want: usize,
) -> CoordinatorError {
    CoordinatorError::BadFoldResult {
        job: job.id.clone(),
        fold,
        message: format!("{what} probabilities have {got} values, expected {want}"),
    }
}
