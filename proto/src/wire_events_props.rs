//! Properties of the fold-event assembler: any chunking and interleaving of honest payloads
//! comes back byte for byte; limits fail exactly where they are crossed; damaged or
//! arbitrary messages fail cleanly and never yield bytes that were not sent.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// One payload as an honest sender would cut it, in chunks of the sizes it chose.
#[derive(Debug, Clone)]
struct Sent {
    key: PayloadKey,
    event: FoldEvent,
    wire: Vec<pb::FoldEvent>,
}

fn key() -> impl Strategy<Value = PayloadKey> {
    prop_oneof![
        (any::<bool>(), 0u32..3).prop_map(|(best, epoch)| {
            let kind = if best {
                CheckpointKind::Best
            } else {
                CheckpointKind::Latest
            };
            PayloadKey::Checkpoint(kind, epoch)
        }),
        Just(PayloadKey::Oof),
        Just(PayloadKey::Test),
    ]
}

/// The domain event a payload carries: `units` rows (or bytes / 7) of seeded content.
fn event(key: PayloadKey, units: u32, classes: u32, seed: u8) -> FoldEvent {
    let probs = || -> Vec<f32> {
        (0..units * classes)
            .map(|i| f32::from(seed.wrapping_add(i as u8)) / 255.0)
            .collect()
    };
    match key {
        PayloadKey::Checkpoint(kind, epoch) => FoldEvent::Checkpoint {
            kind,
            epoch,
            bytes: (0..units * 7).map(|i| seed.wrapping_mul(i as u8)).collect(),
        },
        PayloadKey::Oof => FoldEvent::Oof {
            rows: units,
            classes,
            probs: probs(),
        },
        PayloadKey::Test => FoldEvent::Test {
            rows: units,
            classes,
            probs: probs(),
        },
    }
}

/// The payload bytes of `event` and its wire messages with chunks cut at `cuts`, cycled.
fn cut(key: PayloadKey, event: FoldEvent, cuts: &[usize]) -> Sent {
    let (bytes, rows, classes) = match &event {
        FoldEvent::Checkpoint { bytes, .. } => (bytes.clone(), 0, 0),
        FoldEvent::Oof {
            rows,
            classes,
            probs,
        }
        | FoldEvent::Test {
            rows,
            classes,
            probs,
        } => (f32_bytes(probs), *rows, *classes),
        _ => unreachable!("only payload events are cut"),
    };
    let hash = BlobHash::of(&bytes);
    let mut chunks = Vec::new();
    let mut start = 0;
    for &size in cuts.iter().cycle() {
        let end = (start + size).min(bytes.len());
        let last = end == bytes.len();
        chunks.push(pb::Chunk {
            offset: start as u64,
            data: bytes[start..end].to_vec(),
            last,
            hash: if last { hash.0.to_vec() } else { Vec::new() },
            total_size: if last { bytes.len() as u64 } else { 0 },
        });
        start = end;
        if last {
            break;
        }
    }
    let wire = chunks
        .into_iter()
        .map(|chunk| wire_message(key, rows, classes, chunk))
        .collect();
    Sent { key, event, wire }
}

fn wire_message(key: PayloadKey, rows: u32, classes: u32, chunk: pb::Chunk) -> pb::FoldEvent {
    use pb::fold_event::Event;
    let probabilities = pb::ProbabilityChunk {
        chunk: Some(chunk.clone()),
        rows,
        classes,
    };
    let event = match key {
        PayloadKey::Checkpoint(kind, epoch) => Event::Checkpoint(pb::CheckpointChunk {
            kind: match kind {
                CheckpointKind::Best => pb::CheckpointKind::Best,
                CheckpointKind::Latest => pb::CheckpointKind::Latest,
            } as i32,
            epoch,
            chunk: Some(chunk),
        }),
        PayloadKey::Oof => Event::Oof(probabilities),
        PayloadKey::Test => Event::Test(probabilities),
    };
    pb::FoldEvent {
        job_id: "j".into(),
        fold: 0,
        attempt: 1,
        event: Some(event),
    }
}

