//! Job rows: storing a submitted job with its manifest and folds in one transaction,
//! and reading jobs back.

use foldtrain_proto::{BlobHash, ImageRef, JobConfig, JobId};
use rusqlite::{Connection, OptionalExtension, params};

use super::records::{FoldState, JobRecord, JobState, JobSummary, now_ms, parse_column};
use crate::error::{CoordinatorError, Result};

/// Stores a new job, its images (with folds) and one queued row per fold, all or
/// nothing: once this returns the job survives a crash.
pub fn insert_job(conn: &mut Connection, job: &JobRecord) -> Result<()> {
    let tx = conn.transaction()?;
    let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs", [], |r| {
        r.get(0)
    })?;
    let classes = serde_json::to_string(&job.class_names)
        .map_err(|e| CoordinatorError::encode("class names", e))?;
    tx.execute(
        "INSERT INTO jobs (id, seq, name, state, message, config_toml, class_names, created_ms, \
         pretrained_blob) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            job.id.as_str(),
            seq,
            job.name,
            job.state.as_str(),
            job.message,
            job.config.to_toml(),
            classes,
            job.created_ms,
            job.config.model.pretrained.map(|blob| blob.0.to_vec())
        ],
    )?;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO job_images (job_id, split, row, hash, name, label, grp, size, fold) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        let train = job
            .train
            .iter()
            .enumerate()
            .map(|(row, image)| ("train", row, image, Some(job.fold_of[row])));
        let test = job
            .test
            .iter()
            .enumerate()
            .map(|(row, image)| ("test", row, image, None));
        for (split, row, image, fold) in train.chain(test) {
            stmt.execute(params![
                job.id.as_str(),
                split,
                row as i64,
                &image.hash.0[..],
                image.name,
                image.label,
                image.group,
                image.size as i64,
                fold
            ])?;
        }
        let mut fold_stmt =
            tx.prepare("INSERT INTO folds (job_id, fold, state) VALUES (?1, ?2, ?3)")?;
        for fold in 0..job.folds() {
            fold_stmt.execute(params![job.id.as_str(), fold, FoldState::Queued.as_str()])?;
        }
    }
    tx.execute(
        "INSERT INTO events (job_id, at_ms, kind, message) VALUES (?1, ?2, 'submitted', ?3)",
        params![
            job.id.as_str(),
            now_ms(),
            format!("{} train, {} test images", job.train.len(), job.test.len())
        ],
    )?;
    tx.commit()?;
    Ok(())
}

