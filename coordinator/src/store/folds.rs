//! Fold, attempt and per-epoch rows: what each dispatch did and what it left behind.

use foldtrain_proto::task::{CheckpointKind, EpochRecord, FoldSummary};
use foldtrain_proto::{AttemptId, BlobHash, FoldIndex, JobId, WorkerId};
use rusqlite::{Connection, OptionalExtension, params};

use super::records::{
    AttemptRecord, AttemptState, FoldRecord, FoldState, JobState, StoredCheckpoint,
    blob_from_column, now_ms, parse_column,
};
use crate::error::{CoordinatorError, Result};

/// The largest attempt id ever handed out, so ids stay monotonic across restarts.
pub fn max_attempt_id(conn: &Connection) -> Result<AttemptId> {
    let max: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM attempts", [], |r| {
        r.get(0)
    })?;
    // AUTOINCREMENT's own counter also covers deleted rows.
    let seq: i64 = conn
        .query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'attempts'",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    Ok(AttemptId(max.max(seq) as u64))
}

/// Records a new dispatch and marks its fold running, and its job too on the job's first
/// dispatch. Epoch rows after the resume point belong to the abandoned attempt and are
/// dropped, so the history stays one line per epoch. A fold or job already over (a cancel
/// that won the race) is not moved back: `AlreadyFinal`, and nothing is recorded.
pub fn start_attempt(
    conn: &mut Connection,
    attempt: &AttemptRecord,
    first_dispatch: bool,
) -> Result<()> {
    let tx = conn.transaction()?;
    if first_dispatch {
        super::jobs::set_job_state(&tx, &attempt.job, JobState::Running, "")?;
    }
    tx.execute(
        "INSERT INTO attempts (id, job_id, fold, worker_id, slot, state, started_ms, resumed_from_epoch) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            attempt.id.0 as i64,
            attempt.job.as_str(),
            attempt.fold.0,
            attempt.worker.as_str(),
            attempt.slot,
            AttemptState::Running.as_str(),
            attempt.started_ms,
            attempt.resumed_from_epoch
        ],
    )?;
    let started = tx.execute(
        &format!(
            "UPDATE folds SET state = 'running', attempts = attempts + 1 \
             WHERE job_id = ?1 AND fold = ?2 AND state NOT IN {FINAL_FOLD_STATES}"
        ),
        params![attempt.job.as_str(), attempt.fold.0],
    )?;
    if started == 0 {
        // The transaction rolls back: no attempt is recorded for a fold that is over.
        return Err(fold_not_moved(
            &tx,
            &attempt.job,
            attempt.fold,
            FoldState::Running,
        ));
    }
    tx.execute(
        "DELETE FROM epoch_metrics WHERE job_id = ?1 AND fold = ?2 AND epoch > ?3",
        params![
            attempt.job.as_str(),
            attempt.fold.0,
            attempt.resumed_from_epoch
        ],
    )?;
    tx.execute(
        "INSERT INTO events (job_id, fold, attempt, at_ms, kind, message) VALUES (?1, ?2, ?3, ?4, 'dispatched', ?5)",
        params![
            attempt.job.as_str(),
            attempt.fold.0,
            attempt.id.0 as i64,
            now_ms(),
            format!("worker {} slot {}", attempt.worker, attempt.slot)
        ],
    )?;
    tx.commit()?;
    Ok(())
}

/// The fold states no fold leaves, as an SQL list.
const FINAL_FOLD_STATES: &str = "('done', 'failed', 'cancelled')";

/// Whether an ended attempt uses up one of its fold's `train.max_attempts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charge {
    /// It failed, or its worker was lost: it counts.
    Counted,
    /// It succeeded, was cancelled, superseded, refused by a busy slot, or ended by a
    /// coordinator restart: the fold's budget is untouched.
    Free,
}

