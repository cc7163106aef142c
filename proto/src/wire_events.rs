//! Fold events on the wire: whole domain payloads (checkpoints, probabilities) are cut
//! into chunks of at most [`CHUNK_SIZE`] and put back together, hash-verified, on the
//! other side.

use std::collections::HashMap;

use crate::ids::{AttemptId, BlobHash, FoldIndex, JobId};
use crate::states::FailureCause;
use crate::task::{CheckpointKind, FoldEvent, FoldFailure, FoldSummary};
use crate::{CHUNK_SIZE, ProtoError, pb};

/// Cuts one domain event into the wire messages that carry it, in order.
pub fn encode_fold_event(
    job: &JobId,
    fold: FoldIndex,
    attempt: AttemptId,
    event: &FoldEvent,
) -> Vec<pb::FoldEvent> {
    wire_events(event)
        .into_iter()
        .map(|event| pb::FoldEvent {
            job_id: job.to_string(),
            fold: fold.0,
            attempt: attempt.0,
            event: Some(event),
        })
        .collect()
}

/// The wire form of one event: a single message, or one per chunk of its payload.
fn wire_events(event: &FoldEvent) -> Vec<pb::fold_event::Event> {
    use pb::fold_event::Event;
    match event {
        FoldEvent::Progress {
            epoch,
            batch,
            batches,
            loss,
            images_per_sec,
            phase,
        } => vec![Event::Progress(pb::Progress {
            epoch: *epoch,
            batch: *batch,
            batches: *batches,
            loss: *loss,
            images_per_sec: *images_per_sec,
            phase: (*phase).to_string(),
        })],
        FoldEvent::Epoch(record) => vec![Event::Epoch((*record).into())],
        FoldEvent::Checkpoint { kind, epoch, bytes } => {
            let kind = match kind {
                CheckpointKind::Best => pb::CheckpointKind::Best,
                CheckpointKind::Latest => pb::CheckpointKind::Latest,
            };
            chunks(bytes)
                .map(|chunk| {
                    Event::Checkpoint(pb::CheckpointChunk {
                        kind: kind as i32,
                        epoch: *epoch,
                        chunk: Some(chunk),
                    })
                })
                .collect()
        }
        FoldEvent::Oof {
            rows,
            classes,
            probs,
        } => probability_events(*rows, *classes, probs, Event::Oof),
        FoldEvent::Test {
            rows,
            classes,
            probs,
        } => probability_events(*rows, *classes, probs, Event::Test),
        FoldEvent::Done(s) => vec![Event::Done(pb::FoldDone {
            best_epoch: s.best_epoch,
            best_val_loss: s.best_val_loss,
            epochs_run: s.epochs_run,
            early_stopped: s.early_stopped,
        })],
        FoldEvent::Failed(f) => vec![Event::Error(pb::FoldError {
            message: f.message.clone(),
            retryable: f.retryable(),
            cause: f.cause as i32,
        })],
    }
}

fn probability_events(
    rows: u32,
    classes: u32,
    probs: &[f32],
    event: fn(pb::ProbabilityChunk) -> pb::fold_event::Event,
) -> Vec<pb::fold_event::Event> {
    chunks(&f32_bytes(probs))
        .map(|chunk| {
            event(pb::ProbabilityChunk {
                chunk: Some(chunk),
                rows,
                classes,
            })
        })
        .collect()
}

/// Probabilities as they travel and are stored: little-endian f32, one after another.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The f32 values of [`f32_bytes`]; a trailing partial value is ignored.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// The chunks of one payload; an empty payload still gets one (last) chunk.
fn chunks(bytes: &[u8]) -> impl Iterator<Item = pb::Chunk> + '_ {
    let hash = BlobHash::of(bytes);
    let count = bytes.len().div_ceil(CHUNK_SIZE).max(1);
    (0..count).map(move |i| {
        let start = i * CHUNK_SIZE;
        let end = (start + CHUNK_SIZE).min(bytes.len());
        let last = i + 1 == count;
        pb::Chunk {
            offset: start as u64,
            data: bytes[start..end].to_vec(),
            last,
            hash: if last { hash.0.to_vec() } else { Vec::new() },
            total_size: if last { bytes.len() as u64 } else { 0 },
        }
    })
}

