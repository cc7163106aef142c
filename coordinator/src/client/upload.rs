//! Submitting a loaded data set: ask which blobs the coordinator lacks, stream only
//! those from disk in chunks, then submit the job's manifest and configuration.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use foldtrain_proto::blob_chunks::ChunkCutter;
use foldtrain_proto::{BlobHash, ImageRef, JobConfig, JobId, pb};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::connection::Client;
use super::error::ClientError;
use super::progress::UploadProgress;
use crate::dataset::{Dataset, Entry};

/// Hashes per MissingBlobs request: about 600 KB, far below any message limit.
const MISSING_BATCH: usize = 16 * 1024;

/// Bytes per UploadBlobs stream. Each stored blob survives a broken stream, but a
/// bounded stream bounds what a failure costs and keeps each call's work visible.
const UPLOAD_BATCH_BYTES: u64 = 256 * 1024 * 1024;

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubmitOutcome {
    pub job_id: JobId,
    /// Images the coordinator lacked and received now.
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Asking which blobs the coordinator lacks and uploading them.
    pub upload: Duration,
}

/// What an upload sent: the images the coordinator lacked, and their bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Uploaded {
    pub blobs: u64,
    pub bytes: u64,
}

/// Uploads the images the coordinator lacks and submits the job.
///
/// A group column the data set was read with becomes the split's group column when
/// the configuration names none; a configuration that names one the data set was not
/// read with is refused.
pub async fn submit_dataset(
    client: &Client,
    dataset: &Dataset,
    config: JobConfig,
    name: &str,
    progress: &dyn UploadProgress,
) -> Result<SubmitOutcome, ClientError> {
    submit_dataset_hashed_in(client, dataset, config, name, progress, Duration::ZERO).await
}

/// [`submit_dataset`], telling the coordinator that reading and hashing the data set took
/// `hashing`, and how long the upload took, for the job's time breakdown.
pub async fn submit_dataset_hashed_in(
    client: &Client,
    dataset: &Dataset,
    mut config: JobConfig,
    name: &str,
    progress: &dyn UploadProgress,
    hashing: Duration,
) -> Result<SubmitOutcome, ClientError> {
    adopt_group_column(&mut config, dataset)?;
    if let Some(w) = dataset.classes.windows(2).find(|w| w[0] >= w[1]) {
        return Err(ClientError::Invalid(format!(
            "class names must be distinct and sorted: {:?} comes before {:?}",
            w[0], w[1]
        )));
    }
    let started = Instant::now();
    let uploaded = upload_dataset(client, dataset, progress).await?;
    let upload = started.elapsed();
    let request = pb::SubmitJobRequest {
        config: Some(pb::JobConfig {
            toml: config.to_toml(),
        }),
        class_names: dataset.classes.clone(),
        train: dataset.train.iter().map(wire_ref).collect(),
        test: dataset.test.iter().map(wire_ref).collect(),
        name: name.to_string(),
        hash_seconds: hashing.as_secs_f64(),
        upload_seconds: upload.as_secs_f64(),
    };
    let job_id = client
        .rpc()
        .submit_job(request)
        .await
        .map_err(|s| client.error("submit job", None, s))?
        .into_inner()
        .job_id;
    Ok(SubmitOutcome {
        job_id: JobId::new(job_id),
        blobs_uploaded: uploaded.blobs,
        bytes_uploaded: uploaded.bytes,
        upload,
    })
}

/// Checks the configuration's group column against the one the data set was read with.
fn adopt_group_column(config: &mut JobConfig, dataset: &Dataset) -> Result<(), ClientError> {
    match (&config.split.group_column, &dataset.group_column) {
        (None, Some(column)) => config.split.group_column = Some(column.clone()),
        (Some(wanted), read) if read.as_ref() != Some(wanted) => {
            return Err(ClientError::Invalid(format!(
                "the config groups by split.group_column = {wanted:?} but the data set was read \
                 without it; pass --group-column {wanted}"
            )));
        }
        _ => {}
    }
    Ok(())
}

fn wire_ref(entry: &Entry) -> pb::ImageRef {
    pb::ImageRef::from(&ImageRef::from(entry))
}

/// Uploads the images of `dataset` the coordinator does not hold yet.
pub async fn upload_dataset(
    client: &Client,
    dataset: &Dataset,
    progress: &dyn UploadProgress,
) -> Result<Uploaded, ClientError> {
    let missing = missing_entries(client, dataset.train.iter().chain(&dataset.test)).await?;
    upload(client, &missing, progress).await
}

/// Uploads those of `files` the coordinator does not hold yet: a job's pretrained
/// weights, which it names by hash.
pub async fn upload_files(
    client: &Client,
    files: &[Entry],
    progress: &dyn UploadProgress,
) -> Result<Uploaded, ClientError> {
    let missing = missing_entries(client, files.iter()).await?;
    upload(client, &missing, progress).await
}

