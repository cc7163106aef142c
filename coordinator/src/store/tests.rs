//! Store round trips: a job stored in one transaction reads back whole, from any
//! connection, as soon as the insert returns.

use foldtrain_proto::task::{CheckpointKind, EpochRecord, FoldSummary};
use foldtrain_proto::{AttemptId, BlobHash, FoldIndex, ImageRef, JobConfig, JobId, WorkerId};

use super::*;
use crate::store::folds::Charge;

fn record() -> JobRecord {
    let image = |name: &str, label: Option<u32>, group: &str| ImageRef {
        hash: BlobHash::of(name.as_bytes()),
        name: name.into(),
        label,
        group: group.into(),
        size: 42,
    };
    let mut config = JobConfig::default();
    config.split.folds = 2;
    JobRecord {
        id: JobId::new("job-1"),
        name: "kvasir".into(),
        state: JobState::Queued,
        message: String::new(),
        config,
        class_names: vec!["a".into(), "b".into()],
        train: vec![
            image("t0.jpg", Some(0), "v1"),
            image("t1.jpg", Some(1), "v2"),
            image("t2.jpg", Some(1), "v2"),
        ],
        test: vec![image("x0.jpg", None, "")],
        fold_of: vec![1, 0, 0],
        created_ms: 1234,
        finished_ms: None,
        summary_json: String::new(),
    }
}

#[test]
fn a_stored_job_is_visible_to_other_connections_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let job = record();
    store
        .db
        .call_blocking(|c| jobs::insert_job(c, &job))
        .unwrap();
    // A separate connection, as another process (or a restarted one) would open.
    let other = rusqlite::Connection::open(dir.path().join("state.sqlite")).unwrap();
    let (state, images, folds): (String, i64, i64) = other
        .query_row(
            "SELECT state, (SELECT count(*) FROM job_images WHERE job_id = 'job-1'), \
             (SELECT count(*) FROM folds WHERE job_id = 'job-1') FROM jobs WHERE id = 'job-1'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), images, folds), ("queued", 4, 2));
    let back = store
        .db
        .call_blocking(|c| jobs::load_job(c, &job.id))
        .unwrap();
    assert_eq!(back, job);
    assert_eq!(back.val_rows(FoldIndex(0)), vec![1, 2]);
    let missing = store
        .db
        .call_blocking(|c| jobs::load_job(c, &JobId::new("nope")))
        .unwrap_err();
    assert_eq!(missing.to_string(), "unknown job nope");
}

