//! What a job leaves on disk: superseded and finished folds' checkpoints go as soon as
//! nothing needs them, and deleting a job removes everything of it no other job shares.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use foldtrain_proto::{BlobHash, JobId};

use super::tests::{Harness, harness, register, spec, wait_job};
use super::*;
use crate::error::CoordinatorError;
use crate::store::{self, JobState, Store};

/// Every blob file in the store, by hash.
fn blob_files(h: &Harness) -> BTreeSet<BlobHash> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let root = h.scheduler.store().root().join("blobs");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .iter()
        .filter(|p| !p.starts_with(root.join("tmp")))
        .map(|p| {
            let hex: String = p
                .strip_prefix(&root)
                .unwrap()
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            hex.parse::<BlobHash>().unwrap()
        })
        .collect()
}

/// Every blob a stored job still refers to.
async fn referenced(h: &Harness) -> BTreeSet<BlobHash> {
    let files = blob_files(h);
    h.scheduler
        .store()
        .db
        .call(move |c| {
            let mut used = BTreeSet::new();
            for blob in files {
                if store::refs::in_use(c, &blob)? {
                    used.insert(blob);
                }
            }
            Ok(used)
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_blobs_a_job_refers_to_stay_and_deleting_it_frees_what_it_alone_used() {
    let h = harness(VirtualLauncher::default(), Duration::from_secs(60)).await;
    register(&h, "w1", 2).await;
    let a = spec(&h, "a", 12, 2, 4);
    let mut b = spec(&h, "b", 12, 2, 4);
    // Half of b's training images are a's too. The six it uploaded in their place are
    // no job's: nothing here removes them.
    let uploads: BTreeSet<BlobHash> = b.train[..6].iter().map(|i| i.hash).collect();
    b.train[..6].clone_from_slice(&a.train[..6]);
    let only_a: Vec<BlobHash> = a.train[6..].iter().map(|i| i.hash).collect();
    let job_a = h.scheduler.submit(a).await.unwrap();
    let job_b = h.scheduler.submit(b).await.unwrap();
    assert_eq!(wait_job(&h, &job_a).await, JobState::Succeeded);
    assert_eq!(wait_job(&h, &job_b).await, JobState::Succeeded);

    // Four latest checkpoints per fold were stored, and none of them is left: each was
    // superseded by the next, and the last went when its fold was done.
    let files = blob_files(&h);
    let used = referenced(&h).await;
    let left: BTreeSet<BlobHash> = files.difference(&used).copied().collect();
    assert_eq!(left, uploads, "unreferenced blobs were left");
    let id = job_a.clone();
    let folds = h
        .scheduler
        .store()
        .db
        .call(move |c| store::folds::folds(c, &id))
        .await
        .unwrap();
    assert!(folds.iter().all(|f| f.latest_checkpoint.is_none()));
    assert!(folds.iter().all(|f| f.best_checkpoint.is_some()));

    // A running job cannot be deleted; an unknown one is named.
    let err = h
        .scheduler
        .delete_job(&JobId::new("job-x"))
        .await
        .unwrap_err();
    assert!(matches!(err, CoordinatorError::UnknownJob(_)), "{err}");

    let deleted = h.scheduler.delete_job(&job_a).await.unwrap();
    assert!(deleted.blobs_removed >= only_a.len() as u64, "{deleted:?}");
    assert!(deleted.blobs_kept >= 6, "{deleted:?}");
    let after = blob_files(&h);
    assert!(only_a.iter().all(|blob| !after.contains(blob)));
    let used = referenced(&h).await;
    assert_eq!(
        after.difference(&used).copied().collect::<BTreeSet<_>>(),
        uploads
    );
    assert!(!h.scheduler.store().job_dir(&job_a).exists());
    assert!(h.scheduler.store().job_dir(&job_b).exists());
    let id = job_a.clone();
    let gone = h
        .scheduler
        .store()
        .db
        .call(move |c| store::jobs::job_summary(c, &id))
        .await
        .unwrap_err();
    assert!(matches!(gone, CoordinatorError::UnknownJob(_)), "{gone}");

    // b kept every blob it refers to: its results still read back whole.
    let id = job_b.clone();
    let b_blobs = h
        .scheduler
        .store()
        .db
        .call(move |c| {
            let record = store::jobs::load_job(c, &id)?;
            let folds = store::folds::folds(c, &id)?;
            Ok(record
                .train
                .iter()
                .chain(&record.test)
                .map(|i| i.hash)
                .chain(
                    folds
                        .iter()
                        .filter_map(|f| f.best_checkpoint.map(|c| c.blob)),
                )
                .chain(folds.iter().filter_map(|f| f.oof_blob))
                .chain(folds.iter().filter_map(|f| f.test_blob))
                .collect::<Vec<_>>())
        })
        .await
        .unwrap();
    for blob in b_blobs {
        h.scheduler.store().blobs.read(&blob).unwrap();
    }

    let deleted = h.scheduler.delete_job(&job_b).await.unwrap();
    assert_eq!(deleted.blobs_kept, 0);
    assert_eq!(blob_files(&h), uploads);
    assert!(deleted.bytes_freed > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_still_running_is_not_deleted() {
    let h = harness(
        VirtualLauncher::new(|_| VirtualBehaviour::WaitForRelease),
        Duration::from_secs(60),
    )
    .await;
    register(&h, "w1", 1).await;
    let job = h.scheduler.submit(spec(&h, "r", 12, 2, 2)).await.unwrap();
    let err = h.scheduler.delete_job(&job).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.to_string()
            .ends_with("delete needs a finished (succeeded, failed or cancelled) job"),
        "{err}"
    );
    h.scheduler.cancel(&job).await.unwrap();
    h.launcher.release();
    assert_eq!(wait_job(&h, &job).await, JobState::Cancelled);
    h.scheduler.delete_job(&job).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_pretrained_weights_stay_while_a_job_names_them() {
    let h = harness(VirtualLauncher::default(), Duration::from_secs(60)).await;
    register(&h, "w1", 2).await;
    let weights = b"features.conv0.weight of a pretrained densenet".to_vec();
    let pretrained = BlobHash::of(&weights);

    // A job naming weights that were never uploaded is refused, and says how to upload them.
    let mut missing = spec(&h, "m", 12, 2, 1);
    missing.config.model.pretrained = Some(pretrained);
    let err = h.scheduler.submit(missing).await.unwrap_err();
    assert!(
        matches!(err, CoordinatorError::MissingPretrained(blob) if blob == pretrained),
        "{err}"
    );
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.to_string().contains("--pretrained"), "{err}");

    assert_eq!(h.scheduler.store().blobs.put(&weights).unwrap(), pretrained);
    let mut a = spec(&h, "a", 12, 2, 2);
    a.config.model.pretrained = Some(pretrained);
    let mut b = spec(&h, "b", 12, 2, 2);
    b.config.model.pretrained = Some(pretrained);
    let job_a = h.scheduler.submit(a).await.unwrap();
    let job_b = h.scheduler.submit(b).await.unwrap();
    assert_eq!(wait_job(&h, &job_a).await, JobState::Succeeded);
    assert_eq!(wait_job(&h, &job_b).await, JobState::Succeeded);
    assert!(referenced(&h).await.contains(&pretrained));

    // Deleting b keeps the weights a still names.
    h.scheduler.delete_job(&job_b).await.unwrap();
    assert!(blob_files(&h).contains(&pretrained));
    assert!(referenced(&h).await.contains(&pretrained));
    assert_eq!(
        h.scheduler.store().blobs.read(&pretrained).unwrap(),
        weights
    );

    // Deleting a, the last job naming them, removes them.
    h.scheduler.delete_job(&job_a).await.unwrap();
    assert!(!blob_files(&h).contains(&pretrained));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_stored_with_a_pretrained_path_reads_but_is_not_resumed_without_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let job = {
        let h = harness(VirtualLauncher::default(), Duration::from_secs(60)).await;
        let job = h.scheduler.submit(spec(&h, "old", 12, 2, 2)).await.unwrap();
        // As an earlier version stored it: a path on the workers in model.pretrained.
        let id = job.clone();
        h.scheduler
            .store()
            .db
            .call(move |c| {
                c.execute(
                    "UPDATE jobs SET config_toml = replace(config_toml, '[model]', \
                     '[model]' || char(10) || 'pretrained = \"/models/d121.safetensors\"') \
                     WHERE id = ?1",
                    [id.as_str()],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        std::fs::rename(h.scheduler.store().root(), dir.path().join("data")).unwrap();
        job
    };
    // A restarted coordinator reads the job, fails it with the reason, and runs nothing.
    let store = Store::open(&dir.path().join("data")).unwrap();
    let launcher = VirtualLauncher::default();
    let scheduler = Scheduler::new(
        store,
        std::sync::Arc::new(launcher.clone()),
        SchedulerOptions::default(),
    )
    .await
    .unwrap();
    let id = job.clone();
    let (summary, record) = scheduler
        .store()
        .db
        .call(move |c| {
            Ok((
                store::jobs::job_summary(c, &id)?,
                store::jobs::load_job(c, &id)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(summary.state, JobState::Failed);
    assert!(
        summary
            .message
            .contains("model.pretrained = \"/models/d121.safetensors\"")
            && summary.message.contains("--pretrained FILE"),
        "{}",
        summary.message
    );
    assert_eq!(record.config.model.pretrained, None);
    assert!(launcher.launches().is_empty());
}