/// One entry per distinct blob the coordinator does not hold yet, in the order given.
async fn missing_entries<'a>(
    client: &Client,
    entries: impl Iterator<Item = &'a Entry>,
) -> Result<Vec<&'a Entry>, ClientError> {
    let mut seen = HashSet::new();
    let unique: Vec<&Entry> = entries.filter(|e| seen.insert(e.hash)).collect();
    let mut missing: HashSet<BlobHash> = HashSet::new();
    for batch in unique.chunks(MISSING_BATCH) {
        let request = pb::MissingBlobsRequest {
            hashes: batch.iter().map(|e| e.hash.0.to_vec()).collect(),
        };
        let response = client
            .rpc()
            .missing_blobs(request)
            .await
            .map_err(|s| client.error("missing blobs", None, s))?
            .into_inner();
        for raw in response.missing {
            let hash = BlobHash::from_slice(&raw).map_err(|e| {
                ClientError::Invalid(format!("the coordinator sent a malformed hash: {e}"))
            })?;
            missing.insert(hash);
        }
    }
    Ok(unique
        .into_iter()
        .filter(|e| missing.contains(&e.hash))
        .collect())
}

/// Streams `entries` in bounded batches; returns what the coordinator stored.
async fn upload(
    client: &Client,
    entries: &[&Entry],
    progress: &dyn UploadProgress,
) -> Result<Uploaded, ClientError> {
    if entries.is_empty() {
        return Ok(Uploaded::default());
    }
    progress.start(entries.len(), entries.iter().map(|e| e.size).sum());
    let (mut stored, mut done) = (Uploaded::default(), 0usize);
    for batch in batches(entries) {
        let (tx, rx) = mpsc::channel(4);
        let mut rpc = client.rpc();
        // Files are read while the call streams them out.
        let (response, sent) = tokio::join!(
            rpc.upload_blobs(ReceiverStream::new(rx)),
            send_files(batch, tx, progress, done),
        );
        // A local read error explains a failed upload better than the server's view
        // of a stream that ended early.
        sent?;
        let response = response
            .map_err(|s| client.error("upload blobs", None, s))?
            .into_inner();
        stored.blobs += response.blobs;
        stored.bytes += response.bytes;
        done += batch.len();
    }
    progress.finish();
    if stored.blobs != entries.len() as u64 {
        return Err(ClientError::Invalid(format!(
            "the coordinator stored {} of the {} images sent",
            stored.blobs,
            entries.len()
        )));
    }
    Ok(stored)
}

/// Consecutive runs of entries of at most [`UPLOAD_BATCH_BYTES`] (at least one each).
fn batches<'a, 'b>(entries: &'b [&'a Entry]) -> Vec<&'b [&'a Entry]> {
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0u64);
    for (i, e) in entries.iter().enumerate() {
        if i > start && size + e.size > UPLOAD_BATCH_BYTES {
            out.push(&entries[start..i]);
            (start, size) = (i, 0);
        }
        size += e.size;
    }
    out.push(&entries[start..]);
    out
}

/// Sends every file of `entries`; stops quietly when the receiver is gone (the RPC
/// failed, and its error is reported).
async fn send_files(
    entries: &[&Entry],
    tx: mpsc::Sender<pb::BlobChunk>,
    progress: &dyn UploadProgress,
    done_before: usize,
) -> Result<(), ClientError> {
    for (n, entry) in entries.iter().enumerate() {
        progress.image(done_before + n);
        if !send_file(entry, &tx, progress).await? {
            break;
        }
    }
    Ok(())
}

/// Reads one file in chunks and sends them, hashing as it goes so a file that changed
/// since it was hashed is caught here, with its path, before its last chunk is sent.
/// Returns false when the receiver is gone.
async fn send_file(
    entry: &Entry,
    tx: &mpsc::Sender<pb::BlobChunk>,
    progress: &dyn UploadProgress,
) -> Result<bool, ClientError> {
    let path = &entry.path;
    let io = |e| ClientError::io(format!("reading {}", path.display()), e);
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let size = file.metadata().await.map_err(io)?.len();
    let mut cutter = ChunkCutter::new(entry.hash, size);
    let mut hasher = blake3::Hasher::new();
    while let Some(len) = cutter.next_len() {
        let mut data = vec![0u8; len];
        file.read_exact(&mut data).await.map_err(io)?;
        hasher.update(&data);
        let chunk = cutter.cut(data);
        if chunk.last && BlobHash::from(hasher.finalize()) != entry.hash {
            return Err(ClientError::ChangedFile {
                path: path.clone(),
                expected: entry.hash.to_hex(),
            });
        }
        if tx.send(chunk).await.is_err() {
            return Ok(false);
        }
        progress.sent(len as u64);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn entry(size: u64) -> Entry {
        Entry {
            name: format!("{size}"),
            path: PathBuf::new(),
            label: None,
            group: None,
            size,
            hash: BlobHash::of(&size.to_le_bytes()),
        }
    }

    #[test]
    fn upload_batches_are_bounded() {
        let big = UPLOAD_BATCH_BYTES / 2 + 1;
        let entries = [
            entry(big),
            entry(big),
            entry(10),
            entry(3 * UPLOAD_BATCH_BYTES),
        ];
        let refs: Vec<&Entry> = entries.iter().collect();
        let sizes: Vec<usize> = batches(&refs).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [1, 2, 1]);
        let one = [entry(1)];
        let refs: Vec<&Entry> = one.iter().collect();
        assert_eq!(batches(&refs).len(), 1);
    }
}