/// Closes an attempt with how it ended, once: an attempt already closed keeps its end.
pub fn end_attempt(
    conn: &Connection,
    id: AttemptId,
    state: AttemptState,
    reason: &str,
    charge: Charge,
) -> Result<()> {
    conn.execute(
        "UPDATE attempts SET state = ?2, reason = ?3, ended_ms = ?4, charged = ?5 \
         WHERE id = ?1 AND ended_ms IS NULL",
        params![
            id.0 as i64,
            state.as_str(),
            reason,
            now_ms(),
            charge == Charge::Counted
        ],
    )?;
    Ok(())
}

/// Closes every attempt still marked running (after a coordinator restart they are gone),
/// without charging their folds' retry budgets: the restart was not their failure.
pub fn abandon_running_attempts(conn: &Connection, reason: &str) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE attempts SET state = 'lost', reason = ?1, ended_ms = ?2 WHERE state = 'running'",
        params![reason, now_ms()],
    )?)
}

/// Moves a fold that is not over yet to `state`; a fold in a final state stays there
/// (`AlreadyFinal`).
pub fn set_fold_state(
    conn: &Connection,
    job: &JobId,
    fold: FoldIndex,
    state: FoldState,
) -> Result<()> {
    let changed = conn.execute(
        &format!(
            "UPDATE folds SET state = ?3 WHERE job_id = ?1 AND fold = ?2 \
             AND state NOT IN {FINAL_FOLD_STATES}"
        ),
        params![job.as_str(), fold.0, state.as_str()],
    )?;
    if changed == 0 {
        return Err(fold_not_moved(conn, job, fold, state));
    }
    Ok(())
}

/// Why a guarded fold update changed nothing: the fold is final, or there is none.
fn fold_not_moved(
    conn: &Connection,
    job: &JobId,
    fold: FoldIndex,
    wanted: FoldState,
) -> CoordinatorError {
    let current = conn
        .query_row(
            "SELECT state FROM folds WHERE job_id = ?1 AND fold = ?2",
            params![job.as_str(), fold.0],
            |r| r.get::<_, String>(0),
        )
        .optional();
    match current {
        Ok(Some(state)) => match parse_column::<FoldState>("folds.state", &state) {
            Ok(state) => CoordinatorError::AlreadyFinal {
                what: format!("fold {fold} of job {job}"),
                state: state.as_str(),
                wanted: wanted.as_str(),
            },
            Err(e) => e,
        },
        Ok(None) => CoordinatorError::Corrupt(format!("job {job} has no fold {fold}")),
        Err(e) => e.into(),
    }
}

/// Marks every fold of a job not yet done with `state` (job failed or cancelled).
pub fn close_open_folds(conn: &Connection, job: &JobId, state: FoldState) -> Result<()> {
    conn.execute(
        "UPDATE folds SET state = ?2 WHERE job_id = ?1 AND state IN ('queued', 'running')",
        params![job.as_str(), state.as_str()],
    )?;
    Ok(())
}

pub fn record_epoch(
    conn: &Connection,
    job: &JobId,
    fold: FoldIndex,
    attempt: AttemptId,
    e: &EpochRecord,
) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO epoch_metrics (job_id, fold, epoch, attempt, loss, accuracy, f1, val_loss, \
         val_accuracy, val_f1, lr, images_per_sec, seconds) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            job.as_str(),
            fold.0,
            e.epoch,
            attempt.0 as i64,
            e.loss,
            e.accuracy,
            e.f1,
            e.val_loss,
            e.val_accuracy,
            e.val_f1,
            e.lr,
            e.images_per_sec,
            e.seconds
        ],
    )?;
    Ok(())
}

