//! Listing and downloading a job's result files, confined to the job's directory.

use std::path::{Component, Path, PathBuf};

use foldtrain_proto::{CHUNK_SIZE, JobId, pb};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tonic::Status;

use crate::error::{CoordinatorError, Result};

/// Every file under `dir`, as sorted `/`-separated relative paths; temporaries skipped.
pub fn list(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let io = |e| CoordinatorError::io(format!("listing {}", dir.display()), e);
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

/// Resolves a requested artifact path inside `dir`, refusing anything that could
/// leave it (absolute paths, `..`, hidden files).
pub fn resolve(job: &JobId, dir: &Path, requested: &str) -> Result<PathBuf> {
    let not_found = || CoordinatorError::ArtifactNotFound {
        job: job.clone(),
        path: requested.to_string(),
    };
    let rel = Path::new(requested);
    let safe = !requested.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(s) if !s.to_string_lossy().starts_with('.')));
    if !safe {
        return Err(CoordinatorError::invalid(format!(
            "artifact path {requested:?} must be relative, without `..` or hidden parts"
        )));
    }
    let path = dir.join(rel);
    if !path.is_file() {
        return Err(not_found());
    }
    Ok(path)
}

/// Streams a file in chunks of at most [`CHUNK_SIZE`].
pub async fn stream(path: PathBuf) -> Result<mpsc::Receiver<Result<pb::ArtifactChunk, Status>>> {
    let io = |e| CoordinatorError::io(format!("reading {}", path.display()), e);
    let mut file = tokio::fs::File::open(&path).await.map_err(io)?;
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let mut data = vec![0u8; CHUNK_SIZE];
            let n = match file.read(&mut data).await {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(CoordinatorError::io("reading artifact", e).into()))
                        .await;
                    return;
                }
            };
            data.truncate(n);
            if tx.send(Ok(pb::ArtifactChunk { data })).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_job_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("folds/0")).unwrap();
        std::fs::write(dir.path().join("folds/0/history.csv"), "x").unwrap();
        std::fs::write(dir.path().join("metrics.json"), "{}").unwrap();
        std::fs::write(dir.path().join(".metrics.json.1.tmp"), "").unwrap();
        assert_eq!(
            list(dir.path()).unwrap(),
            ["folds/0/history.csv", "metrics.json"]
        );
        let job = JobId::new("j");
        assert!(resolve(&job, dir.path(), "folds/0/history.csv").is_ok());
        for bad in [
            "../secret",
            "/etc/passwd",
            "folds/../../x",
            ".metrics.json.1.tmp",
            "",
        ] {
            let err = resolve(&job, dir.path(), bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        let err = resolve(&job, dir.path(), "report.html").unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.to_string().contains("report.html"));
    }
}
