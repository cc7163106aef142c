//! How numpy orders and sums values, where scikit-learn's results depend on it: the
//! sorted order of `np.unique`, and the summation order of `np.sum`, `np.mean`, `np.std`.

use std::cmp::Ordering;

/// A label or group as scikit-learn receives it from `pandas.read_csv`: integers when
/// every value of the column is one, strings otherwise. Orders as `np.unique` sorts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum NumpyKey<'a> {
    Int(i64),
    Str(&'a str),
}

impl Ord for NumpyKey<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (NumpyKey::Int(a), NumpyKey::Int(b)) => a.cmp(b),
            (NumpyKey::Str(a), NumpyKey::Str(b)) => a.cmp(b),
            // A column is either all integers or all strings; this arm only keeps Ord total.
            (NumpyKey::Int(_), NumpyKey::Str(_)) => Ordering::Less,
            (NumpyKey::Str(_), NumpyKey::Int(_)) => Ordering::Greater,
        }
    }
}

impl PartialOrd for NumpyKey<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Keys for a whole column: integers only when every value parses as one.
pub(crate) fn column_keys<S: AsRef<str>>(values: &[S]) -> Vec<NumpyKey<'_>> {
    let ints: Option<Vec<i64>> = values.iter().map(|v| v.as_ref().parse().ok()).collect();
    match ints {
        Some(ints) => ints.into_iter().map(NumpyKey::Int).collect(),
        None => values.iter().map(|v| NumpyKey::Str(v.as_ref())).collect(),
    }
}

/// `np.unique(values, return_inverse=True, return_counts=True)`: each value's index
/// among the sorted distinct values, and how often each distinct value occurs.
pub(crate) fn unique_inverse(keys: &[NumpyKey<'_>]) -> (Vec<usize>, Vec<usize>) {
    let mut distinct: Vec<&NumpyKey<'_>> = keys.iter().collect();
    distinct.sort();
    distinct.dedup();
    let inverse: Vec<usize> = keys
        .iter()
        .map(|k| {
            distinct
                .binary_search(&k)
                .expect("every key is among the distinct keys")
        })
        .collect();
    let mut counts = vec![0; distinct.len()];
    for &i in &inverse {
        counts[i] += 1;
    }
    (inverse, counts)
}

/// numpy's pairwise summation of a contiguous run of float64 (the inner loop of
/// `np.add.reduce` along a contiguous axis): eight accumulators up to 128 values,
/// recursive halving beyond.
pub(crate) fn pairwise_sum(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 8 {
        return values.iter().fold(0.0, |acc, v| acc + v);
    }
    if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&values[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += values[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &values[whole..] {
            res += v;
        }
        return res;
    }
    let mut half = n / 2;
    half -= half % 8;
    pairwise_sum(&values[..half]) + pairwise_sum(&values[half..])
}

/// `np.std(row)` of a contiguous row (population standard deviation, ddof=0).
pub(crate) fn std_contiguous(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = pairwise_sum(values) / n;
    let squares: Vec<f64> = values.iter().map(|v| (v - mean) * (v - mean)).collect();
    (pairwise_sum(&squares) / n).sqrt()
}

/// `np.isclose(a, b)` with its default tolerances, for finite `a`.
pub(crate) fn isclose(a: f64, b: f64) -> bool {
    if b.is_infinite() {
        return a == b;
    }
    (a - b).abs() <= 1e-8 + 1e-5 * b.abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_columns_sort_numerically_and_text_columns_by_code_point() {
        let ints = column_keys(&["10", "9", "100"]);
        let (inverse, counts) = unique_inverse(&ints);
        assert_eq!(inverse, [1, 0, 2]);
        assert_eq!(counts, [1, 1, 1]);
        let text = column_keys(&["10", "9", "x"]);
        assert_eq!(unique_inverse(&text).0, [0, 1, 2]);
        let names = column_keys(&["b", "Éclair", "B", "b"]);
        assert_eq!(unique_inverse(&names), (vec![1, 2, 0, 1], vec![1, 2, 1]));
    }

    #[test]
    fn pairwise_sum_uses_numpys_association_order() {
        // With eight accumulators, 1e16 + 1 + ... loses the ones differently than a
        // left-to-right sum would; these values are np.sum's results.
        let mut values = vec![1.0; 17];
        values[0] = 1e16;
        assert_eq!(pairwise_sum(&values), 1e16 + 16.0);
        let left_to_right = values.iter().fold(0.0, |a, v| a + v);
        assert_eq!(left_to_right, 1e16);
        assert_eq!(pairwise_sum(&[0.5; 300]), 150.0);
    }

    #[test]
    fn std_is_population_std() {
        assert_eq!(std_contiguous(&[1.0, 1.0, 1.0]), 0.0);
        assert!((std_contiguous(&[0.0, 2.0]) - 1.0).abs() < 1e-15);
        assert!(isclose(1.0, 1.0 + 1e-9));
        assert!(!isclose(1.0, 1.1));
        assert!(!isclose(0.5, f64::INFINITY));
    }
}
