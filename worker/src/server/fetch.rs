//! Filling the blob cache from the coordinator: only the blobs the cache lacks, in
//! batches of [`BATCH`] hashes per `DownloadBlobs` call, each verified before it is kept.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use foldtrain_proto::blob_chunks::ChunkReassembler;
use foldtrain_proto::runtime::propagation::inject_trace_context;
use foldtrain_proto::{BlobHash, pb};
use tonic::Code;
use tracing::{Instrument, Span, debug, info_span};

use super::WorkerError;
use super::cache::BlobCache;
use super::client::Coordinator;

/// Hashes per `DownloadBlobs` call: large enough to amortise the round trip, small
/// enough that one failed call loses little.
pub const BATCH: usize = 256;

/// One blob a fold needs, with the name it is known by (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub hash: BlobHash,
    pub name: String,
}

/// Downloads whatever of `wanted` the cache lacks; returns how many blobs that was.
#[tracing::instrument(name = "pull_blobs", skip_all, fields(wanted = wanted.len(), missing))]
pub async fn fetch_missing(
    client: &mut Coordinator,
    url: &str,
    cache: &Arc<BlobCache>,
    wanted: Vec<Wanted>,
) -> Result<usize, WorkerError> {
    let lookup = cache.clone();
    // Thousands of stat calls are blocking work.
    let missing = tokio::task::spawn_blocking(move || {
        let mut seen = HashSet::new();
        wanted
            .into_iter()
            .filter(|w| seen.insert(w.hash) && !lookup.contains(&w.hash))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| internal("checking the blob cache", e))?;
    Span::current().record("missing", missing.len());
    for (i, batch) in missing.chunks(BATCH).enumerate() {
        debug!(
            batch = i,
            blobs = batch.len(),
            "downloading blobs from the coordinator"
        );
        let span = info_span!("download_blobs", batch = i, blobs = batch.len());
        if let Err(e) = download_batch(client, url, cache, batch)
            .instrument(span)
            .await
        {
            return Err(match e {
                Fetch::NotFound(message) => {
                    name_missing(client, url, &missing[i * BATCH..], message).await
                }
                Fetch::Other(e) => e,
            });
        }
    }
    Ok(missing.len())
}

enum Fetch {
    /// The coordinator lacks a blob; which one is found out afterwards.
    NotFound(String),
    Other(WorkerError),
}

impl From<WorkerError> for Fetch {
    fn from(e: WorkerError) -> Self {
        Fetch::Other(e)
    }
}

fn internal(what: &'static str, e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Internal {
        what,
        message: e.to_string(),
    }
}

fn status_error(url: &str, status: tonic::Status) -> Fetch {
    if status.code() == Code::NotFound {
        return Fetch::NotFound(status.message().to_string());
    }
    Fetch::Other(WorkerError::Coordinator {
        url: url.to_string(),
        message: format!(
            "downloading blobs: {:?}: {}",
            status.code(),
            status.message()
        ),
    })
}

async fn download_batch(
    client: &mut Coordinator,
    url: &str,
    cache: &Arc<BlobCache>,
    batch: &[Wanted],
) -> Result<(), Fetch> {
    let names: HashMap<BlobHash, &str> = batch.iter().map(|w| (w.hash, w.name.as_str())).collect();
    let mut request = tonic::Request::new(pb::DownloadBlobsRequest {
        hashes: batch.iter().map(|w| w.hash.0.to_vec()).collect(),
    });
    // The coordinator's `serve_blobs` span joins this fold's trace.
    inject_trace_context(&Span::current(), request.metadata_mut());
    let mut stream = client
        .download_blobs(request)
        .await
        .map_err(|s| status_error(url, s))?
        .into_inner();
    let bad = |message: String| Fetch::Other(WorkerError::BadBlobStream(message));
    let mut framing = ChunkReassembler::new();
    let mut bytes = Vec::new();
    let mut received = HashSet::new();
    while let Some(chunk) = stream.message().await.map_err(|s| status_error(url, s))? {
        let piece = framing.accept(chunk).map_err(|e| bad(e.to_string()))?;
        let Some(&name) = names.get(&piece.hash) else {
            return Err(bad(format!(
                "got blob {}, which was not asked for",
                piece.hash
            )));
        };
        if piece.is_first() {
            bytes.clear();
        }
        bytes.extend_from_slice(&piece.data);
        if !piece.last {
            continue;
        }
        let (store, hash, name) = (cache.clone(), piece.hash, name.to_string());
        let blob = std::mem::take(&mut bytes);
        // Hashing, writing and fsync happen off the async runtime.
        tokio::task::spawn_blocking(move || store.store(hash, &name, &blob))
            .await
            .map_err(|e| internal("storing a blob", e))??;
        received.insert(hash);
    }
    framing.finish().map_err(|e| bad(e.to_string()))?;
    if received.len() < names.len() {
        return Err(bad(format!(
            "got {} of the {} blobs asked for",
            received.len(),
            names.len()
        )));
    }
    Ok(())
}

/// Asks the coordinator which of `rest` it lacks, so the error names an image.
async fn name_missing(
    client: &mut Coordinator,
    url: &str,
    rest: &[Wanted],
    not_found: String,
) -> WorkerError {
    let request = pb::MissingBlobsRequest {
        hashes: rest.iter().map(|w| w.hash.0.to_vec()).collect(),
    };
    let missing = match client.missing_blobs(request).await {
        Ok(response) => response.into_inner().missing,
        Err(status) => {
            return WorkerError::Coordinator {
                url: url.to_string(),
                message: format!(
                    "{not_found}; asking which blobs are missing failed: {}",
                    status.message()
                ),
            };
        }
    };
    let missing: HashSet<&[u8]> = missing.iter().map(Vec::as_slice).collect();
    let mut lacking = rest.iter().filter(|w| missing.contains(&w.hash.0[..]));
    match lacking.next() {
        Some(first) => WorkerError::MissingBlob {
            name: first.name.clone(),
            hash: first.hash,
            others: lacking.count(),
        },
        // The blob appeared in between (an upload finished): a retry will find it.
        None => WorkerError::Coordinator {
            url: url.to_string(),
            message: format!("{not_found}, but it is there now"),
        },
    }
}
