//! Wire requests to domain values, rejecting what is malformed with a message that says
//! which field is wrong.

use foldtrain_proto::{BlobHash, ImageRef, JobConfig, JobId, ProtoError, pb};

use crate::error::{CoordinatorError, Result};
use crate::scheduler::{ClientSeconds, JobSpec};

/// A submitted job as the scheduler takes it.
pub fn job_spec(request: pb::SubmitJobRequest) -> Result<JobSpec> {
    let config = request.config.ok_or(ProtoError::MissingField("config"))?;
    let config = JobConfig::from_toml(&config.toml)?;
    let images = |field: &'static str, refs: Vec<pb::ImageRef>| -> Result<Vec<ImageRef>> {
        refs.into_iter()
            .enumerate()
            .map(|(row, r)| {
                ImageRef::try_from(r)
                    .map_err(|e| CoordinatorError::invalid(format!("{field} row {row}: {e}")))
            })
            .collect()
    };
    Ok(JobSpec {
        name: request.name,
        config,
        class_names: request.class_names,
        train: images("train", request.train)?,
        test: images("test", request.test)?,
        client: ClientSeconds {
            hashing: request.hash_seconds,
            upload: request.upload_seconds,
        },
    })
}

/// A list of 32-byte hashes, naming the position of any malformed one.
pub fn hashes(field: &str, raw: &[Vec<u8>]) -> Result<Vec<BlobHash>> {
    raw.iter()
        .enumerate()
        .map(|(i, h)| {
            BlobHash::from_slice(h)
                .map_err(|e| CoordinatorError::invalid(format!("{field}[{i}]: {e}")))
        })
        .collect()
}

/// A job id from a request; empty is a missing field.
pub fn job_id(raw: &str) -> Result<JobId> {
    if raw.is_empty() {
        return Err(ProtoError::MissingField("job_id").into());
    }
    Ok(JobId::new(raw))
}
