//! Blob chunk framing: the one way a blob is cut into `pb::BlobChunk`s, and the one
//! reassembler that checks each received chunk's blob, offset and size.
//!
//! Content hashes are verified by whoever keeps the bytes (the coordinator's blob store,
//! the worker's cache), since they hash while writing anyway.

use crate::{BlobHash, CHUNK_SIZE, ProtoError, pb};

/// Cuts a blob of known size into chunks as its bytes become available, from memory or
/// piece by piece from a file. An empty blob is one empty last chunk.
#[derive(Debug, Clone)]
pub struct ChunkCutter {
    hash: BlobHash,
    size: u64,
    offset: u64,
    done: bool,
}

impl ChunkCutter {
    pub fn new(hash: BlobHash, size: u64) -> Self {
        Self {
            hash,
            size,
            offset: 0,
            done: false,
        }
    }

    /// How many bytes the next chunk holds; `None` once the last chunk was cut.
    pub fn next_len(&self) -> Option<usize> {
        (!self.done).then(|| (self.size - self.offset).min(CHUNK_SIZE as u64) as usize)
    }

    /// Bytes framed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Frames the next `data`, which holds [`Self::next_len`] bytes.
    pub fn cut(&mut self, data: Vec<u8>) -> pb::BlobChunk {
        let offset = self.offset;
        self.offset += data.len() as u64;
        self.done = self.offset >= self.size;
        pb::BlobChunk {
            hash: self.hash.0.to_vec(),
            offset,
            data,
            last: self.done,
        }
    }
}

/// The chunks of `bytes` at the given sizes (cycled), for tests that send blobs cut
/// anywhere; an empty blob is one empty last chunk.
#[cfg(any(test, feature = "test-util"))]
pub fn chunks_cut_at(bytes: &[u8], sizes: &[usize]) -> Vec<pb::BlobChunk> {
    let hash = BlobHash::of(bytes);
    let mut out = Vec::new();
    let mut start = 0;
    for &size in sizes.iter().cycle() {
        let end = (start + size).min(bytes.len());
        out.push(pb::BlobChunk {
            hash: hash.0.to_vec(),
            offset: start as u64,
            data: bytes[start..end].to_vec(),
            last: end == bytes.len(),
        });
        start = end;
        if end == bytes.len() {
            return out;
        }
    }
    unreachable!("cycling non-empty sizes reaches the end")
}

/// The chunks of a blob held in memory.
pub fn chunks(hash: BlobHash, bytes: &[u8]) -> impl Iterator<Item = pb::BlobChunk> + '_ {
    let mut cutter = ChunkCutter::new(hash, bytes.len() as u64);
    std::iter::from_fn(move || {
        let len = cutter.next_len()?;
        let start = cutter.offset() as usize;
        Some(cutter.cut(bytes[start..start + len].to_vec()))
    })
}

/// A chunk stream that breaks the framing rules.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("chunk hash: {0}")]
    BadHash(#[source] ProtoError),
    #[error("blob {hash}: chunk of {len} bytes exceeds the {CHUNK_SIZE}-byte limit")]
    Oversized { hash: BlobHash, len: usize },
    #[error("blob {open} ended without a last chunk before blob {next} began")]
    Interleaved { open: BlobHash, next: BlobHash },
    #[error("blob {hash}: chunk at offset {offset}, expected {expected}")]
    Offset {
        hash: BlobHash,
        offset: u64,
        expected: u64,
    },
    #[error("the stream ended inside blob {hash} after {received} bytes")]
    Truncated { hash: BlobHash, received: u64 },
    #[error("blob {hash} exceeds the {limit}-byte limit on one blob")]
    TooLarge { hash: BlobHash, limit: u64 },
}

/// One received chunk whose framing checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub hash: BlobHash,
    pub offset: u64,
    pub data: Vec<u8>,
    /// The blob's final chunk: the blob is complete after this one.
    pub last: bool,
}

impl Piece {
    /// Whether this chunk begins a new blob.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// Checks a stream of chunks: blobs arrive one after another, each from offset 0 with no
/// gap or overlap, no chunk is over [`CHUNK_SIZE`], and, when a limit is set, no blob
/// grows past it.
#[derive(Debug, Default)]
pub struct ChunkReassembler {
    /// The blob being received and how many of its bytes arrived.
    open: Option<(BlobHash, u64)>,
    /// The most bytes one blob may have.
    max_blob: Option<u64>,
}

impl ChunkReassembler {
    /// A reassembler without a limit on the size of a blob.
    pub fn new() -> Self {
        Self::default()
    }

    /// Refuses the chunk that would take a blob past `bytes`.
    pub fn with_max_blob_size(mut self, bytes: u64) -> Self {
        self.max_blob = Some(bytes);
        self
    }