/// Which payload a chunk belongs to; payloads of different kinds may interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PayloadKey {
    Checkpoint(CheckpointKind, u32),
    Oof,
    Test,
}

impl std::fmt::Display for PayloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadKey::Checkpoint(CheckpointKind::Best, epoch) => {
                write!(f, "the best checkpoint of epoch {epoch}")
            }
            PayloadKey::Checkpoint(CheckpointKind::Latest, epoch) => {
                write!(f, "the latest checkpoint of epoch {epoch}")
            }
            PayloadKey::Oof => f.write_str("the out-of-fold probabilities"),
            PayloadKey::Test => f.write_str("the test probabilities"),
        }
    }
}

/// Reassembles wire events into domain events, checking offsets, sizes and hashes.
///
/// Without limits it holds whatever a peer sends; a receiver that does not trust its
/// peer sets [`Self::with_max_payload`] and [`Self::with_max_open_payloads`], which bound
/// its memory to about their product.
#[derive(Debug, Default)]
pub struct FoldEventAssembler {
    partial: HashMap<PayloadKey, Vec<u8>>,
    /// Upper bound on any one payload, so a misbehaving peer cannot exhaust memory.
    max_payload: Option<u64>,
    /// Upper bound on payloads begun and not finished, for the same reason.
    max_open: Option<usize>,
}

impl FoldEventAssembler {
    /// An assembler without limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rejects payloads larger than `bytes`, as soon as they grow past it.
    pub fn with_max_payload(mut self, bytes: u64) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Rejects a payload that begins while `count` others are unfinished.
    pub fn with_max_open_payloads(mut self, count: usize) -> Self {
        self.max_open = Some(count);
        self
    }

    /// Takes the next wire event; returns the domain event once it is complete.
    pub fn push(&mut self, event: pb::FoldEvent) -> Result<Option<FoldEvent>, ProtoError> {
        use pb::fold_event::Event;
        let event = event
            .event
            .ok_or(ProtoError::MissingField("fold_event.event"))?;
        Ok(match event {
            Event::Progress(p) => Some(FoldEvent::Progress {
                epoch: p.epoch,
                batch: p.batch,
                batches: p.batches,
                loss: p.loss,
                images_per_sec: p.images_per_sec,
                phase: phase_name(&p.phase)?,
            }),
            Event::Epoch(e) => Some(FoldEvent::Epoch(e.into())),
            Event::Checkpoint(c) => {
                let kind = match pb::CheckpointKind::try_from(c.kind) {
                    Ok(pb::CheckpointKind::Best) => CheckpointKind::Best,
                    Ok(pb::CheckpointKind::Latest) => CheckpointKind::Latest,
                    _ => {
                        return Err(ProtoError::invalid(
                            "checkpoint.kind",
                            format!("unknown kind {}", c.kind),
                        ));
                    }
                };
                let chunk = c
                    .chunk
                    .ok_or(ProtoError::MissingField("checkpoint.chunk"))?;
                self.take(PayloadKey::Checkpoint(kind, c.epoch), chunk)?
                    .map(|bytes| FoldEvent::Checkpoint {
                        kind,
                        epoch: c.epoch,
                        bytes,
                    })
            }
            Event::Oof(p) => {
                let chunk = p.chunk.ok_or(ProtoError::MissingField("oof.chunk"))?;
                match self.take(PayloadKey::Oof, chunk)? {
                    Some(bytes) => {
                        let probs = probabilities("oof", &bytes, p.rows, p.classes)?;
                        Some(FoldEvent::Oof {
                            rows: p.rows,
                            classes: p.classes,
                            probs,
                        })
                    }
                    None => None,
                }
            }
            Event::Test(p) => {
                let chunk = p.chunk.ok_or(ProtoError::MissingField("test.chunk"))?;
                match self.take(PayloadKey::Test, chunk)? {
                    Some(bytes) => {
                        let probs = probabilities("test", &bytes, p.rows, p.classes)?;
                        Some(FoldEvent::Test {
                            rows: p.rows,
                            classes: p.classes,
                            probs,
                        })
                    }
                    None => None,
                }
            }
            Event::Done(d) => Some(FoldEvent::Done(FoldSummary {
                best_epoch: d.best_epoch,
                best_val_loss: d.best_val_loss,
                epochs_run: d.epochs_run,
                early_stopped: d.early_stopped,
            })),
            // A cause this side does not know (a newer peer) is kept as unspecified,
            // which is not retried; the message still says what happened.
            Event::Error(e) => Some(FoldEvent::Failed(FoldFailure {
                cause: FailureCause::try_from(e.cause).unwrap_or(FailureCause::Unspecified),
                message: e.message,
            })),
        })
    }

