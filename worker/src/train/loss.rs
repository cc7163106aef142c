//! The training loss: categorical cross-entropy with Keras-style label smoothing
//! (y·(1 − a) + a/K), optional per-class sample weights, averaged over the batch size.

use tch::{Kind, Tensor};

/// Mean over the batch of −Σ_k ỹ_k · log softmax(z)_k, where ỹ is the smoothed one-hot target.
/// With `class_weights`, each row's term is multiplied by its class's weight and the sum is
/// still divided by the batch size, as Keras's `SUM_OVER_BATCH_SIZE` reduction does.
pub fn smoothed_cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f64,
    class_weights: Option<&Tensor>,
) -> Tensor {
    let classes = logits.size()[1];
    let log_probs = logits.to_kind(Kind::Float).log_softmax(-1, Kind::Float);
    let one_hot = labels.one_hot(classes).to_kind(Kind::Float);
    let target = one_hot * (1.0 - smoothing) + smoothing / classes as f64;
    let per_row = -(target * log_probs).sum_dim_intlist(-1, false, Kind::Float);
    let per_row = match class_weights {
        Some(w) => per_row * w.index_select(0, labels),
        None => per_row,
    };
    per_row.mean(Kind::Float)
}

/// scikit-learn's `compute_class_weight("balanced")`: n / (K · count_k). A class with no
/// rows gets weight 0; no row can ever use it.
pub fn balanced_class_weights(labels: &[u32], classes: usize) -> Vec<f64> {
    let mut counts = vec![0u64; classes];
    for &l in labels {
        counts[l as usize] += 1;
    }
    let n = labels.len() as f64;
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n / (classes as f64 * c as f64)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(t: &Tensor) -> f64 {
        t.double_value(&[])
    }

    #[test]
    fn matches_a_hand_computed_smoothed_loss() {
        let logits = Tensor::from_slice(&[2.0f32, 0.0, -1.0, 0.5, 0.5, 0.5]).view([2, 3]);
        let labels = Tensor::from_slice(&[0i64, 2]);
        let a = 0.1;
        let lse0 = (2f64.exp() + 1.0 + (-1f64).exp()).ln();
        let logp0 = [2.0 - lse0, -lse0, -1.0 - lse0];
        let target0 = [1.0 - a + a / 3.0, a / 3.0, a / 3.0];
        let row0: f64 = -target0.iter().zip(logp0).map(|(t, l)| t * l).sum::<f64>();
        let row1 = 3f64.ln(); // uniform logits: every log prob is -ln 3, targets sum to 1
        let got = value(&smoothed_cross_entropy(&logits, &labels, a, None));
        assert!((got - (row0 + row1) / 2.0).abs() < 1e-6, "{got}");
    }

    #[test]
    fn zero_smoothing_is_plain_cross_entropy() {
        let logits = Tensor::from_slice(&[1.0f32, -0.5, 0.25, 3.0]).view([2, 2]);
        let labels = Tensor::from_slice(&[1i64, 0]);
        let ours = value(&smoothed_cross_entropy(&logits, &labels, 0.0, None));
        let torch = value(&logits.cross_entropy_for_logits(&labels));
        assert!((ours - torch).abs() < 1e-6);
    }

    #[test]
    fn class_weights_scale_rows_and_divide_by_batch_size() {
        let logits = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0]).view([2, 2]);
        let labels = Tensor::from_slice(&[0i64, 1]);
        let weights = Tensor::from_slice(&[3.0f32, 0.0]);
        let got = value(&smoothed_cross_entropy(
            &logits,
            &labels,
            0.0,
            Some(&weights),
        ));
        assert!((got - 3.0 * 2f64.ln() / 2.0).abs() < 1e-6, "{got}");
    }

    #[test]
    fn balanced_weights_follow_sklearn() {
        // sklearn: compute_class_weight("balanced", classes=[0,1,2], y=[0,0,0,1]) -> [0.444.., 1.333.., inf->n/a]
        let w = balanced_class_weights(&[0, 0, 0, 1], 3);
        assert!((w[0] - 4.0 / 9.0).abs() < 1e-12);
        assert!((w[1] - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(w[2], 0.0);
    }
}
