//! Blob transfer RPCs: chunked uploads verified before they become visible, and
//! chunked downloads.

use foldtrain_proto::telemetry::mark_span_failed;
use foldtrain_proto::{BlobHash, CHUNK_SIZE, pb};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;
use tracing::{Instrument, Span};

use crate::error::{CoordinatorError, Result};
use crate::store::{BlobStore, BlobWriter};

/// Receives a stream of blob chunks; returns (blobs stored, bytes received). A blob whose
/// bytes do not hash to its name is rejected and nothing of it stays visible.
pub async fn receive(
    blobs: &BlobStore,
    mut stream: tonic::Streaming<pb::BlobChunk>,
) -> Result<(u64, u64)> {
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
        if chunk.data.len() > CHUNK_SIZE {
            return Err(CoordinatorError::invalid(format!(
                "chunk of {} bytes exceeds the {CHUNK_SIZE}-byte limit",
                chunk.data.len()
            )));
        }
        let hash = BlobHash::from_slice(&chunk.hash)
            .map_err(|e| CoordinatorError::invalid(format!("chunk hash: {e}")))?;
        let mut writer = match current.take() {
            Some(w) if w.expected() == hash => w,
            Some(w) => {
                return Err(CoordinatorError::invalid(format!(
                    "blob {} ended without a last chunk before blob {hash} began",
                    w.expected()
                )));
            }
            None => {
                if chunk.offset != 0 {
                    return Err(CoordinatorError::invalid(format!(
                        "blob {hash} starts at offset {}, expected 0",
                        chunk.offset
                    )));
                }
                let blobs = blobs.clone();
                tokio::task::spawn_blocking(move || blobs.writer(hash))
                    .await
                    .map_err(join_error)??
            }
        };
        if chunk.offset != writer.written() {
            return Err(CoordinatorError::invalid(format!(
                "blob {hash}: chunk at offset {}, expected {}",
                chunk.offset,
                writer.written()
            )));
        }
        bytes += chunk.data.len() as u64;
        let last = chunk.last;
        // File writes and hashing happen off the async runtime.
        writer = tokio::task::spawn_blocking(move || -> Result<BlobWriter> {
            writer.write(&chunk.data)?;
            Ok(writer)
        })
        .await
        .map_err(join_error)??;
        if last {
            tokio::task::spawn_blocking(move || writer.finish())
                .await
                .map_err(join_error)??;
            count += 1;
        } else {
            current = Some(writer);
        }
    }
    if let Some(w) = current {
        return Err(CoordinatorError::invalid(format!(
            "the stream ended inside blob {} after {} bytes; nothing of it was stored",
            w.expected(),
            w.written()
        )));
    }
    Ok((count, bytes))
}

fn join_error(e: tokio::task::JoinError) -> CoordinatorError {
    CoordinatorError::Corrupt(format!("blob task failed: {e}"))
}

/// Streams the requested blobs one after another, each in chunks of at most
/// [`CHUNK_SIZE`]. Every blob must exist before anything is sent.
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

async fn send_one(
    blobs: &BlobStore,
    hash: BlobHash,
    tx: &mpsc::Sender<Result<pb::BlobChunk, Status>>,
) -> Result<u64> {
    let path = blobs.path(&hash);
    let io = |e| CoordinatorError::io(format!("reading {}", path.display()), e);
    let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
    let size = file.metadata().await.map_err(io)?.len();
    let mut offset = 0u64;
    loop {
        let mut data = vec![0u8; CHUNK_SIZE.min((size - offset) as usize)];
        file.read_exact(&mut data).await.map_err(io)?;
        let last = offset + data.len() as u64 >= size;
        let len = data.len() as u64;
        let chunk = pb::BlobChunk {
            hash: hash.0.to_vec(),
            offset,
            data,
            last,
        };
        if tx.send(Ok(chunk)).await.is_err() {
            return Ok(offset);
        }
        offset += len;
        if last {
            return Ok(offset);
        }
    }
}