/// Up to five payloads with distinct keys, each cut its own way.
fn payloads() -> impl Strategy<Value = Vec<Sent>> {
    let cuts = proptest::collection::vec(1usize..900, 1..4);
    let one = (key(), 0u32..300, 1u32..4, any::<u8>(), cuts);
    proptest::collection::vec(one, 1..6).prop_map(|specs| {
        let mut seen = HashSet::new();
        specs
            .into_iter()
            .filter(|(key, ..)| seen.insert(*key))
            .map(|(key, units, classes, seed, cuts)| {
                cut(key, event(key, units, classes, seed), &cuts)
            })
            .collect()
    })
}

/// Interleaves the payloads' messages, each payload's in order, as `picks` choose.
fn interleave(sent: &[Sent], picks: &[Index]) -> Vec<(usize, pb::FoldEvent)> {
    let mut queues: Vec<std::collections::VecDeque<pb::FoldEvent>> = sent
        .iter()
        .map(|s| s.wire.iter().cloned().collect())
        .collect();
    let mut out = Vec::new();
    let mut picks = picks.iter().cycle();
    loop {
        let ready: Vec<usize> = (0..queues.len())
            .filter(|&i| !queues[i].is_empty())
            .collect();
        if ready.is_empty() {
            return out;
        }
        let i = ready[picks.next().map_or(0, |p| p.index(ready.len()))];
        out.push((i, queues[i].pop_front().expect("a ready queue")));
    }
}

fn chunk_of(event: &pb::FoldEvent) -> &pb::Chunk {
    use pb::fold_event::Event;
    match &event.event {
        Some(Event::Checkpoint(c)) => c.chunk.as_ref(),
        Some(Event::Oof(p) | Event::Test(p)) => p.chunk.as_ref(),
        _ => None,
    }
    .expect("payload messages carry a chunk")
}

fn chunk_mut(event: &mut pb::FoldEvent) -> &mut pb::Chunk {
    use pb::fold_event::Event;
    match &mut event.event {
        Some(Event::Checkpoint(c)) => c.chunk.as_mut(),
        Some(Event::Oof(p) | Event::Test(p)) => p.chunk.as_mut(),
        _ => None,
    }
    .expect("payload messages carry a chunk")
}

/// Where the limits must stop a stream: the index of the first message that crosses one.
fn first_violation(
    stream: &[(usize, pb::FoldEvent)],
    max_payload: u64,
    max_open: usize,
) -> Option<usize> {
    let mut received: HashMap<usize, u64> = HashMap::new();
    let mut open: HashSet<usize> = HashSet::new();
    for (step, (payload, message)) in stream.iter().enumerate() {
        let chunk = chunk_of(message);
        if !open.contains(payload) && !chunk.last && open.len() >= max_open {
            return Some(step);
        }
        let total = received.entry(*payload).or_default();
        *total += chunk.data.len() as u64;
        if *total > max_payload {
            return Some(step);
        }
        if chunk.last {
            open.remove(payload);
        } else {
            open.insert(*payload);
        }
    }
    None
}

/// A damage done to an honest stream.
#[derive(Debug, Clone)]
enum Damage {
    Drop(Index),
    Duplicate(Index),
    SwapWithNext(Index),
    FlipByte(Index, Index),
    ShiftOffset(Index, u64),
    ChangeTotal(Index, u64),
    ToggleLast(Index),
    CorruptHash(Index),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Drop),
        any::<Index>().prop_map(Damage::Duplicate),
        any::<Index>().prop_map(Damage::SwapWithNext),
        (any::<Index>(), any::<Index>()).prop_map(|(m, b)| Damage::FlipByte(m, b)),
        (any::<Index>(), 1u64..5000).prop_map(|(m, d)| Damage::ShiftOffset(m, d)),
        (any::<Index>(), 1u64..5000).prop_map(|(m, d)| Damage::ChangeTotal(m, d)),
        any::<Index>().prop_map(Damage::ToggleLast),
        any::<Index>().prop_map(Damage::CorruptHash),
    ]
}