/// Reads a whole job back, manifest included.
pub fn load_job(conn: &Connection, id: &JobId) -> Result<JobRecord> {
    let summary = job_summary(conn, id)?;
    let (config_toml, classes): (String, String) = conn.query_row(
        "SELECT config_toml, class_names FROM jobs WHERE id = ?1",
        [id.as_str()],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let (config, _) = stored_config(id, &config_toml)?;
    let class_names: Vec<String> = serde_json::from_str(&classes)
        .map_err(|e| CoordinatorError::Corrupt(format!("job {id} classes: {e}")))?;
    let mut stmt = conn.prepare(
        "SELECT split, hash, name, label, grp, size, fold FROM job_images WHERE job_id = ?1 ORDER BY split, row",
    )?;
    let mut train = Vec::new();
    let mut test = Vec::new();
    let mut fold_of = Vec::new();
    let mut rows = stmt.query([id.as_str()])?;
    while let Some(row) = rows.next()? {
        let split: String = row.get(0)?;
        let hash: Vec<u8> = row.get(1)?;
        let image = ImageRef {
            hash: BlobHash::from_slice(&hash)
                .map_err(|e| CoordinatorError::Corrupt(e.to_string()))?,
            name: row.get(2)?,
            label: row.get(3)?,
            group: row.get(4)?,
            size: row.get::<_, i64>(5)? as u64,
        };
        if split == "train" {
            fold_of.push(row.get::<_, u32>(6)?);
            train.push(image);
        } else {
            test.push(image);
        }
    }
    Ok(JobRecord {
        id: summary.id,
        name: summary.name,
        state: summary.state,
        message: summary.message,
        config,
        class_names,
        train,
        test,
        fold_of,
        created_ms: summary.created_ms,
        finished_ms: summary.finished_ms,
        summary_json: summary.summary_json,
    })
}

const SUMMARY_COLUMNS: &str = "id, name, state, message, created_ms, finished_ms, summary_json";

/// The columns of [`SUMMARY_COLUMNS`] as read, before the state is parsed.
type SummaryRow = (String, String, String, String, i64, Option<i64>, String);

fn summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SummaryRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn to_summary(row: SummaryRow) -> Result<JobSummary> {
    let (id, name, state, message, created_ms, finished_ms, summary_json) = row;
    Ok(JobSummary {
        id: JobId::new(id),
        name,
        state: parse_column("jobs.state", &state)?,
        message,
        created_ms,
        finished_ms,
        summary_json,
    })
}

/// The short form of one job; `UnknownJob` when there is none with that id.
pub fn job_summary(conn: &Connection, id: &JobId) -> Result<JobSummary> {
    let row = conn
        .query_row(
            &format!("SELECT {SUMMARY_COLUMNS} FROM jobs WHERE id = ?1"),
            [id.as_str()],
            summary_from_row,
        )
        .optional()?
        .ok_or_else(|| CoordinatorError::UnknownJob(id.clone()))?;
    to_summary(row)
}

/// Every job, oldest first.
pub fn list_jobs(conn: &Connection) -> Result<Vec<JobSummary>> {
    let mut stmt = conn.prepare(&format!("SELECT {SUMMARY_COLUMNS} FROM jobs ORDER BY seq"))?;
    let rows = stmt.query_map([], summary_from_row)?;
    rows.map(|r| to_summary(r?)).collect()
}

/// Jobs that were still queued or running, oldest first: the work to resume on start.
pub fn unfinished_jobs(conn: &Connection) -> Result<Vec<JobId>> {
    let mut stmt =
        conn.prepare("SELECT id FROM jobs WHERE state IN ('queued', 'running') ORDER BY seq")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.map(|r| Ok(JobId::new(r?))).collect()
}

/// The job states no job leaves, as an SQL list.
pub(super) const FINAL_JOB_STATES: &str = "('succeeded', 'failed', 'cancelled')";

/// Moves a job to `state`; terminal states also record when and why. A job already in a
/// final state stays there: `AlreadyFinal`, and nothing is written. Of two racing final
/// states (a cancel and the end of aggregation) the first to commit is the one that holds.
pub fn set_job_state(conn: &Connection, id: &JobId, state: JobState, message: &str) -> Result<()> {
    let finished = state.is_terminal().then(now_ms);
    let changed = conn.execute(
        &format!(
            "UPDATE jobs SET state = ?2, message = ?3, finished_ms = COALESCE(?4, finished_ms) \
             WHERE id = ?1 AND state NOT IN {FINAL_JOB_STATES}"
        ),
        params![id.as_str(), state.as_str(), message, finished],
    )?;
    if changed == 0 {
        let current = job_summary(conn, id)?.state;
        return Err(CoordinatorError::AlreadyFinal {
            what: format!("job {id}"),
            state: current.as_str(),
            wanted: state.as_str(),
        });
    }
    conn.execute(
        "INSERT INTO events (job_id, at_ms, kind, message) VALUES (?1, ?2, ?3, ?4)",
        params![id.as_str(), now_ms(), state.as_str(), message],
    )?;
    Ok(())
}

/// Stores the CV summary shown by `status` once the job's metrics are known.
pub fn set_summary(conn: &Connection, id: &JobId, summary_json: &str) -> Result<()> {
    conn.execute(
        "UPDATE jobs SET summary_json = ?2 WHERE id = ?1",
        params![id.as_str(), summary_json],
    )?;
    Ok(())
}

/// The configured epoch count of a job (what a fold's progress counts towards).
pub fn load_epochs_setting(conn: &Connection, id: &JobId) -> Result<u32> {
    let toml: String = conn
        .query_row(
            "SELECT config_toml FROM jobs WHERE id = ?1",
            [id.as_str()],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| CoordinatorError::UnknownJob(id.clone()))?;
    Ok(stored_config(id, &toml)?.0.train.epochs)
}

/// A job's stored config, with the path an earlier version kept in `model.pretrained`
/// (dropped from the config) when it has one.
fn stored_config(id: &JobId, toml: &str) -> Result<(JobConfig, Option<String>)> {
    JobConfig::from_stored_toml(toml)
        .map_err(|e| CoordinatorError::Corrupt(format!("job {id} config: {e}")))
}

/// Fails a job stored by an earlier version with a path in `model.pretrained`, which
/// workers no longer read, rather than resume it without its weights. Returns whether
/// it did.
pub fn fail_if_pretrained_path(conn: &mut Connection, id: &JobId) -> Result<bool> {
    let toml: String = conn.query_row(
        "SELECT config_toml FROM jobs WHERE id = ?1",
        [id.as_str()],
        |r| r.get(0),
    )?;
    let Some(path) = stored_config(id, &toml)?.1 else {
        return Ok(false);
    };
    let message = format!(
        "stored with model.pretrained = {path:?}, a path on the workers, which they no longer \
         read; submit it again with --pretrained FILE, which uploads the weights"
    );
    let tx = conn.transaction()?;
    set_job_state(&tx, id, JobState::Failed, &message)?;
    super::folds::close_open_folds(&tx, id, FoldState::Failed)?;
    tx.commit()?;
    Ok(true)
}

/// What deleting a job let go of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletedJob {
    /// Blobs of the job nothing refers to any more: the caller removes them.
    pub released: Vec<foldtrain_proto::BlobHash>,
    /// Blobs of the job that other jobs still refer to, which stay.
    pub kept: usize,
}