    /// Whether a payload was started but not finished (the stream ended mid-payload).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }

    fn take(&mut self, key: PayloadKey, chunk: pb::Chunk) -> Result<Option<Vec<u8>>, ProtoError> {
        if chunk.data.len() > CHUNK_SIZE {
            return Err(ProtoError::invalid(
                "chunk.data",
                format!(
                    "chunk of {} bytes exceeds the {CHUNK_SIZE}-byte limit",
                    chunk.data.len()
                ),
            ));
        }
        // A payload whole in one chunk is never held open, so it does not count.
        if let Some(max) = self.max_open
            && self.partial.len() >= max
            && !chunk.last
            && !self.partial.contains_key(&key)
        {
            let mut open: Vec<String> = self.partial.keys().map(ToString::to_string).collect();
            open.sort();
            return Err(ProtoError::LimitExceeded {
                what: format!(
                    "{key}, begun while {} other payloads were unfinished ({})",
                    open.len(),
                    open.join(", ")
                ),
                limit: format!("the limit of {max} unfinished payloads at once"),
            });
        }
        let buffer = self.partial.entry(key).or_default();
        if chunk.offset != buffer.len() as u64 {
            let expected = buffer.len();
            self.partial.remove(&key);
            return Err(ProtoError::invalid(
                "chunk.offset",
                format!("expected offset {expected}, got {}", chunk.offset),
            ));
        }
        buffer.extend_from_slice(&chunk.data);
        if let Some(max) = self.max_payload
            && buffer.len() as u64 > max
        {
            let received = buffer.len();
            self.partial.remove(&key);
            return Err(ProtoError::LimitExceeded {
                what: format!("{key} ({received} bytes received so far)"),
                limit: format!("the {max}-byte limit on one payload"),
            });
        }
        if !chunk.last {
            return Ok(None);
        }
        let bytes = self.partial.remove(&key).unwrap_or_default();
        if chunk.total_size != bytes.len() as u64 {
            return Err(ProtoError::invalid(
                "chunk.total_size",
                format!(
                    "payload announced {} bytes, received {}",
                    chunk.total_size,
                    bytes.len()
                ),
            ));
        }
        let expected = BlobHash::from_slice(&chunk.hash)?;
        let actual = BlobHash::of(&bytes);
        if expected != actual {
            return Err(ProtoError::invalid(
                "chunk.hash",
                format!("payload hash mismatch: expected {expected}, got {actual}"),
            ));
        }
        Ok(Some(bytes))
    }
}

fn phase_name(phase: &str) -> Result<&'static str, ProtoError> {
    match phase {
        "train" => Ok("train"),
        "val" => Ok("val"),
        "test" => Ok("test"),
        other => Err(ProtoError::invalid(
            "progress.phase",
            format!("{other:?} is not one of train, val, test"),
        )),
    }
}

