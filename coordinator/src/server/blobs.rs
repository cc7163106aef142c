//! Blob transfer RPCs: chunked uploads verified before they become visible, and
//! chunked downloads.

use foldtrain_proto::blob_chunks::{ChunkCutter, ChunkReassembler};
use foldtrain_proto::runtime::telemetry::mark_span_failed;
use foldtrain_proto::{BlobHash, pb};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument, Span};

use crate::error::{CoordinatorError, Result, run_blocking};
use crate::store::{BlobStore, BlobWriter};

/// Receives a stream of blob chunks; returns (blobs stored, bytes received). A blob whose
/// bytes do not hash to its name is rejected and nothing of it stays visible.
pub async fn receive(
    blobs: &BlobStore,
    mut stream: tonic::Streaming<pb::BlobChunk>,
) -> Result<(u64, u64)> {
    let mut framing = ChunkReassembler::new();
    let mut current: Option<BlobWriter> = None;
    let (mut count, mut bytes) = (0u64, 0u64);
    loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(status) => {
                return Err(CoordinatorError::invalid(format!(
                    "upload stream failed: {}",
                    status.message()
                )));
            }
        };
        let piece = framing
            .accept(chunk)
            .map_err(|e| CoordinatorError::invalid(e.to_string()))?;
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