#[test]
fn a_failed_insert_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut job = record();
    job.id = JobId::new("job-2");
    // A stray fold row makes the insert fail late, after the job and image rows.
    store
        .db
        .call_blocking(|c| {
            c.pragma_update(None, "foreign_keys", false)?;
            c.execute(
                "INSERT INTO folds (job_id, fold, state) VALUES ('job-2', 1, 'queued')",
                [],
            )?;
            c.pragma_update(None, "foreign_keys", true)?;
            Ok(())
        })
        .unwrap();
    store
        .db
        .call_blocking(|c| jobs::insert_job(c, &job))
        .unwrap_err();
    let (jobs, images): (i64, i64) = store
        .db
        .call_blocking(|c| {
            Ok(c.query_row(
                "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_images)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    assert_eq!((jobs, images), (0, 0));
}

#[test]
fn attempts_checkpoints_and_history_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let job = record();
    store
        .db
        .call_blocking(|c| jobs::insert_job(c, &job))
        .unwrap();
    let attempt = |id: u64, resumed: u32| running_attempt(&job.id, id, 1, resumed);
    let epoch = |e: u32| EpochRecord {
        epoch: e,
        val_loss: 1.0 / e as f64,
        ..Default::default()
    };
    let released = store
        .db
        .call_blocking(|c| {
            folds::start_attempt(c, &attempt(7, 0), true)?;
            for e in 1..=3 {
                folds::record_epoch(c, &job.id, FoldIndex(1), AttemptId(7), &epoch(e))?;
            }
            folds::set_checkpoint(
                c,
                &job.id,
                FoldIndex(1),
                CheckpointKind::Latest,
                BlobHash::of(b"e2"),
                2,
            )?;
            folds::end_attempt(c, AttemptId(7), AttemptState::Lost, "gone", Charge::Counted)?;
            // The retry resumes after epoch 2: epoch 3 of the lost attempt is dropped.
            folds::start_attempt(c, &attempt(8, 2), false)?;
            folds::record_epoch(c, &job.id, FoldIndex(1), AttemptId(8), &epoch(3))?;
            folds::finish_fold(
                c,
                &job.id,
                FoldIndex(1),
                AttemptId(8),
                &FoldSummary {
                    best_epoch: 3,
                    best_val_loss: 0.33,
                    epochs_run: 3,
                    early_stopped: false,
                },
            )
        })
        .unwrap();
    let (history, fold, attempts, max) = store
        .db
        .call_blocking(|c| {
            Ok((
                folds::history(c, &job.id, FoldIndex(1))?,
                folds::folds(c, &job.id)?.remove(1),
                folds::attempts(c, &job.id)?,
                folds::max_attempt_id(c)?,
            ))
        })
        .unwrap();
    assert_eq!(
        history.iter().map(|e| e.epoch).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(fold.state, FoldState::Done);
    assert_eq!(fold.attempts, 2);
    assert_eq!(fold.charged_attempts, 1);
    assert_eq!(fold.best_epoch, Some(3));
    // A done fold is never resumed: its latest checkpoint is let go.
    assert_eq!(fold.latest_checkpoint, None);
    assert_eq!(released, Some(BlobHash::of(b"e2")));
    assert_eq!(
        attempts.iter().map(|a| a.state).collect::<Vec<_>>(),
        [AttemptState::Lost, AttemptState::Succeeded]
    );
    assert_eq!(attempts[0].reason, "gone");
    assert_eq!(max, AttemptId(8));
}

#[test]
fn a_data_directory_opens_once_until_every_clone_of_its_store_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let clone = store.clone();
    // An upload in progress, which a second open would otherwise clear away.
    let unfinished = dir.path().join("blobs/tmp/in-progress");
    std::fs::write(&unfinished, b"partial").unwrap();

    let err = Store::open(dir.path()).unwrap_err();
    assert!(
        matches!(&err, CoordinatorError::DataDirLocked { dir: d, .. } if d == dir.path()),
        "{err}"
    );
    assert!(
        err.to_string().contains(&format!(
            "another coordinator holds the data directory {}",
            dir.path().display()
        )),
        "{err}"
    );
    assert!(
        unfinished.exists(),
        "the refused open touched the directory"
    );

    drop(store);
    assert!(Store::open(dir.path()).is_err(), "a clone still holds it");
    drop(clone);
    Store::open(dir.path()).unwrap();
}

#[test]
fn final_states_never_move_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let job = record();
    let attempt = |id: u64, fold: u32| running_attempt(&job.id, id, fold, 0);
    store
        .db
        .call_blocking(|c| {
            jobs::insert_job(c, &job)?;
            folds::start_attempt(c, &attempt(1, 0), true)?;
            jobs::set_job_state(c, &job.id, JobState::Cancelled, "cancelled by request")?;
            folds::close_open_folds(c, &job.id, FoldState::Cancelled)
        })
        .unwrap();

    // Every way back out of a final state is refused, naming what and why.
    let refused = |what: &str, result: crate::error::Result<()>| {
        let err = result.unwrap_err();
        assert!(
            matches!(err, CoordinatorError::AlreadyFinal { .. }),
            "{what}: {err}"
        );
        err.to_string()
    };
    let message = refused(
        "job to running",
        store
            .db
            .call_blocking(|c| jobs::set_job_state(c, &job.id, JobState::Running, "")),
    );
    assert_eq!(
        message,
        format!(
            "job {} is already cancelled, a final state; it was not moved to running",
            job.id
        )
    );
    refused(
        "job to succeeded",
        store
            .db
            .call_blocking(|c| jobs::set_job_state(c, &job.id, JobState::Succeeded, "")),
    );
    let message = refused(
        "fold to queued",
        store
            .db
            .call_blocking(|c| folds::set_fold_state(c, &job.id, FoldIndex(1), FoldState::Queued)),
    );
    assert!(message.starts_with("fold 1 of job"), "{message}");
    refused(
        "a new attempt",
        store
            .db
            .call_blocking(|c| folds::start_attempt(c, &attempt(2, 1), false)),
    );
    refused(
        "fold done",
        store.db.call_blocking(|c| {
            folds::finish_fold(
                c,
                &job.id,
                FoldIndex(0),
                AttemptId(1),
                &FoldSummary {
                    best_epoch: 1,
                    best_val_loss: 0.5,
                    epochs_run: 1,
                    early_stopped: false,
                },
            )
            .map(drop)
        }),
    );

    // Nothing of the refused writes is left behind.
    let (summary, folds, attempts, unfinished) = store
        .db
        .call_blocking(|c| {
            Ok((
                jobs::job_summary(c, &job.id)?,
                folds::folds(c, &job.id)?,
                folds::attempts(c, &job.id)?,
                jobs::unfinished_jobs(c)?,
            ))
        })
        .unwrap();
    assert_eq!(summary.state, JobState::Cancelled);
    assert_eq!(summary.message, "cancelled by request");
    assert!(folds.iter().all(|f| f.state == FoldState::Cancelled));
    assert_eq!(attempts.len(), 1, "the refused attempt was recorded");
    assert!(unfinished.is_empty(), "a cancelled job would be restarted");
}

#[test]
fn busy_and_restart_endings_leave_the_retry_budget_alone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let job = record();
    let attempt = |id: u64| running_attempt(&job.id, id, 0, 0);
    let fold0 = store
        .db
        .call_blocking(|c| {
            jobs::insert_job(c, &job)?;
            folds::start_attempt(c, &attempt(1), true)?;
            folds::end_attempt(
                c,
                AttemptId(1),
                AttemptState::Failed,
                "busy: slot 0 is busy",
                Charge::Free,
            )?;
            folds::start_attempt(c, &attempt(2), false)?;
            folds::abandon_running_attempts(c, "coordinator restarted")?;
            folds::start_attempt(c, &attempt(3), false)?;
            folds::end_attempt(
                c,
                AttemptId(3),
                AttemptState::Failed,
                "device: out of memory",
                Charge::Counted,
            )?;
            // A second end of the same attempt changes nothing.
            folds::end_attempt(c, AttemptId(3), AttemptState::Lost, "again", Charge::Free)?;
            Ok(folds::folds(c, &job.id)?.remove(0))
        })
        .unwrap();
    assert_eq!((fold0.attempts, fold0.charged_attempts), (3, 1));
}

