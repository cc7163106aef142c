//! Scheduler behaviour against virtual workers: dispatch, FIFO order, retries with
//! resume, stale attempts, failures and the results they leave behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use foldtrain_proto::task::FoldFailure;
use foldtrain_proto::{
    AttemptId, BlobHash, FailureCause, FoldIndex, ImageRef, JobConfig, JobId, WorkerId,
};
use tempfile::TempDir;

use super::*;
use crate::error::CoordinatorError;
use crate::store::{self, AttemptState, JobState, Store};

pub(super) struct Harness {
    pub _dir: TempDir,
    pub scheduler: Scheduler,
    pub launcher: VirtualLauncher,
}

pub(super) async fn harness(launcher: VirtualLauncher, lease: Duration) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let scheduler = Scheduler::new(
        store,
        Arc::new(launcher.clone()),
        SchedulerOptions { lease },
    )
    .await
    .unwrap();
    Harness {
        _dir: dir,
        scheduler,
        launcher,
    }
}

/// A job of `train` rows over three classes, its images uploaded to the store.
pub(super) fn spec(h: &Harness, prefix: &str, train: usize, folds: u32, epochs: u32) -> JobSpec {
    let mut config = JobConfig::default();
    config.split.folds = folds;
    config.train.epochs = epochs;
    let image = |name: String, label: Option<u32>| {
        let bytes = format!("pixels of {name}").into_bytes();
        let hash = h.scheduler.store().blobs.put(&bytes).unwrap();
        assert_eq!(hash, BlobHash::of(&bytes));
        ImageRef {
            hash,
            name,
            label,
            group: String::new(),
            size: bytes.len() as u64,
        }
    };
    JobSpec {
        name: prefix.into(),
        config,
        class_names: vec!["ampulla".into(), "blood".into(), "normal".into()],
        train: (0..train)
            .map(|i| image(format!("{prefix}-{i}.jpg"), Some((i % 3) as u32)))
            .collect(),
        test: (0..5)
            .map(|i| image(format!("{prefix}-test-{i}.jpg"), None))
            .collect(),
        client: Default::default(),
    }
}

/// The call token virtual worker `id` registers with.
fn call_token(id: &str) -> CallToken {
    CallToken::new(format!("token-of-{id}"))
}

/// Virtual worker `id` with `slots` GPUs.
pub(super) fn registration(id: &str, slots: i32) -> Registration {
    Registration {
        id: WorkerId::new(id),
        address: format!("virtual://{id}"),
        call_token: call_token(id),
        hostname: id.into(),
        slots: (0..slots).map(|i| (i, format!("gpu{i}"))).collect(),
    }
}

pub(super) async fn register(h: &Harness, id: &str, slots: i32) {
    h.scheduler
        .register_worker(registration(id, slots))
        .await
        .unwrap();
}

pub(super) async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(super) async fn wait_job(h: &Harness, job: &JobId) -> JobState {
    tokio::time::timeout(Duration::from_secs(20), h.scheduler.wait_job(job))
        .await
        .expect("job did not finish")
        .unwrap()
}

pub(super) async fn attempts(h: &Harness, job: &JobId) -> Vec<store::AttemptRecord> {
    let id = job.clone();
    h.scheduler
        .store()
        .db
        .call(move |c| store::folds::attempts(c, &id))
        .await
        .unwrap()
}

pub(super) async fn job_message(h: &Harness, job: &JobId) -> String {
    let id = job.clone();
    h.scheduler
        .store()
        .db
        .call(move |c| store::jobs::job_summary(c, &id))
        .await
        .unwrap()
        .message
}

