//! Properties of blob chunk reassembly: blobs cut at any chunk sizes come back byte for
//! byte; the size limit fails exactly at the chunk that crosses it; an arbitrary chunk
//! stream fails cleanly and what it accepts is always contiguous.

use proptest::prelude::*;

use super::*;

/// Blobs of seeded bytes, each cut at the sizes it chose (cycled).
fn blobs() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<usize>)>> {
    let blob = (0usize..3000, any::<u8>()).prop_map(|(len, seed)| {
        (0..len)
            .map(|i| seed.wrapping_add((i / 7) as u8))
            .collect::<Vec<u8>>()
    });
    let cuts = proptest::collection::vec(1usize..700, 1..4);
    proptest::collection::vec((blob, cuts), 1..5)
}

fn arbitrary_chunk() -> impl Strategy<Value = pb::BlobChunk> {
    let hashes: Vec<Vec<u8>> = (0u8..3).map(|i| BlobHash::of(&[i]).0.to_vec()).collect();
    (
        prop_oneof![
            8 => proptest::sample::select(hashes),
            1 => proptest::collection::vec(any::<u8>(), 0..40),
        ],
        prop_oneof![0u64..120, any::<u64>()],
        proptest::collection::vec(any::<u8>(), 0..50),
        any::<bool>(),
    )
        .prop_map(|(hash, offset, data, last)| pb::BlobChunk {
            hash,
            offset,
            data,
            last,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::property_cases(128)))]

    #[test]
    fn blobs_cut_anywhere_reassemble_exactly_or_stop_at_the_limit(
        blobs in blobs(),
        limit in proptest::option::of(0u64..3500),
    ) {
        let stream: Vec<pb::BlobChunk> =
            blobs.iter().flat_map(|(bytes, cuts)| chunks_cut_at(bytes, cuts)).collect();
        let mut framing = ChunkReassembler::new();
        if let Some(limit) = limit {
            framing = framing.with_max_blob_size(limit);
        }
        let mut received = Vec::new();
        let mut current = Vec::new();
        for chunk in &stream {
            let crosses = limit.is_some_and(|l| (chunk.offset + chunk.data.len() as u64) > l);
            match framing.accept(chunk.clone()) {
                Ok(piece) => {
                    prop_assert!(!crosses, "accepted a chunk past the limit");
                    current.extend_from_slice(&piece.data);
                    if piece.last {
                        received.push(std::mem::take(&mut current));
                    }
                }
                Err(e) => {
                    prop_assert!(crosses, "{}", e);
                    prop_assert!(matches!(e, FramingError::TooLarge { .. }), "{}", e);
                    return Ok(());
                }
            }
        }
        framing.finish().unwrap();
        let sent: Vec<Vec<u8>> = blobs.into_iter().map(|(bytes, _)| bytes).collect();
        prop_assert_eq!(received, sent);
    }

    #[test]
    fn arbitrary_chunk_streams_fail_cleanly_and_accept_only_contiguous_bytes(
        stream in proptest::collection::vec(arbitrary_chunk(), 0..25),
        limit in proptest::option::of(0u64..200),
    ) {
        let mut framing = ChunkReassembler::new();
        if let Some(limit) = limit {
            framing = framing.with_max_blob_size(limit);
        }
        // The blob being received and its bytes so far, as the accepted pieces say.
        let mut open: Option<(BlobHash, u64)> = None;
        for chunk in stream {
            let Ok(piece) = framing.accept(chunk) else {
                return Ok(());
            };
            match open.take() {
                Some((hash, received)) => {
                    prop_assert_eq!(piece.hash, hash);
                    prop_assert_eq!(piece.offset, received);
                }
                None => prop_assert!(piece.is_first()),
            }
            let received = piece.offset + piece.data.len() as u64;
            prop_assert!(limit.is_none_or(|l| received <= l));
            if !piece.last {
                open = Some((piece.hash, received));
            }
        }
        prop_assert_eq!(framing.finish().is_ok(), open.is_none());
    }
}