/// Attempt `id` of `fold`, just dispatched to worker w, resuming after `resumed`.
fn running_attempt(job: &JobId, id: u64, fold: u32, resumed: u32) -> AttemptRecord {
    AttemptRecord {
        id: AttemptId(id),
        job: job.clone(),
        fold: FoldIndex(fold),
        worker: WorkerId::new("w"),
        slot: 0,
        state: AttemptState::Running,
        reason: String::new(),
        started_ms: 5,
        ended_ms: None,
        resumed_from_epoch: resumed,
    }
}

#[test]
fn a_superseded_checkpoint_is_released_unless_something_still_refers_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let job = record();
    let (a, b, shared) = (
        BlobHash::of(b"epoch 1"),
        BlobHash::of(b"epoch 2"),
        BlobHash::of(b"shared"),
    );
    let id = job.id.clone();
    let set = |fold: u32, kind: CheckpointKind, blob: BlobHash, epoch: u32| {
        store
            .db
            .call_blocking(|c| folds::set_checkpoint(c, &id, FoldIndex(fold), kind, blob, epoch))
    };
    store
        .db
        .call_blocking(|c| jobs::insert_job(c, &job))
        .unwrap();
    assert_eq!(set(0, CheckpointKind::Latest, a, 1).unwrap(), None);
    assert_eq!(set(0, CheckpointKind::Latest, b, 2).unwrap(), Some(a));
    // The same checkpoint stored again supersedes nothing.
    assert_eq!(set(0, CheckpointKind::Latest, b, 2).unwrap(), None);
    // A blob another fold (or the best slot) still holds stays.
    assert_eq!(set(1, CheckpointKind::Latest, shared, 1).unwrap(), None);
    assert_eq!(set(0, CheckpointKind::Best, shared, 1).unwrap(), None);
    assert_eq!(set(1, CheckpointKind::Latest, a, 2).unwrap(), None);
    assert_eq!(set(0, CheckpointKind::Best, b, 2).unwrap(), Some(shared));
    // An image's hash is a reference too.
    let image = job.train[0].hash;
    assert_eq!(set(1, CheckpointKind::Best, image, 1).unwrap(), None);
    assert_eq!(set(1, CheckpointKind::Best, a, 3).unwrap(), None);
}
