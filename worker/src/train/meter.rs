//! Whole-epoch metric accumulation: the loss averaged over rows (each batch's mean loss
//! weighted by its size, as Keras's loss tracker does) and accuracy and macro-F1 from
//! every prediction of the epoch, never averaged per batch.

use foldtrain_proto::metrics::ConfusionMatrix;
use serde::{Deserialize, Serialize};
use tch::{Device, TchError, Tensor};

/// Serialisable, so an epoch handed back part way (a draining worker) resumes with the
/// rows it had already counted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

    /// Adds one batch from its mean loss, its labels as the batch carries them and the
    /// model's logits; each row's predicted class is its argmax.
    pub fn add_logits(
        &mut self,
        mean_loss: f64,
        labels: &[i64],
        logits: &Tensor,
    ) -> Result<(), TchError> {
        let predicted = argmax(logits)?;
        let truth: Vec<u32> = labels.iter().map(|&l| l as u32).collect();
        self.add_batch(mean_loss, &truth, &predicted);
        Ok(())
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

/// Row-wise argmax as class indices.
fn argmax(logits: &Tensor) -> Result<Vec<u32>, TchError> {
    let idx = logits.argmax(-1, false).to_device(Device::Cpu);
    Ok(Vec::<i64>::try_from(&idx)?
        .into_iter()
        .map(|i| i as u32)
        .collect())
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

    #[test]
    fn logits_count_by_their_argmax() {
        let mut m = EpochMeter::default();
        let logits = Tensor::from_slice(&[0.1f32, 2.0, -1.0, 3.0, 0.0, 0.5]).view([2, 3]);
        m.add_logits(0.5, &[1, 2], &logits).unwrap();
        let r = m.finish(3);
        assert_eq!((r.rows, r.accuracy), (2, 0.5));
        assert!((r.loss - 0.5).abs() < 1e-12);
    }
}
