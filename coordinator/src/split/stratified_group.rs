//! Stratified k-fold assignment that keeps every group in one fold, identical row for
//! row to scikit-learn's `StratifiedGroupKFold(n_splits, shuffle, random_state)`.

use super::SplitError;
use super::numpy_order::{column_keys, isclose, pairwise_sum, std_contiguous, unique_inverse};
use super::stratified::{check_fold_count, seeded};

/// The fold of every row, as `StratifiedGroupKFold.split(X, labels, groups)` assigns it.
///
/// Classes and groups are numbered in `np.unique`'s sorted order (integer-looking columns
/// as integers, as `pandas.read_csv` would give them). Groups are then placed greedily,
/// most class-skewed first, each into the fold that keeps the per-class spread smallest;
/// the floating-point arithmetic follows numpy's summation order so that ties break the
/// same way.
pub fn stratified_group_folds<L: AsRef<str>, G: AsRef<str>>(
    labels: &[L],
    groups: &[G],
    folds: u32,
    shuffle: bool,
    seed: u64,
) -> Result<Vec<u32>, SplitError> {
    if labels.len() != groups.len() {
        return Err(SplitError::LengthMismatch {
            labels: labels.len(),
            groups: groups.len(),
        });
    }
    check_fold_count(folds, labels.len())?;
    let mut rng = seeded(shuffle, seed)?;
    let k = folds as usize;

    let (y_inv, y_cnt) = unique_inverse(&column_keys(labels));
    let largest = y_cnt.iter().copied().max().unwrap_or(0);
    if largest < k {
        return Err(SplitError::ClassesTooSmall { folds, largest });
    }
    let n_classes = y_cnt.len();
    let (mut groups_inv, groups_cnt) = unique_inverse(&column_keys(groups));
    let n_groups = groups_cnt.len();
    if k > n_groups {
        return Err(SplitError::TooFewGroups {
            folds,
            groups: n_groups,
        });
    }

    let mut counts_per_group = vec![vec![0.0f64; n_classes]; n_groups];
    for (&class, &group) in y_inv.iter().zip(&groups_inv) {
        counts_per_group[group][class] += 1.0;
    }
    if let Some(rng) = rng.as_mut() {
        let mut perm: Vec<usize> = (0..n_groups).collect();
        rng.shuffle(&mut perm);
        counts_per_group = perm.iter().map(|&g| counts_per_group[g].clone()).collect();
        let mut inv_perm = vec![0; n_groups];
        for (new, &old) in perm.iter().enumerate() {
            inv_perm[old] = new;
        }
        for g in &mut groups_inv {
            *g = inv_perm[*g];
        }
    }

    // np.argsort(-std, kind="stable"): most skewed groups first, ties in (shuffled) order.
    let neg_std: Vec<f64> = counts_per_group
        .iter()
        .map(|row| -std_contiguous(row))
        .collect();
    let mut order: Vec<usize> = (0..n_groups).collect();
    order.sort_by(|&a, &b| neg_std[a].total_cmp(&neg_std[b]));

    let class_totals: Vec<f64> = y_cnt.iter().map(|&c| c as f64).collect();
    let mut counts_per_fold = vec![vec![0.0f64; n_classes]; k];
    let mut fold_of_group = vec![0u32; n_groups];
    for group in order {
        let group_counts = &counts_per_group[group];
        let best = best_fold(&mut counts_per_fold, &class_totals, group_counts);
        for (total, add) in counts_per_fold[best].iter_mut().zip(group_counts) {
            *total += add;
        }
        fold_of_group[group] = best as u32;
    }
    Ok(groups_inv.iter().map(|&g| fold_of_group[g]).collect())
}

/// `StratifiedGroupKFold._find_best_fold`: the fold whose taking the group gives the
/// smallest mean (over classes) of the per-class standard deviation across folds of the
/// class share; near-ties go to the fold holding fewer rows, then to the lower index.
fn best_fold(counts_per_fold: &mut [Vec<f64>], class_totals: &[f64], group: &[f64]) -> usize {
    let k = counts_per_fold.len();
    let n_classes = class_totals.len();
    let mut best = 0;
    let mut min_eval = f64::INFINITY;
    let mut min_samples = f64::INFINITY;
    let mut column = vec![0.0f64; k];
    let mut std_per_class = vec![0.0f64; n_classes];
    for i in 0..k {
        add_row(&mut counts_per_fold[i], group, 1.0);
        for (class, std) in std_per_class.iter_mut().enumerate() {
            for (fold, value) in column.iter_mut().enumerate() {
                *value = counts_per_fold[fold][class] / class_totals[class];
            }
            *std = std_across_folds(&column, n_classes);
        }
        add_row(&mut counts_per_fold[i], group, -1.0);
        let fold_eval = pairwise_sum(&std_per_class) / n_classes as f64;
        let samples_in_fold = pairwise_sum(&counts_per_fold[i]);
        if fold_eval < min_eval || (isclose(fold_eval, min_eval) && samples_in_fold < min_samples) {
            min_eval = fold_eval;
            min_samples = samples_in_fold;
            best = i;
        }
    }
    best
}

fn add_row(row: &mut [f64], group: &[f64], sign: f64) {
    for (total, add) in row.iter_mut().zip(group) {
        *total += sign * add;
    }
}

/// `np.std(matrix, axis=0)` for one column of a C-ordered folds x classes matrix. numpy
/// reduces that axis as an outer loop, adding row after row, unless the class axis has
/// length one, when the folds become the contiguous inner axis and are summed pairwise.
fn std_across_folds(column: &[f64], n_classes: usize) -> f64 {
    if n_classes == 1 {
        return std_contiguous(column);
    }
    let n = column.len() as f64;
    let mean = column.iter().fold(0.0, |acc, v| acc + v) / n;
    let var = column
        .iter()
        .fold(0.0, |acc, v| acc + (v - mean) * (v - mean))
        / n;
    var.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scikit_learn_docstring_example() {
        // The example in StratifiedGroupKFold's docstring (n_splits=3, no shuffle).
        let y = [0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0].map(|v| v.to_string());
        let groups = [1, 1, 2, 2, 3, 3, 3, 4, 5, 5, 5, 5, 6, 6, 7, 8, 8].map(|v| v.to_string());
        let folds = stratified_group_folds(&y, &groups, 3, false, 0).unwrap();
        assert_eq!(folds, [1, 1, 1, 1, 0, 0, 0, 2, 2, 2, 2, 2, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn no_group_spans_two_folds() {
        let y: Vec<String> = (0..60).map(|i| format!("c{}", i % 3)).collect();
        let groups: Vec<String> = (0..60).map(|i| format!("g{}", i / 4)).collect();
        let folds = stratified_group_folds(&y, &groups, 4, true, 3).unwrap();
        for g in 0..15 {
            let of_group: Vec<u32> = (0..60).filter(|i| i / 4 == g).map(|i| folds[i]).collect();
            assert!(
                of_group.iter().all(|&f| f == of_group[0]),
                "group {g}: {of_group:?}"
            );
        }
    }

    #[test]
    fn refuses_fewer_groups_than_folds_and_mismatched_lengths() {
        let y = ["a", "a", "a", "b", "b", "b"];
        assert_eq!(
            stratified_group_folds(&y, &["g1", "g1", "g2", "g2", "g2", "g1"], 3, true, 0),
            Err(SplitError::TooFewGroups {
                folds: 3,
                groups: 2
            })
        );
        assert_eq!(
            stratified_group_folds(&y, &["g1"], 3, true, 0),
            Err(SplitError::LengthMismatch {
                labels: 6,
                groups: 1
            })
        );
    }
}
