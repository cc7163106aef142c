//! Whole-epoch metric accumulation: the loss averaged over rows (each batch's mean loss
//! weighted by its size, as Keras's loss tracker does) and accuracy and macro-F1 from
//! every prediction of the epoch, never averaged per batch.

use foldtrain_proto::metrics::ConfusionMatrix;

#[derive(Debug, Clone, Default)]
pub struct EpochMeter {
    loss_sum: f64,
    rows: u64,
    y_true: Vec<u32>,
    y_pred: Vec<u32>,
}

/// The finished numbers of one pass over a split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassMetrics {
    pub loss: f64,
    pub accuracy: f64,
    pub f1: f64,
    pub rows: u64,
}

impl EpochMeter {
    /// Adds one batch: its mean loss, true labels and predicted classes.
    pub fn add_batch(&mut self, mean_loss: f64, labels: &[u32], predicted: &[u32]) {
        debug_assert_eq!(labels.len(), predicted.len());
        self.loss_sum += mean_loss * labels.len() as f64;
        self.rows += labels.len() as u64;
        self.y_true.extend_from_slice(labels);
        self.y_pred.extend_from_slice(predicted);
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The running mean loss so far (for progress reports).
    pub fn mean_loss(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.loss_sum / self.rows as f64
        }
    }

    pub fn finish(&self, classes: usize) -> PassMetrics {
        let cm = ConfusionMatrix::new(classes, &self.y_true, &self.y_pred);
        PassMetrics {
            loss: self.mean_loss(),
            accuracy: cm.accuracy(),
            f1: cm.macro_f1(),
            rows: self.rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_is_row_weighted_and_f1_is_over_the_whole_epoch() {
        let mut m = EpochMeter::default();
        // Batch 1: 3 rows, mean loss 1.0; batch 2: 1 row, mean loss 3.0.
        m.add_batch(1.0, &[0, 0, 1], &[0, 1, 1]);
        m.add_batch(3.0, &[2], &[2]);
        let r = m.finish(3);
        assert!((r.loss - 1.5).abs() < 1e-12);
        assert!((r.accuracy - 0.75).abs() < 1e-12);
        // Per class F1 over all 4 rows: c0 = 2/3, c1 = 2/3, c2 = 1 -> macro 7/9.
        // (Averaging the two batches' macro-F1 would give a different number.)
        assert!((r.f1 - 7.0 / 9.0).abs() < 1e-12, "{}", r.f1);
        assert_eq!(r.rows, 4);
    }
}
