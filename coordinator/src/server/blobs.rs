//! Blob transfer RPCs: chunked uploads verified before they become visible, and
//! chunked downloads.

use std::time::Duration;

use foldtrain_proto::blob_chunks::{ChunkCutter, ChunkReassembler, FramingError};
use foldtrain_proto::runtime::telemetry::mark_span_failed;
use foldtrain_proto::{BlobHash, pb};
use futures::{Stream, StreamExt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument, Span};

use crate::error::{CoordinatorError, Result, run_blocking};
use crate::store::{BlobStore, BlobWriter};

/// The largest blob an upload may store. Images are a few MB and DenseNet121's
/// pretrained weights about 32 MB: 256 MiB leaves room for large frames and other weights.
pub const MAX_UPLOAD_BLOB: u64 = 256 * 1024 * 1024;

/// How long an upload stream may go without a chunk before the coordinator ends it.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// What one upload stream may ask of the coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadLimits {
    /// The most bytes one blob may have.
    pub max_blob: u64,
    /// The longest wait for the next chunk.
    pub idle_timeout: Duration,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_blob: MAX_UPLOAD_BLOB,
            idle_timeout: UPLOAD_IDLE_TIMEOUT,
        }
    }
}

/// Receives a stream of blob chunks; returns (blobs stored, bytes received). A blob whose
/// bytes do not hash to its name, that grows past `limits.max_blob`, or whose stream
/// stalls past `limits.idle_timeout` is rejected and nothing of it stays visible.
pub async fn receive(
    blobs: &BlobStore,
    limits: UploadLimits,
    mut stream: impl Stream<Item = Result<pb::BlobChunk, Status>> + Unpin,
) -> Result<(u64, u64)> {
    let mut framing = ChunkReassembler::new().with_max_blob_size(limits.max_blob);
    let mut current: Option<BlobWriter> = None;
    let (mut count, mut bytes) = (0u64, 0u64);
    loop {
        let next = tokio::time::timeout(limits.idle_timeout, stream.next()).await;
        let chunk = match next {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(None) => break,
            Ok(Some(Err(status))) => {
                return Err(CoordinatorError::invalid(format!(
                    "upload stream failed: {}",
                    status.message()
                )));
            }
            Err(_) => {
                return Err(CoordinatorError::UploadIdle {
                    idle: limits.idle_timeout,
                    blob: current.as_ref().map(BlobWriter::expected),
                });
            }
        };
        let piece = framing.accept(chunk).map_err(|e| match e {
            FramingError::TooLarge { hash, limit } => {
                CoordinatorError::BlobTooLarge { hash, limit }
            }
            e => CoordinatorError::invalid(e.to_string()),
        })?;
        let mut writer = match current.take() {
            Some(writer) => writer,
            None => {
                let blobs = blobs.clone();
                run_blocking("blob", move || blobs.writer(piece.hash)).await?
            }
        };
        bytes += piece.data.len() as u64;
        // File writes and hashing happen off the async runtime.
        writer = run_blocking("blob", move || {
            writer.write(&piece.data)?;
            Ok(writer)
        })
        .await?;
        if piece.last {
            run_blocking("blob", move || writer.finish()).await?;
            count += 1;
        } else {
            current = Some(writer);
        }
    }
    framing
        .finish()
        .map_err(|e| CoordinatorError::invalid(format!("{e}; nothing of it was stored")))?;
    Ok((count, bytes))
}

