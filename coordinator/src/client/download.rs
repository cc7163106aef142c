//! Downloading a job's result files: each written to a temporary file and renamed into
//! place, keeping the relative paths the coordinator lists, never leaving the folder.

use std::path::{Path, PathBuf};

use foldtrain_proto::{JobId, pb};
use tokio::io::AsyncWriteExt;

use super::connection::Client;
use super::error::ClientError;

/// Downloads every artifact of `job` under `out_dir`; returns the files written, in the
/// coordinator's (sorted) order.
pub async fn download_results(
    client: &Client,
    job: &JobId,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, ClientError> {
    let paths = client.artifacts(job).await?;
    // Check every path before writing anything.
    let targets: Vec<(String, PathBuf)> = paths
        .into_iter()
        .map(|p| {
            let rel =
                safe_relative(&p).ok_or_else(|| ClientError::UnsafeArtifactPath(p.clone()))?;
            Ok((p, out_dir.join(rel)))
        })
        .collect::<Result<_, ClientError>>()?;
    let mut written = Vec::with_capacity(targets.len());
    for (artifact, target) in targets {
        download_to(client, job, &artifact, &target).await?;
        written.push(target);
    }
    Ok(written)
}

/// A coordinator-listed path as a relative local path, or `None` when it could leave
/// the output folder (absolute, `..`, empty parts, drive or backslash tricks).
pub fn safe_relative(path: &str) -> Option<PathBuf> {
    if path.is_empty() || path.contains('\\') || path.contains(':') || path.contains('\0') {
        return None;
    }
    let mut out = PathBuf::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// Streams one artifact into `target` atomically (temporary file, then rename).
async fn download_to(
    client: &Client,
    job: &JobId,
    artifact: &str,
    target: &Path,
) -> Result<(), ClientError> {
    let parent = target.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(parent)
        .await
        .map_err(|e| io("creating", parent, e))?;
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = parent.join(format!(".{file_name}.{}.part", std::process::id()));
    let result = async {
        write_artifact(client, job, artifact, &temp).await?;
        tokio::fs::rename(&temp, target)
            .await
            .map_err(|e| io("moving into place", target, e))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result
}

/// Writes one artifact's bytes to `path` and syncs them to disk.
async fn write_artifact(
    client: &Client,
    job: &JobId,
    artifact: &str,
    path: &Path,
) -> Result<(), ClientError> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| io("creating", path, e))?;
    let mut stream = open(client, job, artifact).await?;
    while let Some(chunk) = next(client, job, &mut stream).await? {
        file.write_all(&chunk.data)
            .await
            .map_err(|e| io("writing", path, e))?;
    }
    file.sync_all().await.map_err(|e| io("writing", path, e))
}

/// One artifact's bytes in memory (small files such as metrics.json).
pub async fn fetch_artifact(
    client: &Client,
    job: &JobId,
    artifact: &str,
) -> Result<Vec<u8>, ClientError> {
    let mut stream = open(client, job, artifact).await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = next(client, job, &mut stream).await? {
        bytes.extend(chunk.data);
    }
    Ok(bytes)
}

async fn open(
    client: &Client,
    job: &JobId,
    artifact: &str,
) -> Result<tonic::Streaming<pb::ArtifactChunk>, ClientError> {
    let request = pb::DownloadArtifactRequest {
        job_id: job.to_string(),
        path: artifact.to_string(),
    };
    client
        .rpc()
        .download_artifact(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| client.error("download artifact", Some(job), s))
}

async fn next(
    client: &Client,
    job: &JobId,
    stream: &mut tonic::Streaming<pb::ArtifactChunk>,
) -> Result<Option<pb::ArtifactChunk>, ClientError> {
    stream
        .message()
        .await
        .map_err(|s| client.error("download artifact", Some(job), s))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> ClientError {
    ClientError::io(format!("{what} {}", path.display()), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_inside_the_folder_are_accepted() {
        assert_eq!(
            safe_relative("folds/0/history.csv"),
            Some(PathBuf::from("folds").join("0").join("history.csv"))
        );
        assert_eq!(
            safe_relative("metrics.json"),
            Some(PathBuf::from("metrics.json"))
        );
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "folds/../../x",
            "a//b",
            "./a",
            "a/",
            "C:/x",
            "a\\..\\b",
        ] {
            assert_eq!(safe_relative(bad), None, "{bad}");
        }
    }
}