pub(super) fn retryable(cause: FailureCause) -> FoldFailure {
    assert!(cause.is_retryable());
    FoldFailure::new(cause, "disk hiccup")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_fold_per_free_slot() {
    let h = harness(
        VirtualLauncher::new(|_| VirtualBehaviour::WaitForRelease),
        Duration::from_secs(60),
    )
    .await;
    register(&h, "w1", 2).await;
    let job = h.scheduler.submit(spec(&h, "a", 30, 5, 2)).await.unwrap();
    wait_for("two launches", || h.launcher.launches().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let launches = h.launcher.launches();
    assert_eq!(
        launches.len(),
        2,
        "more folds than free slots were dispatched"
    );
    // The two attempts start concurrently, so only the set of slots is fixed.
    let mut slots: Vec<usize> = launches.iter().map(|l| l.target.slot).collect();
    slots.sort();
    assert_eq!(slots, [0, 1]);
    h.launcher.release();
    assert_eq!(wait_job(&h, &job).await, JobState::Succeeded);
    let launches = h.launcher.launches();
    assert_eq!(launches.len(), 5);
    let mut folds: Vec<u32> = launches.iter().map(|l| l.fold.0).collect();
    folds.sort();
    assert_eq!(folds, [0, 1, 2, 3, 4]);
    let mut ids: Vec<AttemptId> = launches.iter().map(|l| l.attempt).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "every dispatch needs its own attempt id");
    let stored = attempts(&h, &job).await;
    assert_eq!(stored.len(), 5);
    assert!(stored.iter().all(|a| a.state == AttemptState::Succeeded));
    let dir = h.scheduler.store().job_dir(&job);
    for file in [
        "predictions.csv",
        "probabilities.csv",
        "oof.csv",
        "metrics.json",
        "config.toml",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    for k in 0..5 {
        for file in ["history.csv", "probabilities.csv", "best.safetensors"] {
            assert!(
                dir.join(format!("folds/{k}/{file}")).is_file(),
                "folds/{k}/{file} missing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_served_first_in_first_out() {
    let h = harness(VirtualLauncher::default(), Duration::from_secs(60)).await;
    let first = h
        .scheduler
        .submit(spec(&h, "first", 12, 3, 1))
        .await
        .unwrap();
    let second = h
        .scheduler
        .submit(spec(&h, "second", 12, 3, 1))
        .await
        .unwrap();
    register(&h, "w1", 1).await;
    assert_eq!(wait_job(&h, &first).await, JobState::Succeeded);
    assert_eq!(wait_job(&h, &second).await, JobState::Succeeded);
    let order: Vec<(JobId, u32)> = h
        .launcher
        .launches()
        .into_iter()
        .map(|l| (l.job, l.fold.0))
        .collect();
    let expected: Vec<(JobId, u32)> = [&first, &second]
        .into_iter()
        .flat_map(|j| (0..3).map(move |k| (j.clone(), k)))
        .collect();
    assert_eq!(order, expected);
    // One slot: dispatches happen one after another, each with a larger attempt id.
    let ids: Vec<AttemptId> = h.launcher.launches().iter().map(|l| l.attempt).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "attempt ids not monotonic: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_failure_resumes_from_the_latest_checkpoint() {
    let launcher = VirtualLauncher::new(|l| match (l.fold.0, l.nth) {
        (1, 1) => VirtualBehaviour::FailAfter {
            after_epoch: 2,
            failure: retryable(FailureCause::Io),
        },
        _ => VirtualBehaviour::Succeed,
    });
    let h = harness(launcher, Duration::from_secs(60)).await;
    register(&h, "w1", 2).await;
    let job = h.scheduler.submit(spec(&h, "r", 24, 3, 4)).await.unwrap();
    assert_eq!(wait_job(&h, &job).await, JobState::Succeeded);
    let fold1: Vec<VirtualLaunch> = h
        .launcher
        .launches()
        .into_iter()
        .filter(|l| l.fold.0 == 1)
        .collect();
    assert_eq!(fold1.len(), 2);
    assert!(fold1[1].attempt > fold1[0].attempt);
    assert_eq!(fold1[0].resumed_from, None);
    assert_eq!(
        fold1[1].resumed_from,
        Some(2),
        "the retry must resume from epoch 2's checkpoint"
    );
    let stored: Vec<_> = attempts(&h, &job)
        .await
        .into_iter()
        .filter(|a| a.fold.0 == 1)
        .collect();
    assert_eq!(stored[0].state, AttemptState::Failed);
    assert!(
        stored[0].reason.contains("io: disk hiccup"),
        "{}",
        stored[0].reason
    );
    assert_eq!(
        (stored[1].state, stored[1].resumed_from_epoch),
        (AttemptState::Succeeded, 2)
    );
    // The history has each epoch once, whichever attempt ran it.
    let history = std::fs::read_to_string(
        h.scheduler
            .store()
            .job_dir(&job)
            .join("folds/1/history.csv"),
    )
    .unwrap();
    let epochs: Vec<&str> = history
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(epochs, ["1", "2", "3", "4"]);

    // The time breakdown counts the work of both of fold 1's attempts: 12 epochs in all,
    // each reported by the virtual worker as 8 ms training, 2 ms validation and 1 ms of
    // checkpoint encoding.
    let metrics: crate::aggregate::MetricsJson = serde_json::from_slice(
        &std::fs::read(h.scheduler.store().job_dir(&job).join("metrics.json")).unwrap(),
    )
    .unwrap();
    let timing = metrics.timing.expect("metrics.json has a time breakdown");
    let f = timing.fold_seconds;
    let close = |got: f64, want: f64| (got - want).abs() < 1e-9;
    assert!(close(f.training, 12.0 * 0.008), "{f:?}");
    assert!(close(f.validation, 12.0 * 0.002), "{f:?}");
    assert!(close(f.checkpoint_encoding, 12.0 * 0.001), "{f:?}");
    assert!(f.checkpoint_storage > 0.0, "{f:?}");
    assert!((1..=2).contains(&timing.parallel_folds), "{timing:?}");
    assert!(timing.wall_seconds >= 0.0 && timing.aggregation_seconds > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stream_is_retried() {
    let launcher = VirtualLauncher::new(|l| match (l.fold.0, l.nth) {
        (0, 1) => VirtualBehaviour::BreakAfter { after_epoch: 1 },
        _ => VirtualBehaviour::Succeed,
    });
    let h = harness(launcher, Duration::from_secs(60)).await;
    register(&h, "w1", 1).await;
    // The worker is still alive and heartbeats, which lifts the suspicion a broken
    // stream casts on it.
    let scheduler = h.scheduler.clone();
    let beats = tokio::spawn(async move {
        loop {
            let _ = scheduler
                .heartbeat(&WorkerId::new("w1"), &call_token("w1"), false)
                .await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let job = h.scheduler.submit(spec(&h, "b", 12, 2, 3)).await.unwrap();
    assert_eq!(wait_job(&h, &job).await, JobState::Succeeded);
    beats.abort();
    let stored = attempts(&h, &job).await;
    let lost = stored
        .iter()
        .find(|a| a.state == AttemptState::Lost)
        .expect("a lost attempt");
    assert!(lost.reason.contains("connection reset"), "{}", lost.reason);
    assert_eq!(stored.iter().filter(|a| a.fold.0 == 0).count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_whose_stream_broke_gets_no_retry() {
    let launcher = VirtualLauncher::new(|l| match (l.fold.0, l.nth) {
        (0, 1) => VirtualBehaviour::BreakAfter { after_epoch: 1 },
        _ => VirtualBehaviour::Succeed,
    });
    let h = harness(launcher, Duration::from_secs(60)).await;
    register(&h, "w1", 1).await;
    register(&h, "w2", 1).await;
    let job = h.scheduler.submit(spec(&h, "s", 12, 2, 3)).await.unwrap();
    assert_eq!(wait_job(&h, &job).await, JobState::Succeeded);
    let stored = attempts(&h, &job).await;
    let fold0: Vec<&str> = stored
        .iter()
        .filter(|a| a.fold.0 == 0)
        .map(|a| a.worker.as_str())
        .collect();
    // w1 never heartbeats after its stream broke: the retry waits for w2 instead.
    assert_eq!(fold0, ["w1", "w2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_retryable_failure_fails_the_job_at_once() {
    let launcher = VirtualLauncher::new(|l| match l.fold.0 {
        2 => VirtualBehaviour::FailAfter {
            after_epoch: 1,
            failure: FoldFailure::new(FailureCause::NanLoss, "loss is NaN at epoch 1"),
        },
        _ => VirtualBehaviour::Succeed,
    });
    let h = harness(launcher, Duration::from_secs(60)).await;
    register(&h, "gpu-box-7", 1).await;
    let job = h.scheduler.submit(spec(&h, "n", 18, 3, 2)).await.unwrap();
    assert_eq!(wait_job(&h, &job).await, JobState::Failed);
    let message = job_message(&h, &job).await;
    assert_eq!(
        message,
        "fold 2 failed on worker gpu-box-7: nan_loss: loss is NaN at epoch 1"
    );
    assert_eq!(
        h.launcher
            .launches()
            .iter()
            .filter(|l| l.fold.0 == 2)
            .count(),
        1
    );
    assert!(
        !h.scheduler
            .store()
            .job_dir(&job)
            .join("predictions.csv")
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_fail_the_job() {
    // Each attempt fails after the first epoch it runs (retries resume past the last).
    let launcher = VirtualLauncher::new(|l| match l.fold.0 {
        0 => VirtualBehaviour::FailAfter {
            after_epoch: l.resumed_from.unwrap_or(0) + 1,
            failure: retryable(FailureCause::Device),
        },
        _ => VirtualBehaviour::Succeed,
    });
    let h = harness(launcher, Duration::from_secs(60)).await;
    register(&h, "w1", 1).await;
    let mut s = spec(&h, "x", 12, 2, 3);
    s.config.train.max_attempts = 2;
    let job = h.scheduler.submit(s).await.unwrap();
    assert_eq!(wait_job(&h, &job).await, JobState::Failed);
    assert_eq!(
        h.launcher
            .launches()
            .iter()
            .filter(|l| l.fold.0 == 0)
            .count(),
        2
    );
    let message = job_message(&h, &job).await;
    assert!(
        message.starts_with("fold 0 failed 2 times; last on worker w1: device: disk hiccup"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_workers_attempt_goes_stale_and_the_fold_moves_on() {
    let launcher = VirtualLauncher::new(|l| match (l.fold.0, l.nth) {
        (0, _) => VirtualBehaviour::WaitForRelease,
        _ => VirtualBehaviour::Succeed,
    });
    let h = harness(launcher, Duration::from_millis(200)).await;
    register(&h, "w1", 1).await;
    let job = h.scheduler.submit(spec(&h, "s", 12, 2, 2)).await.unwrap();
    wait_for("fold 0 on w1", || !h.launcher.launches().is_empty()).await;
    let first = h.launcher.launches()[0].clone();
    assert_eq!((first.fold.0, first.target.worker.as_str()), (0, "w1"));
    register(&h, "w2", 1).await;
    // w1 goes silent past its lease while w2 renews its own; then leases are checked
    // once, by hand, so the test does not depend on timer precision.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        h.scheduler
            .heartbeat(&WorkerId::new("w2"), &call_token("w2"), false)
            .await
            .unwrap()
    );
    h.scheduler.expire_leases();
    assert!(
        !h.scheduler
            .heartbeat(&WorkerId::new("w1"), &call_token("w1"), false)
            .await
            .unwrap()
    );
    wait_for("fold 0 re-dispatched to w2", || {
        h.launcher
            .launches()
            .iter()
            .any(|l| l.fold.0 == 0 && l.target.worker.as_str() == "w2")
    })
    .await;
    let second = h
        .launcher
        .launches()
        .into_iter()
        .rfind(|l| l.fold.0 == 0)
        .unwrap();
    assert!(second.attempt > first.attempt);
    let err = h
        .scheduler
        .check_current(&job, FoldIndex(0), first.attempt)
        .unwrap_err();
    assert!(
        matches!(err, CoordinatorError::StaleAttempt { .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("current: {}", second.attempt)),
        "{err}"
    );
    h.scheduler
        .check_current(&job, FoldIndex(0), second.attempt)
        .unwrap();
    h.launcher.release();
    assert_eq!(wait_job(&h, &job).await, JobState::Succeeded);
    let stored = attempts(&h, &job).await;
    let old = stored.iter().find(|a| a.id == first.attempt).unwrap();
    assert_eq!(old.state, AttemptState::Lost);
    assert!(
        old.reason.contains("worker w1 missed its heartbeat lease"),
        "{}",
        old.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_running_and_queued_folds() {
    let h = harness(
        VirtualLauncher::new(|_| VirtualBehaviour::WaitForRelease),
        Duration::from_secs(60),
    )
    .await;
    register(&h, "w1", 1).await;
    let job = h.scheduler.submit(spec(&h, "c", 12, 3, 2)).await.unwrap();
    wait_for("a launch", || h.launcher.launches().len() == 1).await;
    h.scheduler.cancel(&job).await.unwrap();
    assert_eq!(wait_job(&h, &job).await, JobState::Cancelled);
    h.launcher.release();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        h.launcher.launches().len(),
        1,
        "queued folds of a cancelled job ran"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !attempts(&h, &job)
        .await
        .iter()
        .all(|a| a.state == AttemptState::Cancelled)
    {
        assert!(
            Instant::now() < deadline,
            "the running attempt was not closed as cancelled"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_jobs_resume_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let launcher = VirtualLauncher::new(|_| VirtualBehaviour::WaitForRelease);
    let job = {
        let store = Store::open(dir.path()).unwrap();
        let scheduler = Scheduler::new(
            store,
            Arc::new(launcher.clone()),
            SchedulerOptions::default(),
        )
        .await
        .unwrap();
        let h = Harness {
            _dir: tempfile::tempdir().unwrap(),
            scheduler,
            launcher: launcher.clone(),
        };
        let job = h.scheduler.submit(spec(&h, "p", 12, 2, 2)).await.unwrap();
        h.scheduler.shutdown();
        job
    };
    let launcher = VirtualLauncher::default();
    let store = Store::open(dir.path()).unwrap();
    let scheduler = Scheduler::new(
        store,
        Arc::new(launcher.clone()),
        SchedulerOptions::default(),
    )
    .await
    .unwrap();
    scheduler
        .register_worker(Registration {
            slots: vec![(-1, "cpu".into())],
            ..registration("w", 0)
        })
        .await
        .unwrap();
    let state = tokio::time::timeout(Duration::from_secs(20), scheduler.wait_job(&job))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state, JobState::Succeeded);
    assert_eq!(launcher.launches().len(), 2);
    assert_eq!(launcher.launches()[0].target.device_index, -1);
}

#[tokio::test]
async fn jobs_with_missing_images_are_refused() {
    let h = harness(VirtualLauncher::default(), Duration::from_secs(60)).await;
    let mut s = spec(&h, "m", 12, 2, 1);
    s.test.push(ImageRef {
        hash: BlobHash::of(b"never uploaded"),
        name: "ghost.jpg".into(),
        label: None,
        group: String::new(),
        size: 3,
    });
    let err = h.scheduler.submit(s).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.to_string()
            .contains("1 images not uploaded yet (first: ghost.jpg"),
        "{err}"
    );
}