/// Streams the requested blobs one after another, each in chunks of at most
/// [`foldtrain_proto::CHUNK_SIZE`]. Every blob must exist before anything is sent.
pub fn send(
    blobs: &BlobStore,
    hashes: Vec<BlobHash>,
) -> Result<mpsc::Receiver<Result<pb::BlobChunk, Status>>> {
    if let Some(missing) = hashes.iter().find(|h| !blobs.contains(h)) {
        return Err(CoordinatorError::BlobNotFound(*missing));
    }
    let (tx, rx) = mpsc::channel(4);
    let blobs = blobs.clone();
    // The producer outlives the handler: it carries the caller's span (`serve_blobs`) so
    // the transfer's duration and size land there.
    let span = Span::current();
    tokio::spawn(
        async move {
            let mut sent = 0u64;
            for hash in hashes {
                match send_one(&blobs, hash, &tx).await {
                    Ok(bytes) => sent += bytes,
                    Err(e) => {
                        mark_span_failed(&Span::current(), &e);
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
            Span::current().record("bytes", sent as i64);
        }
        .instrument(span),
    );
    Ok(rx)
}

/// Sends one stored blob; returns the bytes sent (fewer when the receiver went away).
async fn send_one(
    blobs: &BlobStore,
    hash: BlobHash,
    tx: &mpsc::Sender<Result<pb::BlobChunk, Status>>,
) -> Result<u64> {
    let path = blobs.path(&hash);
    let io = |e| CoordinatorError::io(format!("reading {}", path.display()), e);
    let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
    let size = file.metadata().await.map_err(io)?.len();
    let mut cutter = ChunkCutter::new(hash, size);
    while let Some(len) = cutter.next_len() {
        let mut data = vec![0u8; len];
        file.read_exact(&mut data).await.map_err(io)?;
        let sent = cutter.offset();
        if tx.send(Ok(cutter.cut(data))).await.is_err() {
            return Ok(sent);
        }
    }
    Ok(cutter.offset())
}

#[cfg(test)]
mod tests {
    use foldtrain_proto::blob_chunks::chunks_cut_at;
    use proptest::prelude::*;
    use proptest::sample::Index;

    use super::*;

    #[derive(Debug, Clone)]
    enum Damage {
        None,
        FlipByte(Index, Index),
        Drop(Index),
        EndAt(Index),
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(foldtrain_proto::property_cases(24)))]

        /// Whatever the chunking and whatever goes wrong, a blob in the store is exactly
        /// the bytes sent under its hash, and nothing unfinished stays behind.
        #[test]
        fn uploads_store_exact_blobs_or_nothing(
            blobs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..3000),
                 proptest::collection::vec(1usize..1500, 1..4)),
                1..4,
            ),
            damage in prop_oneof![
                Just(Damage::None),
                (any::<Index>(), any::<Index>()).prop_map(|(c, b)| Damage::FlipByte(c, b)),
                any::<Index>().prop_map(Damage::Drop),
                any::<Index>().prop_map(Damage::EndAt),
            ],
            max_blob in prop_oneof![Just(MAX_UPLOAD_BLOB), 0u64..3000],
        ) {
            let mut stream: Vec<pb::BlobChunk> =
                blobs.iter().flat_map(|(bytes, cuts)| chunks_cut_at(bytes, cuts)).collect();
            let len = stream.len();
            match &damage {
                Damage::None => {}
                Damage::FlipByte(c, b) => {
                    let chunk = &mut stream[c.index(len)];
                    if !chunk.data.is_empty() {
                        let b = b.index(chunk.data.len());
                        chunk.data[b] ^= 0xa5;
                    }
                }
                Damage::Drop(c) => {
                    stream.remove(c.index(len));
                }
                Damage::EndAt(c) => stream.truncate(c.index(len)),
            }
            let dir = tempfile::tempdir().unwrap();
            let store = BlobStore::open(dir.path()).unwrap();
            let limits = UploadLimits {
                max_blob,
                idle_timeout: Duration::from_secs(5),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let chunks = futures::stream::iter(stream.into_iter().map(Ok));
            let received = runtime.block_on(receive(&store, limits, chunks));
            let clean = matches!(damage, Damage::None)
                && blobs.iter().all(|(bytes, _)| bytes.len() as u64 <= max_blob);
            if clean {
                prop_assert_eq!(received.as_ref().map(|(count, _)| *count).ok(), Some(blobs.len() as u64));
            }
            for (bytes, _) in &blobs {
                let hash = BlobHash::of(bytes);
                if store.contains(&hash) {
                    prop_assert_eq!(&store.read(&hash).unwrap(), bytes);
                } else {
                    prop_assert!(received.is_err() || !clean);
                }
            }
            prop_assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        }
    }
}
