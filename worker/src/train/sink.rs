//! Where a fold's events go: the gRPC stream in production, a vector in tests.

use foldtrain_proto::FoldEvent;

/// The receiver of a fold's events went away; training stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the event receiver closed")]
pub struct SinkClosed;

pub trait EventSink: Send {
    fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed>;
}

/// Collects every event in memory.
impl EventSink for Vec<FoldEvent> {
    fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
        self.push(event);
        Ok(())
    }
}

/// A bounded tokio channel: the training thread blocks when the stream is slow, so
/// checkpoints are never dropped and memory stays bounded.
impl EventSink for tokio::sync::mpsc::Sender<FoldEvent> {
    fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
        self.blocking_send(event).map_err(|_| SinkClosed)
    }
}

/// An unbounded std channel, for callers outside any runtime.
impl EventSink for std::sync::mpsc::Sender<FoldEvent> {
    fn send(&mut self, event: FoldEvent) -> Result<(), SinkClosed> {
        std::sync::mpsc::Sender::send(self, event).map_err(|_| SinkClosed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foldtrain_proto::task::FoldSummary;

    fn done() -> FoldEvent {
        FoldEvent::Done(FoldSummary {
            best_epoch: 1,
            best_val_loss: 0.5,
            epochs_run: 1,
            early_stopped: false,
        })
    }

    #[test]
    fn channel_sinks_report_a_closed_receiver() {
        let (mut tx, rx) = std::sync::mpsc::channel();
        EventSink::send(&mut tx, done()).unwrap();
        assert_eq!(rx.recv().unwrap(), done());
        drop(rx);
        assert_eq!(EventSink::send(&mut tx, done()), Err(SinkClosed));

        let (mut tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        assert_eq!(EventSink::send(&mut tx, done()), Err(SinkClosed));
    }
}
