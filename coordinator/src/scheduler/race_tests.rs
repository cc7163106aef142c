//! The rules that hold whatever the timing: a final state never moves again (cancel
//! racing dispatch and aggregation, a restart after a cancel), and only failed or lost
//! attempts use up a fold's retry budget.

use std::sync::Arc;
use std::time::Duration;

use foldtrain_proto::{FailureCause, FoldIndex, JobId};

use super::tests::{
    Harness, attempts, harness, job_message, register, registration, retryable, spec, wait_for,
    wait_job,
};
use super::*;
use crate::store::{self, AttemptState, FoldState, JobState, Store};

/// The job's stored state, its folds' and whether a restart would pick it up again.
async fn stored(h: &Harness, job: &JobId) -> (JobState, Vec<FoldState>, bool) {
    let id = job.clone();
    h.scheduler
        .store()
        .db
        .call(move |c| {
            Ok((
                store::jobs::job_summary(c, &id)?.state,
                store::folds::folds(c, &id)?
                    .iter()
                    .map(|f| f.state)
                    .collect(),
                store::jobs::unfinished_jobs(c)?.contains(&id),
            ))
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_dispatch_ends_cancelled_and_stays_so() {
    // Each round cancels at once after submitting, while the job's first attempts are
    // being recorded, at a slightly different point of the dispatch.
    for round in 0..20u64 {
        let h = harness(
            VirtualLauncher::new(|_| VirtualBehaviour::WaitForRelease),
            Duration::from_secs(60),
        )
        .await;
        register(&h, "w1", 3).await;
        let job = h.scheduler.submit(spec(&h, "d", 12, 3, 2)).await.unwrap();
        for _ in 0..round % 5 {
            tokio::task::yield_now().await;
        }
        h.scheduler.cancel(&job).await.unwrap();
        assert_eq!(wait_job(&h, &job).await, JobState::Cancelled);
        h.launcher.release();
        // Every attempt the race let through ends as cancelled, and none of them moves
        // the job or a fold back.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let open: Vec<_> = attempts(&h, &job)
                .await
                .into_iter()
                .filter(|a| a.state != AttemptState::Cancelled)
                .collect();
            if open.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: {open:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (state, folds, resumable) = stored(&h, &job).await;
        assert_eq!(state, JobState::Cancelled, "round {round}");
        assert!(
            folds.iter().all(|f| *f == FoldState::Cancelled),
            "round {round}: {folds:?}"
        );
        assert!(!resumable, "round {round}: a restart would run it again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_racing_aggregation_holds_and_what_it_returned_is_final() {
    let mut cancelled = 0;
    for round in 0..10 {
        let h = harness(VirtualLauncher::default(), Duration::from_secs(60)).await;
        register(&h, "w1", 2).await;
        let job = h.scheduler.submit(spec(&h, "a", 40, 2, 1)).await.unwrap();
        // The moment the last fold is done, aggregation starts: cancel then.
        wait_for("every fold done", || {
            h.scheduler
                .live_folds(&job)
                .is_none_or(|folds| folds.iter().all(|(s, _)| *s == FoldState::Done))
        })
        .await;
        h.scheduler.cancel(&job).await.unwrap();
        let answered = h.scheduler.job_state(&job).await.unwrap();
        assert!(answered.is_terminal(), "round {round}: {answered}");
        // Let aggregation run to its end, then check that nothing moved the job.
        wait_for("aggregation to end", || {
            h.scheduler.live_job_state(&job).is_none()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (state, _, resumable) = stored(&h, &job).await;
        assert_eq!(
            state, answered,
            "round {round}: the job changed after the cancel"
        );
        assert!(!resumable);
        if state == JobState::Cancelled {
            cancelled += 1;
            let id = job.clone();
            let summary = h
                .scheduler
                .store()
                .db
                .call(move |c| store::jobs::job_summary(c, &id))
                .await
                .unwrap();
            assert_eq!(
                summary.summary_json, "",
                "a cancelled job got a success summary"
            );
        }
    }
    // The race is real: most cancels land while the results are being aggregated.
    assert!(cancelled > 0, "no cancel landed during aggregation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_refusals_do_not_use_up_the_retry_budget() {
    // Three refusals by a busy slot, one real failure, then success: with a budget of
    // two attempts the fold still finishes.
    let launcher = VirtualLauncher::new(|l| {
        let after_epoch = l.resumed_from.unwrap_or(0) + 1;
        match (l.fold.0, l.nth) {
            (0, 1..=3) => VirtualBehaviour::FailAfter {
                after_epoch,
                failure: retryable(FailureCause::Busy),
            },
            (0, 4) => VirtualBehaviour::FailAfter {
                after_epoch,
                failure: retryable(FailureCause::Device),
            },
            _ => VirtualBehaviour::Succeed,
        }
    });
    let h = harness(launcher, Duration::from_secs(60)).await;
    register(&h, "w1", 1).await;
    let mut s = spec(&h, "b", 12, 2, 6);
    s.config.train.max_attempts = 2;
    let job = h.scheduler.submit(s).await.unwrap();
    let state = wait_job(&h, &job).await;
    assert_eq!(
        state,
        JobState::Succeeded,
        "{}",
        job_message(&h, &job).await
    );
    let fold0: Vec<_> = attempts(&h, &job)
        .await
        .into_iter()
        .filter(|a| a.fold == FoldIndex(0))
        .collect();
    assert_eq!(fold0.len(), 5);
    let id = job.clone();
    let charged = h
        .scheduler
        .store()
        .db
        .call(move |c| Ok(store::folds::folds(c, &id)?[0].charged_attempts))
        .await
        .unwrap();
    assert_eq!(charged, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_restarts_do_not_use_up_the_retry_budget() {
    let dir = tempfile::tempdir().unwrap();
    let open = || async {
        // The previous scheduler's last tasks may still be letting go of the store.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Store::open(dir.path()) {
                Ok(store) => return store,
                Err(e) => {
                    assert!(std::time::Instant::now() < deadline, "{e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    };
    let start = |store: Store, launcher: VirtualLauncher| async move {
        let scheduler = Scheduler::new(store, Arc::new(launcher), SchedulerOptions::default())
            .await
            .unwrap();
        scheduler
            .register_worker(registration("w", 1))
            .await
            .unwrap();
        scheduler
    };

    // Two coordinators in a row stop while fold 0 trains.
    let mut job = None;
    for _ in 0..2 {
        let launcher = VirtualLauncher::new(|_| VirtualBehaviour::WaitForRelease);
        let scheduler = start(open().await, launcher.clone()).await;
        if job.is_none() {
            let h = Harness {
                _dir: tempfile::tempdir().unwrap(),
                scheduler: scheduler.clone(),
                launcher: launcher.clone(),
            };
            let mut s = spec(&h, "r", 12, 1 + 1, 4);
            s.config.train.max_attempts = 2;
            job = Some(scheduler.submit(s).await.unwrap());
        }
        wait_for("a launch", || !launcher.launches().is_empty()).await;
        scheduler.shutdown();
    }
    let job = job.unwrap();

    // The third fails once on each fold, then succeeds: one charged failure of two.
    let launcher = VirtualLauncher::new(|l| match l.nth {
        1 => VirtualBehaviour::FailAfter {
            after_epoch: l.resumed_from.unwrap_or(0) + 1,
            failure: retryable(FailureCause::Io),
        },
        _ => VirtualBehaviour::Succeed,
    });
    let scheduler = start(open().await, launcher).await;
    let state = tokio::time::timeout(Duration::from_secs(20), scheduler.wait_job(&job))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(state, JobState::Succeeded);
    let id = job.clone();
    let (folds, ended) = scheduler
        .store()
        .db
        .call(move |c| {
            Ok((
                store::folds::folds(c, &id)?,
                store::folds::attempts(c, &id)?,
            ))
        })
        .await
        .unwrap();
    assert!(
        ended
            .iter()
            .filter(|a| a.state == AttemptState::Lost)
            .count()
            >= 2,
        "{ended:?}"
    );
    assert!(folds.iter().all(|f| f.charged_attempts == 1), "{folds:?}");
}