/// One fold's epochs in order.
pub fn history(conn: &Connection, job: &JobId, fold: FoldIndex) -> Result<Vec<EpochRecord>> {
    let mut stmt = conn.prepare(
        "SELECT epoch, loss, accuracy, f1, val_loss, val_accuracy, val_f1, lr, images_per_sec, seconds \
         FROM epoch_metrics WHERE job_id = ?1 AND fold = ?2 ORDER BY epoch",
    )?;
    let rows = stmt.query_map(params![job.as_str(), fold.0], |r| {
        Ok(EpochRecord {
            epoch: r.get(0)?,
            loss: r.get(1)?,
            accuracy: r.get(2)?,
            f1: r.get(3)?,
            val_loss: r.get(4)?,
            val_accuracy: r.get(5)?,
            val_f1: r.get(6)?,
            lr: r.get(7)?,
            images_per_sec: r.get(8)?,
            seconds: r.get(9)?,
            // Not kept per epoch: the job's time breakdown adds them up in phase_seconds.
            ..EpochRecord::default()
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Points the fold at a newly stored checkpoint blob. Returns the checkpoint it
/// supersedes when nothing refers to it any more: the caller removes its blob, so a
/// fold's checkpoints take the room of one, not of one per epoch.
pub fn set_checkpoint(
    conn: &Connection,
    job: &JobId,
    fold: FoldIndex,
    kind: CheckpointKind,
    blob: BlobHash,
    epoch: u32,
) -> Result<Option<BlobHash>> {
    let (column, epoch_column) = match kind {
        CheckpointKind::Latest => ("latest_checkpoint", "latest_epoch"),
        CheckpointKind::Best => ("best_checkpoint", "best_checkpoint_epoch"),
    };
    let previous: Option<Vec<u8>> = conn
        .query_row(
            &format!("SELECT {column} FROM folds WHERE job_id = ?1 AND fold = ?2"),
            params![job.as_str(), fold.0],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    conn.execute(
        &format!(
            "UPDATE folds SET {column} = ?3, {epoch_column} = ?4 WHERE job_id = ?1 AND fold = ?2"
        ),
        params![job.as_str(), fold.0, &blob.0[..], epoch],
    )?;
    let previous = blob_from_column(previous)?.filter(|p| *p != blob);
    Ok(super::refs::unreferenced(conn, previous)?.pop())
}

/// Which probability set a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbabilitySet {
    Oof,
    Test,
}

pub fn set_probabilities(
    conn: &Connection,
    job: &JobId,
    fold: FoldIndex,
    set: ProbabilitySet,
    blob: BlobHash,
) -> Result<()> {
    let sql = match set {
        ProbabilitySet::Oof => "UPDATE folds SET oof_blob = ?3 WHERE job_id = ?1 AND fold = ?2",
        ProbabilitySet::Test => "UPDATE folds SET test_blob = ?3 WHERE job_id = ?1 AND fold = ?2",
    };
    conn.execute(sql, params![job.as_str(), fold.0, &blob.0[..]])?;
    Ok(())
}

/// Marks a fold done with its summary and closes the attempt that finished it. A done
/// fold is never resumed, so its latest checkpoint is let go: returned when nothing else
/// refers to it, for the caller to remove.
pub fn finish_fold(
    conn: &mut Connection,
    job: &JobId,
    fold: FoldIndex,
    attempt: AttemptId,
    s: &FoldSummary,
) -> Result<Option<BlobHash>> {
    let tx = conn.transaction()?;
    let changed = tx.execute(
        &format!(
            "UPDATE folds SET state = 'done', best_epoch = ?3, best_val_loss = ?4, epochs_run = ?5, \
             early_stopped = ?6 WHERE job_id = ?1 AND fold = ?2 AND state NOT IN {FINAL_FOLD_STATES}"
        ),
        params![job.as_str(), fold.0, s.best_epoch, s.best_val_loss, s.epochs_run, s.early_stopped],
    )?;
    if changed == 0 {
        return Err(fold_not_moved(&tx, job, fold, FoldState::Done));
    }
    end_attempt(&tx, attempt, AttemptState::Succeeded, "", Charge::Free)?;
    let latest: Option<Vec<u8>> = tx.query_row(
        "SELECT latest_checkpoint FROM folds WHERE job_id = ?1 AND fold = ?2",
        params![job.as_str(), fold.0],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE folds SET latest_checkpoint = NULL WHERE job_id = ?1 AND fold = ?2",
        params![job.as_str(), fold.0],
    )?;
    let released = super::refs::unreferenced(&tx, blob_from_column(latest)?)?.pop();
    tx.commit()?;
    Ok(released)
}

/// Every fold of a job, in fold order.
pub fn folds(conn: &Connection, job: &JobId) -> Result<Vec<FoldRecord>> {
    let mut stmt = conn.prepare(
        "SELECT fold, state, attempts, best_epoch, best_val_loss, epochs_run, early_stopped, \
         latest_checkpoint, latest_epoch, best_checkpoint, best_checkpoint_epoch, oof_blob, test_blob, \
         (SELECT COUNT(*) FROM attempts a WHERE a.job_id = folds.job_id AND a.fold = folds.fold \
          AND a.charged = 1) \
         FROM folds WHERE job_id = ?1 ORDER BY fold",
    )?;
    let mut rows = stmt.query([job.as_str()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let checkpoint =
            |blob: Option<Vec<u8>>, epoch: Option<u32>| -> Result<Option<StoredCheckpoint>> {
                Ok(match (blob_from_column(blob)?, epoch) {
                    (Some(blob), Some(epoch)) => Some(StoredCheckpoint { blob, epoch }),
                    _ => None,
                })
            };
        out.push(FoldRecord {
            fold: FoldIndex(r.get(0)?),
            state: parse_column("folds.state", &r.get::<_, String>(1)?)?,
            attempts: r.get(2)?,
            best_epoch: r.get(3)?,
            best_val_loss: r.get(4)?,
            epochs_run: r.get(5)?,
            early_stopped: r.get::<_, Option<bool>>(6)?.unwrap_or(false),
            latest_checkpoint: checkpoint(r.get(7)?, r.get(8)?)?,
            best_checkpoint: checkpoint(r.get(9)?, r.get(10)?)?,
            oof_blob: blob_from_column(r.get(11)?)?,
            test_blob: blob_from_column(r.get(12)?)?,
            charged_attempts: r.get(13)?,
        });
    }
    Ok(out)
}

/// Every attempt of a job, oldest first.
pub fn attempts(conn: &Connection, job: &JobId) -> Result<Vec<AttemptRecord>> {
    let mut stmt = conn.prepare(
        "SELECT id, fold, worker_id, slot, state, reason, started_ms, ended_ms, resumed_from_epoch \
         FROM attempts WHERE job_id = ?1 ORDER BY id",
    )?;
    let mut rows = stmt.query([job.as_str()])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        out.push(AttemptRecord {
            id: AttemptId(r.get::<_, i64>(0)? as u64),
            job: job.clone(),
            fold: FoldIndex(r.get(1)?),
            worker: WorkerId::new(r.get::<_, String>(2)?),
            slot: r.get(3)?,
            state: parse_column("attempts.state", &r.get::<_, String>(4)?)?,
            reason: r.get(5)?,
            started_ms: r.get(6)?,
            ended_ms: r.get(7)?,
            resumed_from_epoch: r.get(8)?,
        });
    }
    Ok(out)
}

/// Appends a line to a job's event log.
pub fn add_event(
    conn: &Connection,
    job: &JobId,
    fold: Option<FoldIndex>,
    attempt: Option<AttemptId>,
    kind: &str,
    message: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO events (job_id, fold, attempt, at_ms, kind, message) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            job.as_str(),
            fold.map(|f| f.0),
            attempt.map(|a| a.0 as i64),
            now_ms(),
            kind,
            message
        ],
    )?;
    Ok(())
}

/// A job's event log as (kind, message) pairs, oldest first.
pub fn events(conn: &Connection, job: &JobId) -> Result<Vec<(String, String)>> {
    let mut stmt =
        conn.prepare("SELECT kind, message FROM events WHERE job_id = ?1 ORDER BY id")?;
    let rows = stmt.query_map([job.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect::<rusqlite::Result<_>>()
        .map_err(CoordinatorError::from)
}