fn probabilities(
    field: &'static str,
    bytes: &[u8],
    rows: u32,
    classes: u32,
) -> Result<Vec<f32>, ProtoError> {
    // In u128: rows x classes x 4 overflows u64 for the largest values a peer can send.
    let expected = u128::from(rows) * u128::from(classes) * 4;
    if bytes.len() as u128 != expected {
        return Err(ProtoError::invalid(
            field,
            format!(
                "{rows} rows x {classes} classes need {expected} bytes, got {}",
                bytes.len()
            ),
        ));
    }
    Ok(f32_values(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::EpochRecord;

    fn round_trip(event: &FoldEvent) -> (usize, FoldEvent) {
        let wire = encode_fold_event(&JobId::new("j"), FoldIndex(1), AttemptId(4), event);
        let count = wire.len();
        let mut assembler = FoldEventAssembler::new();
        let mut out = None;
        for (i, w) in wire.into_iter().enumerate() {
            assert_eq!((w.job_id.as_str(), w.fold, w.attempt), ("j", 1, 4));
            let got = assembler.push(w).unwrap();
            assert_eq!(got.is_some(), i + 1 == count);
            out = got;
        }
        assert!(!assembler.has_partial());
        (count, out.unwrap())
    }

    #[test]
    fn every_event_kind_round_trips() {
        let events = [
            FoldEvent::Progress {
                epoch: 1,
                batch: 2,
                batches: 3,
                loss: 0.5,
                images_per_sec: 10.0,
                phase: "val",
            },
            FoldEvent::Epoch(EpochRecord {
                epoch: 2,
                val_loss: 0.25,
                ..Default::default()
            }),
            FoldEvent::Oof {
                rows: 2,
                classes: 2,
                probs: vec![0.1, 0.9, 0.3, 0.7],
            },
            FoldEvent::Test {
                rows: 0,
                classes: 3,
                probs: vec![],
            },
            FoldEvent::Done(FoldSummary {
                best_epoch: 2,
                best_val_loss: 0.25,
                epochs_run: 4,
                early_stopped: true,
            }),
            FoldEvent::Failed(FoldFailure {
                message: "loss is NaN".into(),
                cause: FailureCause::NanLoss,
            }),
        ];
        for event in &events {
            assert_eq!(&round_trip(event).1, event);
        }
    }

    #[test]
    fn large_payloads_travel_in_bounded_chunks() {
        let bytes: Vec<u8> = (0..(2 * CHUNK_SIZE + 5)).map(|i| (i % 251) as u8).collect();
        let event = FoldEvent::Checkpoint {
            kind: CheckpointKind::Latest,
            epoch: 3,
            bytes,
        };
        let wire = encode_fold_event(&JobId::new("j"), FoldIndex(0), AttemptId(1), &event);
        assert!(wire.iter().all(|w| match &w.event {
            Some(pb::fold_event::Event::Checkpoint(c)) =>
                c.chunk.as_ref().unwrap().data.len() <= CHUNK_SIZE,
            _ => false,
        }));
        let (count, back) = round_trip(&event);
        assert_eq!(count, 3);
        assert_eq!(back, event);
    }

    #[test]
    fn corrupted_or_misordered_chunks_are_rejected() {
        let event = FoldEvent::Checkpoint {
            kind: CheckpointKind::Best,
            epoch: 1,
            bytes: vec![7; CHUNK_SIZE + 1],
        };
        let mut wire = encode_fold_event(&JobId::new("j"), FoldIndex(0), AttemptId(1), &event);
        if let Some(pb::fold_event::Event::Checkpoint(c)) = &mut wire[1].event {
            c.chunk.as_mut().unwrap().data[0] = 8;
        }
        let mut assembler = FoldEventAssembler::new();
        assert!(assembler.push(wire[0].clone()).unwrap().is_none());
        let err = assembler.push(wire[1].clone()).unwrap_err().to_string();
        assert!(err.contains("hash mismatch"), "{err}");

        let mut assembler = FoldEventAssembler::new();
        let err = assembler.push(wire[1].clone()).unwrap_err().to_string();
        assert!(err.contains("expected offset 0"), "{err}");

        let oof = FoldEvent::Oof {
            rows: 2,
            classes: 2,
            probs: vec![0.5; 3],
        };
        let wire = encode_fold_event(&JobId::new("j"), FoldIndex(0), AttemptId(1), &oof);
        let err = FoldEventAssembler::new()
            .push(wire[0].clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("need 16 bytes, got 12"), "{err}");

        let limited = FoldEventAssembler::new().with_max_payload(10).push(
            encode_fold_event(
                &JobId::new("j"),
                FoldIndex(0),
                AttemptId(1),
                &FoldEvent::Checkpoint {
                    kind: CheckpointKind::Best,
                    epoch: 1,
                    bytes: vec![0; 11],
                },
            )
            .remove(0),
        );
        assert_eq!(
            limited.unwrap_err().to_string(),
            "the best checkpoint of epoch 1 (11 bytes received so far) exceeds the 10-byte \
             limit on one payload"
        );
    }

    /// The first wire message of a checkpoint too big for one chunk: it opens a payload.
    fn opening_chunk(kind: CheckpointKind, epoch: u32) -> pb::FoldEvent {
        let event = FoldEvent::Checkpoint {
            kind,
            epoch,
            bytes: vec![1; CHUNK_SIZE + 1],
        };
        encode_fold_event(&JobId::new("j"), FoldIndex(0), AttemptId(1), &event).remove(0)
    }

    #[test]
    fn unfinished_payloads_at_once_are_bounded() {
        let mut assembler = FoldEventAssembler::new().with_max_open_payloads(2);
        for epoch in [1, 2] {
            let opened = assembler.push(opening_chunk(CheckpointKind::Latest, epoch));
            assert!(opened.unwrap().is_none());
        }
        let err = assembler
            .push(opening_chunk(CheckpointKind::Best, 3))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the best checkpoint of epoch 3, begun while 2 other payloads were unfinished \
             (the latest checkpoint of epoch 1, the latest checkpoint of epoch 2) exceeds the \
             limit of 2 unfinished payloads at once"
        );
        // Payloads already open may go on, and once one finishes another may begin.
        let whole = FoldEvent::Checkpoint {
            kind: CheckpointKind::Latest,
            epoch: 1,
            bytes: vec![1; CHUNK_SIZE + 1],
        };
        let rest = encode_fold_event(&JobId::new("j"), FoldIndex(0), AttemptId(1), &whole);
        assert_eq!(assembler.push(rest[1].clone()).unwrap(), Some(whole));
        assert!(
            assembler
                .push(opening_chunk(CheckpointKind::Best, 3))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn probability_sizes_of_the_largest_shape_do_not_overflow() {
        let wire = pb::FoldEvent {
            job_id: "j".into(),
            fold: 0,
            attempt: 1,
            event: Some(pb::fold_event::Event::Test(pb::ProbabilityChunk {
                chunk: encode_fold_event(
                    &JobId::new("j"),
                    FoldIndex(0),
                    AttemptId(1),
                    &FoldEvent::Test {
                        rows: 1,
                        classes: 1,
                        probs: vec![0.5],
                    },
                )
                .into_iter()
                .find_map(|w| match w.event {
                    Some(pb::fold_event::Event::Test(p)) => p.chunk,
                    _ => None,
                }),
                rows: u32::MAX,
                classes: u32::MAX,
            })),
        };
        let err = FoldEventAssembler::new()
            .push(wire)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("need 73786976260478468100 bytes, got 4"),
            "{err}"
        );
    }
}

#[cfg(test)]
#[path = "wire_events_props.rs"]
mod props;