/// Deletes a finished job's rows (images, folds, attempts, epochs, events, timings) in
/// one transaction, and says which of its blobs nothing refers to any more. A job still
/// queued or running is refused: cancel it first.
pub fn delete_job(conn: &mut Connection, id: &JobId) -> Result<DeletedJob> {
    let tx = conn.transaction()?;
    let state = job_summary(&tx, id)?.state;
    if !state.is_terminal() {
        return Err(CoordinatorError::WrongJobState {
            job: id.clone(),
            state: state.as_str().into(),
            action: "delete",
            needed: "finished (succeeded, failed or cancelled)",
        });
    }
    let mut blobs = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT hash FROM job_images WHERE job_id = ?1 \
             UNION SELECT latest_checkpoint FROM folds WHERE job_id = ?1 \
             UNION SELECT best_checkpoint FROM folds WHERE job_id = ?1 \
             UNION SELECT oof_blob FROM folds WHERE job_id = ?1 \
             UNION SELECT test_blob FROM folds WHERE job_id = ?1 \
             UNION SELECT pretrained_blob FROM jobs WHERE id = ?1",
        )?;
        let mut rows = stmt.query([id.as_str()])?;
        while let Some(row) = rows.next()? {
            if let Some(blob) = super::records::blob_from_column(row.get(0)?)? {
                blobs.push(blob);
            }
        }
    }
    for table in [
        "events",
        "epoch_metrics",
        "phase_seconds",
        "attempts",
        "folds",
        "job_images",
        "jobs",
    ] {
        let key = if table == "jobs" { "id" } else { "job_id" };
        tx.execute(
            &format!("DELETE FROM {table} WHERE {key} = ?1"),
            [id.as_str()],
        )?;
    }
    let released = super::refs::unreferenced(&tx, blobs.iter().copied())?;
    tx.commit()?;
    Ok(DeletedJob {
        kept: blobs.len() - released.len(),
        released,
    })
}