    /// Checks the next chunk of the stream and hands back its bytes.
    pub fn accept(&mut self, chunk: pb::BlobChunk) -> Result<Piece, FramingError> {
        let hash = BlobHash::from_slice(&chunk.hash).map_err(FramingError::BadHash)?;
        if chunk.data.len() > CHUNK_SIZE {
            return Err(FramingError::Oversized {
                hash,
                len: chunk.data.len(),
            });
        }
        let expected = match self.open.take() {
            Some((open, received)) if open == hash => received,
            Some((open, _)) => return Err(FramingError::Interleaved { open, next: hash }),
            None => 0,
        };
        if chunk.offset != expected {
            return Err(FramingError::Offset {
                hash,
                offset: chunk.offset,
                expected,
            });
        }
        if let Some(limit) = self.max_blob
            && expected + chunk.data.len() as u64 > limit
        {
            return Err(FramingError::TooLarge { hash, limit });
        }
        if !chunk.last {
            self.open = Some((hash, expected + chunk.data.len() as u64));
        }
        Ok(Piece {
            hash,
            offset: chunk.offset,
            data: chunk.data,
            last: chunk.last,
        })
    }

    /// Checks the end of the stream: no blob may be left without its last chunk.
    pub fn finish(&self) -> Result<(), FramingError> {
        match self.open {
            Some((hash, received)) => Err(FramingError::Truncated { hash, received }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn reassemble(stream: Vec<pb::BlobChunk>) -> Result<Vec<(BlobHash, Vec<u8>)>, FramingError> {
        let mut framing = ChunkReassembler::new();
        let mut blobs = Vec::new();
        let mut bytes = Vec::new();
        for chunk in stream {
            let piece = framing.accept(chunk)?;
            bytes.extend_from_slice(&piece.data);
            if piece.last {
                blobs.push((piece.hash, std::mem::take(&mut bytes)));
            }
        }
        framing.finish()?;
        Ok(blobs)
    }

    #[test]
    fn blobs_are_cut_at_the_chunk_size_and_put_back_together() {
        for len in [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 7] {
            let bytes = blob(len);
            let hash = BlobHash::of(&bytes);
            let cut: Vec<_> = chunks(hash, &bytes).collect();
            assert_eq!(cut.len(), len.div_ceil(CHUNK_SIZE).max(1), "{len}");
            assert!(cut.iter().all(|c| c.data.len() <= CHUNK_SIZE));
            assert_eq!(cut.iter().filter(|c| c.last).count(), 1);
            assert!(cut.last().unwrap().last);
            assert_eq!(reassemble(cut).unwrap(), vec![(hash, bytes)]);
        }
    }

    #[test]
    fn a_cutter_fed_piece_by_piece_matches_the_in_memory_cut() {
        let bytes = blob(CHUNK_SIZE + 5);
        let hash = BlobHash::of(&bytes);
        let mut cutter = ChunkCutter::new(hash, bytes.len() as u64);
        let mut fed = Vec::new();
        while let Some(len) = cutter.next_len() {
            let start = cutter.offset() as usize;
            fed.push(cutter.cut(bytes[start..start + len].to_vec()));
        }
        assert_eq!(fed, chunks(hash, &bytes).collect::<Vec<_>>());
    }

    #[test]
    fn broken_framing_is_named() {
        let a = blob(CHUNK_SIZE + 10);
        let b = blob(3);
        let (ha, hb) = (BlobHash::of(&a), BlobHash::of(&b));
        let good: Vec<_> = chunks(ha, &a).chain(chunks(hb, &b)).collect();
        assert_eq!(reassemble(good.clone()).unwrap().len(), 2);

        let err = |stream: Vec<pb::BlobChunk>| reassemble(stream).unwrap_err().to_string();
        let mut skipped = good.clone();
        skipped.remove(0);
        assert_eq!(
            err(skipped),
            format!("blob {ha}: chunk at offset {CHUNK_SIZE}, expected 0")
        );
        let mut interleaved = good.clone();
        interleaved.swap(1, 2);
        assert_eq!(
            err(interleaved),
            format!("blob {ha} ended without a last chunk before blob {hb} began")
        );
        assert_eq!(
            err(good[..1].to_vec()),
            format!("the stream ended inside blob {ha} after {CHUNK_SIZE} bytes")
        );
        let mut oversized = good.clone();
        oversized[0].data.push(0);
        assert!(
            err(oversized).contains("exceeds the 1048576-byte limit"),
            "oversized chunk"
        );
        let mut short = good;
        short[0].hash.truncate(5);
        assert!(err(short).starts_with("chunk hash: "));
    }

    #[test]
    fn a_blob_past_the_size_limit_is_refused_at_the_chunk_that_crosses_it() {
        let a = blob(2 * CHUNK_SIZE + 1);
        let hash = BlobHash::of(&a);
        let limit = 2 * CHUNK_SIZE as u64;
        let mut framing = ChunkReassembler::new().with_max_blob_size(limit);
        let mut stream = chunks(hash, &a);
        for _ in 0..2 {
            framing.accept(stream.next().unwrap()).unwrap();
        }
        let err = framing.accept(stream.next().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("blob {hash} exceeds the 2097152-byte limit on one blob")
        );
        let exact = blob(2 * CHUNK_SIZE);
        let mut framing = ChunkReassembler::new().with_max_blob_size(limit);
        for chunk in chunks(BlobHash::of(&exact), &exact) {
            framing.accept(chunk).unwrap();
        }
        framing.finish().unwrap();
    }
}

#[cfg(test)]
#[path = "blob_chunks_props.rs"]
mod props;