fn apply(stream: &mut Vec<pb::FoldEvent>, damage: &Damage) {
    let len = stream.len();
    if len == 0 {
        return;
    }
    let at = |i: &Index| i.index(len);
    match damage {
        Damage::Drop(i) => {
            stream.remove(at(i));
        }
        Damage::Duplicate(i) => {
            let i = at(i);
            stream.insert(i, stream[i].clone());
        }
        Damage::SwapWithNext(i) => {
            let i = at(i);
            if i + 1 < stream.len() {
                stream.swap(i, i + 1);
            }
        }
        Damage::FlipByte(m, b) => {
            let chunk = chunk_mut(&mut stream[at(m)]);
            if !chunk.data.is_empty() {
                let b = b.index(chunk.data.len());
                chunk.data[b] ^= 0x5a;
            }
        }
        Damage::ShiftOffset(m, d) => {
            let chunk = chunk_mut(&mut stream[at(m)]);
            chunk.offset = chunk.offset.wrapping_add(*d);
        }
        Damage::ChangeTotal(m, d) => {
            let chunk = chunk_mut(&mut stream[at(m)]);
            chunk.total_size = chunk.total_size.wrapping_add(*d);
        }
        Damage::ToggleLast(m) => {
            let chunk = chunk_mut(&mut stream[at(m)]);
            chunk.last = !chunk.last;
        }
        Damage::CorruptHash(m) => {
            let chunk = chunk_mut(&mut stream[at(m)]);
            match chunk.hash.first_mut() {
                Some(byte) => *byte ^= 1,
                None => chunk.hash = vec![0; 32],
            }
        }
    }
}

