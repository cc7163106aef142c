//! The tracing spans of a fold's training loop: one per epoch, carrying its metrics, and
//! an optional sample of per-batch spans.

use foldtrain_proto::task::EpochRecord;
use tracing::{Span, field, info_span};

/// An `epoch` span whose metric attributes are filled in by [`record_epoch`].
pub fn epoch_span(fold: u32, epoch: u32) -> Span {
    info_span!(
        "epoch",
        fold,
        epoch,
        loss = field::Empty,
        accuracy = field::Empty,
        val_loss = field::Empty,
        val_accuracy = field::Empty,
        val_f1 = field::Empty,
        lr = field::Empty,
        images_per_sec = field::Empty
    )
}

/// Records an epoch's results on its span; `val_f1` is the macro-F1 on the held-out fold.
pub fn record_epoch(span: &Span, r: &EpochRecord) {
    span.record("loss", r.loss);
    span.record("accuracy", r.accuracy);
    span.record("val_loss", r.val_loss);
    span.record("val_accuracy", r.val_accuracy);
    span.record("val_f1", r.val_f1);
    span.record("lr", r.lr);
    span.record("images_per_sec", r.images_per_sec);
}

/// Which training batches get a span of their own. A span per batch would flood the
/// exporter (thousands per epoch on a real data set), so they are off unless sampled.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpans {
    every: u32,
}

impl BatchSpans {
    /// A `batch` span for every `every`-th batch (the first included); 0 for none.
    pub fn every(every: u32) -> Self {
        Self { every }
    }

    /// The span for batch `index` (from 0) of `epoch`, or a disabled span when it is not
    /// sampled; entering a disabled span costs next to nothing.
    pub fn span(&self, epoch: u32, index: usize, rows: usize) -> Span {
        if self.sampled(index) {
            info_span!("batch", epoch, batch = index + 1, rows, loss = field::Empty)
        } else {
            Span::none()
        }
    }

    fn sampled(&self, index: usize) -> bool {
        self.every > 0 && index.is_multiple_of(self.every as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_spans_are_off_by_default_and_sampled_on_request() {
        let off = BatchSpans::every(0);
        assert!((0..100).all(|i| !off.sampled(i)));
        let every = BatchSpans::every(4);
        let sampled: Vec<usize> = (0..10).filter(|&i| every.sampled(i)).collect();
        assert_eq!(sampled, vec![0, 4, 8]);
        assert!((0..5).all(|i| BatchSpans::every(1).sampled(i)));
    }

    #[test]
    fn unsampled_batches_get_a_disabled_span() {
        assert!(BatchSpans::every(0).span(1, 0, 16).is_none());
    }
}
