//! Picking up after a restart: attempts that were running are marked lost, and every
//! unfinished job is queued again, each fold resuming from its latest checkpoint.

use std::sync::Arc;

use foldtrain_proto::{FoldIndex, JobId};
use tracing::{info, info_span};

use super::state::{FoldLive, FoldRuntime, JobRuntime, State};
use crate::error::Result;
use crate::store::{self, FoldRecord, FoldState, JobRecord, Store};

/// Rebuilds the scheduler's state from the store. Returns it with the jobs whose folds
/// are all done, which only need finalizing.
pub(super) async fn recover(store: &Store) -> Result<(State, Vec<JobId>)> {
    let (next, jobs) = store
        .db
        .call(|c| {
            store::folds::abandon_running_attempts(c, "coordinator restarted")?;
            let next = store::folds::max_attempt_id(c)?.0 + 1;
            let mut jobs = Vec::new();
            for id in store::jobs::unfinished_jobs(c)? {
                if store::jobs::fail_if_pretrained_path(c, &id)? {
                    continue;
                }
                let record = store::jobs::load_job(c, &id)?;
                let folds = store::folds::folds(c, &id)?;
                for f in folds.iter().filter(|f| !f.state.is_terminal()) {
                    store::folds::set_fold_state(c, &id, f.fold, FoldState::Queued)?;
                }
                jobs.push((record, folds));
            }
            Ok((next, jobs))
        })
        .await?;
    let mut state = State {
        next_attempt: next,
        ..State::default()
    };
    let mut finished = Vec::new();
    for (record, folds) in jobs {
        let id = record.id.clone();
        info!(job = %id, "resuming unfinished job");
        let runtime = resumed_job(record, &folds);
        for (k, f) in runtime.folds.iter().enumerate() {
            if f.state == FoldState::Queued {
                state.queue.push_back((id.clone(), FoldIndex(k as u32)));
            }
        }
        if runtime.folds.iter().all(|f| f.state == FoldState::Done) {
            finished.push(id.clone());
        }
        state.jobs.insert(id, runtime);
    }
    Ok((state, finished))
}

/// A stored job as live state: done folds stay done, every other fold is queued.
fn resumed_job(record: JobRecord, folds: &[FoldRecord]) -> JobRuntime {
    JobRuntime {
        span: info_span!(parent: None, "job", job = %record.id),
        state: record.state,
        folds: folds
            .iter()
            .map(|f| FoldRuntime {
                state: if f.state == FoldState::Done {
                    FoldState::Done
                } else {
                    FoldState::Queued
                },
                attempts: f.attempts,
                charged: f.charged_attempts,
                current: None,
                latest: f.latest_checkpoint,
                live: FoldLive::default(),
            })
            .collect(),
        record: Arc::new(record),
    }
}
