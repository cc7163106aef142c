//! Folds for a loaded data set: grouped when it has groups, plain stratified otherwise.

use super::{SplitError, stratified_folds, stratified_group_folds};
use crate::dataset::Dataset;

/// The fold of every training entry, in row order: `StratifiedGroupKFold` when the data
/// set was read with a group column, `StratifiedKFold` otherwise.
pub fn dataset_folds(
    dataset: &Dataset,
    folds: u32,
    shuffle: bool,
    seed: u64,
) -> Result<Vec<u32>, SplitError> {
    let labels = dataset.train_label_names();
    match (&dataset.group_column, dataset.train_groups()) {
        (Some(_), Some(groups)) => stratified_group_folds(&labels, &groups, folds, shuffle, seed),
        _ => stratified_folds(&labels, folds, shuffle, seed),
    }
}