/// Any wire message at all, payload or not, with fields anywhere in their range.
fn arbitrary_message() -> impl Strategy<Value = pb::FoldEvent> {
    use pb::fold_event::Event;
    let chunk = (
        prop_oneof![0u64..64, any::<u64>()],
        proptest::collection::vec(any::<u8>(), 0..64),
        any::<bool>(),
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 32),
            proptest::collection::vec(any::<u8>(), 0..40),
        ],
        prop_oneof![0u64..64, any::<u64>()],
    )
        .prop_map(|(offset, data, last, hash, total_size)| pb::Chunk {
            offset,
            data,
            last,
            hash,
            total_size,
        });
    // Whole, hash-correct payloads get past the framing checks to what follows them.
    let whole = proptest::collection::vec(any::<u8>(), 0..64).prop_map(|data| pb::Chunk {
        offset: 0,
        hash: BlobHash::of(&data).0.to_vec(),
        total_size: data.len() as u64,
        data,
        last: true,
    });
    let chunk = proptest::option::weighted(0.9, prop_oneof![chunk, whole]);
    let event = prop_oneof![
        (-1i32..4, 0u32..3, chunk.clone()).prop_map(|(kind, epoch, chunk)| {
            Event::Checkpoint(pb::CheckpointChunk { kind, epoch, chunk })
        }),
        (
            chunk.clone(),
            any::<u32>(),
            prop_oneof![0u32..5, any::<u32>()]
        )
            .prop_map(|(chunk, rows, classes)| Event::Oof(pb::ProbabilityChunk {
                chunk,
                rows,
                classes
            })),
        (chunk, 0u32..20, any::<u32>()).prop_map(|(chunk, rows, classes)| {
            Event::Test(pb::ProbabilityChunk {
                chunk,
                rows,
                classes,
            })
        }),
        (any::<u32>(), ".{0,6}").prop_map(|(epoch, phase)| Event::Progress(pb::Progress {
            epoch,
            phase,
            ..Default::default()
        })),
        (any::<i32>(), ".{0,10}").prop_map(|(cause, message)| Event::Error(pb::FoldError {
            cause,
            message,
            retryable: false,
        })),
    ];
    proptest::option::weighted(0.95, event).prop_map(|event| pb::FoldEvent {
        job_id: "j".into(),
        fold: 0,
        attempt: 1,
        event,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::property_cases(64)))]

    #[test]
    fn honest_payloads_reassemble_exactly_in_any_chunking_and_interleaving(
        sent in payloads(),
        picks in proptest::collection::vec(any::<Index>(), 1..40),
    ) {
        let stream = interleave(&sent, &picks);
        let mut assembler = FoldEventAssembler::new();
        let mut finished = Vec::new();
        for (payload, message) in &stream {
            if let Some(event) = assembler.push(message.clone()).unwrap() {
                prop_assert!(chunk_of(message).last);
                finished.push((*payload, event));
            }
        }
        prop_assert!(!assembler.has_partial());
        let expected: Vec<(usize, FoldEvent)> = stream
            .iter()
            .filter(|(_, m)| chunk_of(m).last)
            .map(|(p, _)| (*p, sent[*p].event.clone()))
            .collect();
        prop_assert_eq!(finished, expected);
    }

    #[test]
    fn limits_fail_exactly_at_the_message_that_crosses_them(
        sent in payloads(),
        picks in proptest::collection::vec(any::<Index>(), 1..40),
        max_payload in 0u64..2500,
        max_open in 0usize..4,
    ) {
        let stream = interleave(&sent, &picks);
        let mut assembler = FoldEventAssembler::new()
            .with_max_payload(max_payload)
            .with_max_open_payloads(max_open);
        let violation = first_violation(&stream, max_payload, max_open);
        for (step, (payload, message)) in stream.iter().enumerate() {
            match assembler.push(message.clone()) {
                Ok(Some(event)) => prop_assert_eq!(&event, &sent[*payload].event),
                Ok(None) => {}
                Err(e) => {
                    prop_assert_eq!(Some(step), violation, "{}", e);
                    prop_assert!(matches!(e, ProtoError::LimitExceeded { .. }), "{}", e);
                    return Ok(());
                }
            }
        }
        prop_assert_eq!(violation, None);
    }

    #[test]
    fn damaged_streams_fail_cleanly_and_never_yield_unsent_bytes(
        sent in payloads(),
        picks in proptest::collection::vec(any::<Index>(), 1..40),
        damages in proptest::collection::vec(damage(), 1..3),
    ) {
        let mut stream: Vec<pb::FoldEvent> =
            interleave(&sent, &picks).into_iter().map(|(_, m)| m).collect();
        for d in &damages {
            apply(&mut stream, d);
        }
        let originals: HashMap<PayloadKey, &FoldEvent> =
            sent.iter().map(|s| (s.key, &s.event)).collect();
        let mut assembler = FoldEventAssembler::new();
        for message in stream {
            match assembler.push(message) {
                Ok(Some(event)) => {
                    let key = match &event {
                        FoldEvent::Checkpoint { kind, epoch, .. } => {
                            PayloadKey::Checkpoint(*kind, *epoch)
                        }
                        FoldEvent::Oof { .. } => PayloadKey::Oof,
                        FoldEvent::Test { .. } => PayloadKey::Test,
                        other => panic!("a payload stream yielded {other:?}"),
                    };
                    prop_assert_eq!(Some(&&event), originals.get(&key));
                }
                Ok(None) => {}
                Err(_) => break,
            }
        }
    }

    #[test]
    fn arbitrary_messages_never_panic(
        messages in proptest::collection::vec(arbitrary_message(), 0..30),
        limited in any::<bool>(),
    ) {
        let mut assembler = FoldEventAssembler::new();
        if limited {
            assembler = assembler.with_max_payload(100).with_max_open_payloads(2);
        }
        for message in messages {
            let _ = assembler.push(message);
        }
        let _ = assembler.has_partial();
    }
}
