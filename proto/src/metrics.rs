//! Classification metrics both sides must agree on: the worker reports them per epoch,
//! the coordinator recomputes them on the out-of-fold predictions. Semantics follow
//! scikit-learn, so numbers can be compared with a notebook's.

use serde::{Deserialize, Serialize};

/// `matrix[true][predicted]` counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    pub classes: usize,
    pub matrix: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// Panics if a label or prediction is out of range: callers hold validated indices.
    pub fn new(classes: usize, y_true: &[u32], y_pred: &[u32]) -> Self {
        assert_eq!(
            y_true.len(),
            y_pred.len(),
            "y_true and y_pred differ in length"
        );
        let mut matrix = vec![vec![0u64; classes]; classes];
        for (&t, &p) in y_true.iter().zip(y_pred) {
            matrix[t as usize][p as usize] += 1;
        }
        Self { classes, matrix }
    }

    pub fn total(&self) -> u64 {
        self.matrix.iter().flatten().sum()
    }

    fn true_count(&self, class: usize) -> u64 {
        self.matrix[class].iter().sum()
    }

    fn predicted_count(&self, class: usize) -> u64 {
        self.matrix.iter().map(|row| row[class]).sum()
    }

    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.classes).map(|c| self.matrix[c][c]).sum();
        ratio(correct, self.total())
    }

    /// Precision, recall and F1 of each class, with scikit-learn's `zero_division=0`.
    pub fn per_class(&self) -> Vec<ClassScores> {
        (0..self.classes)
            .map(|c| {
                let tp = self.matrix[c][c];
                let precision = ratio(tp, self.predicted_count(c));
                let recall = ratio(tp, self.true_count(c));
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScores {
                    precision,
                    recall,
                    f1,
                    support: self.true_count(c),
                }
            })
            .collect()
    }

    /// Unweighted mean F1 over the classes present in the true or predicted labels,
    /// as `sklearn.metrics.f1_score(average="macro")` computes it.
    pub fn macro_f1(&self) -> f64 {
        let scores = self.per_class();
        let present: Vec<f64> = (0..self.classes)
            .filter(|&c| self.true_count(c) + self.predicted_count(c) > 0)
            .map(|c| scores[c].f1)
            .collect();
        if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f64>() / present.len() as f64
        }
    }

    /// Multiclass Matthews correlation coefficient (`sklearn.metrics.matthews_corrcoef`).
    pub fn mcc(&self) -> f64 {
        let s = self.total() as f64;
        let c: f64 = (0..self.classes).map(|k| self.matrix[k][k] as f64).sum();
        let t: Vec<f64> = (0..self.classes)
            .map(|k| self.true_count(k) as f64)
            .collect();
        let p: Vec<f64> = (0..self.classes)
            .map(|k| self.predicted_count(k) as f64)
            .collect();
        let tp: f64 = t.iter().zip(&p).map(|(a, b)| a * b).sum();
        let cov_ytyp = c * s - tp;
        let cov_ypyp = s * s - p.iter().map(|x| x * x).sum::<f64>();
        let cov_ytyt = s * s - t.iter().map(|x| x * x).sum::<f64>();
        let denom = (cov_ytyt * cov_ypyp).sqrt();
        if denom == 0.0 { 0.0 } else { cov_ytyp / denom }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Row-wise argmax of a row-major `rows × classes` probability matrix; the first
/// maximum wins on ties, as numpy's `argmax` does.
pub fn argmax_rows(probs: &[f32], classes: usize) -> Vec<u32> {
    probs
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}

/// Mean and population standard deviation (ddof=0, numpy's default).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn matches_sklearn_on_a_small_case() {
        // scikit-learn 1.9.1: y_true=[0,0,1,1,2,2,2], y_pred=[0,1,1,1,2,0,2]
        // accuracy_score = 0.7142857142857143
        // f1_score(average="macro") = 0.7000000000000001
        // matthews_corrcoef = 0.59375
        let cm = ConfusionMatrix::new(3, &[0, 0, 1, 1, 2, 2, 2], &[0, 1, 1, 1, 2, 0, 2]);
        assert!((cm.accuracy() - 0.7142857142857143).abs() < 1e-12);
        assert!(
            (cm.macro_f1() - 0.7000000000000001).abs() < 1e-12,
            "{}",
            cm.macro_f1()
        );
        assert!((cm.mcc() - 0.59375).abs() < 1e-12, "{}", cm.mcc());
    }

    #[test]
    fn macro_f1_skips_classes_absent_from_both_sides() {
        let cm = ConfusionMatrix::new(4, &[0, 1], &[0, 1]);
        assert_eq!(cm.macro_f1(), 1.0);
        assert_eq!(cm.per_class()[3].f1, 0.0);
    }

    #[test]
    fn degenerate_inputs_give_zero_not_nan() {
        let cm = ConfusionMatrix::new(3, &[0, 0, 0], &[0, 0, 0]);
        assert_eq!(cm.mcc(), 0.0);
        assert_eq!(ConfusionMatrix::new(2, &[], &[]).accuracy(), 0.0);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(
            argmax_rows(&[0.2, 0.5, 0.5, 0.9, 0.05, 0.05], 3),
            vec![1, 0]
        );
    }

    proptest! {
        #[test]
        fn scores_stay_in_range(pairs in proptest::collection::vec((0u32..5, 0u32..5), 1..200)) {
            let (t, p): (Vec<u32>, Vec<u32>) = pairs.into_iter().unzip();
            let cm = ConfusionMatrix::new(5, &t, &p);
            prop_assert!((0.0..=1.0).contains(&cm.accuracy()));
            prop_assert!((0.0..=1.0).contains(&cm.macro_f1()));
            prop_assert!((-1.0..=1.0).contains(&cm.mcc()));
            prop_assert_eq!(cm.total(), t.len() as u64);
        }
    }
}
