//! Stratified k-fold assignment, identical row for row to scikit-learn's
//! `StratifiedKFold(n_splits, shuffle, random_state)`.

use std::collections::HashMap;

use super::SplitError;
use super::mt19937::RandomState;
use super::numpy_order::column_keys;

/// The fold (test-set index) of every row, as `StratifiedKFold.split` would assign it.
///
/// `labels` must be in the row order a scikit-learn user would pass (the CSV order):
/// classes are numbered by first appearance, and each class's block of fold indices is
/// shuffled in that class order. Integer-looking labels compare as integers, as they
/// would after `pandas.read_csv`.
pub fn stratified_folds<S: AsRef<str>>(
    labels: &[S],
    folds: u32,
    shuffle: bool,
    seed: u64,
) -> Result<Vec<u32>, SplitError> {
    check_fold_count(folds, labels.len())?;
    let mut rng = seeded(shuffle, seed)?;

    let keys = column_keys(labels);
    let mut first_seen = HashMap::new();
    let encoded: Vec<usize> = keys
        .iter()
        .map(|key| {
            let next = first_seen.len();
            *first_seen.entry(key).or_insert(next)
        })
        .collect();
    let n_classes = first_seen.len();
    let mut counts = vec![0usize; n_classes];
    for &c in &encoded {
        counts[c] += 1;
    }
    let k = folds as usize;
    let largest = counts.iter().copied().max().unwrap_or(0);
    if largest < k {
        return Err(SplitError::ClassesTooSmall { folds, largest });
    }

    // scikit-learn deals the label-sorted rows round robin into folds, so a class
    // occupying sorted positions start..start+count gets position p into fold p % k.
    let mut allocation = vec![vec![0usize; n_classes]; k];
    let mut position = 0;
    for (class, &count) in counts.iter().enumerate() {
        for p in position..position + count {
            allocation[p % k][class] += 1;
        }
        position += count;
    }

    let mut rows_of_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (row, &c) in encoded.iter().enumerate() {
        rows_of_class[c].push(row);
    }
    let mut assignment = vec![0u32; labels.len()];
    for (class, rows) in rows_of_class.iter().enumerate() {
        let mut folds_for_class: Vec<u32> = (0..folds)
            .flat_map(|fold| std::iter::repeat_n(fold, allocation[fold as usize][class]))
            .collect();
        if let Some(rng) = rng.as_mut() {
            rng.shuffle(&mut folds_for_class);
        }
        for (&row, &fold) in rows.iter().zip(&folds_for_class) {
            assignment[row] = fold;
        }
    }
    Ok(assignment)
}

/// `_BaseKFold`'s checks: at least two folds, and no more folds than rows.
pub(crate) fn check_fold_count(folds: u32, samples: usize) -> Result<(), SplitError> {
    if folds < 2 {
        return Err(SplitError::TooFewFolds(folds));
    }
    if folds as usize > samples {
        return Err(SplitError::TooFewRows { folds, samples });
    }
    Ok(())
}

/// `check_random_state(seed)` when shuffling; no generator otherwise.
pub(crate) fn seeded(shuffle: bool, seed: u64) -> Result<Option<RandomState>, SplitError> {
    if !shuffle {
        return Ok(None);
    }
    let seed = u32::try_from(seed).map_err(|_| SplitError::SeedOutOfRange(seed))?;
    Ok(Some(RandomState::new(seed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unshuffled_folds_are_blocks_in_row_order() {
        // StratifiedKFold(3).split(X, ["a"]*6 + ["b"]*3): a's rows get 0,0,1,1,2,2.
        let labels = ["a", "a", "a", "a", "a", "a", "b", "b", "b"];
        let folds = stratified_folds(&labels, 3, false, 0).unwrap();
        assert_eq!(folds, [0, 0, 1, 1, 2, 2, 0, 1, 2]);
    }

    #[test]
    fn refuses_what_scikit_learn_refuses() {
        assert_eq!(
            stratified_folds(&["a", "b"], 1, true, 0),
            Err(SplitError::TooFewFolds(1))
        );
        assert_eq!(
            stratified_folds(&["a", "b"], 3, true, 0),
            Err(SplitError::TooFewRows {
                folds: 3,
                samples: 2
            })
        );
        assert_eq!(
            stratified_folds(&["a", "a", "b", "b"], 3, true, 0),
            Err(SplitError::ClassesTooSmall {
                folds: 3,
                largest: 2
            })
        );
        assert_eq!(
            stratified_folds(&["a", "a", "a"], 2, true, 1 << 32),
            Err(SplitError::SeedOutOfRange(1 << 32))
        );
        // A seed is irrelevant without shuffling, as in scikit-learn.
        assert!(stratified_folds(&["a", "a", "a"], 2, false, 1 << 32).is_ok());
    }

    #[test]
    fn a_class_smaller_than_k_still_splits_like_scikit_learn() {
        // scikit-learn only warns; the small class lands in its first folds.
        let labels = ["a", "a", "a", "a", "b"];
        let folds = stratified_folds(&labels, 4, false, 0).unwrap();
        assert_eq!(folds, [0, 1, 2, 3, 0]);
    }
}
