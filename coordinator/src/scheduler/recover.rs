//! Picking up after a restart: attempts that were running are marked lost, and every
//! unfinished job is queued again, each fold resuming from its latest checkpoint.

use std::sync::Arc;

use foldtrain_proto::FoldIndex;
use tracing::{info, info_span};

use super::core::Scheduler;
use super::state::{FoldLive, FoldRuntime, JobRuntime};
use crate::error::Result;
use crate::store::{self, FoldState};

impl Scheduler {
    pub(super) async fn recover(&self) -> Result<()> {
        let db = &self.inner.store.db;
        let (next, jobs) = db
            .call(|c| {
                store::folds::abandon_running_attempts(c, "coordinator restarted")?;
                let next = store::folds::max_attempt_id(c)?.0 + 1;
                let mut jobs = Vec::new();
                for id in store::jobs::unfinished_jobs(c)? {
                    let record = store::jobs::load_job(c, &id)?;
                    let folds = store::folds::folds(c, &id)?;
                    for f in folds.iter().filter(|f| f.state != FoldState::Done) {
                        store::folds::set_fold_state(c, &id, f.fold, FoldState::Queued)?;
                    }
                    jobs.push((record, folds));
                }
                Ok((next, jobs))
            })
            .await?;
        let mut finished = Vec::new();
        {
            let mut st = self.lock();
            st.next_attempt = next;
            for (record, folds) in jobs {
                let id = record.id.clone();
                info!(job = %id, "resuming unfinished job");
                let runtime = JobRuntime {
                    span: info_span!(parent: None, "job", job = %id),
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
                            current: None,
                            latest: f.latest_checkpoint,
                            live: FoldLive::default(),
                        })
                        .collect(),
                    record: Arc::new(record),
                };
                for (k, f) in runtime.folds.iter().enumerate() {
                    if f.state == FoldState::Queued {
                        st.queue.push_back((id.clone(), FoldIndex(k as u32)));
                    }
                }
                if runtime.folds.iter().all(|f| f.state == FoldState::Done) {
                    finished.push(id.clone());
                }
                st.jobs.insert(id, runtime);
            }
        }
        for id in finished {
            self.spawn_finalize(id);
        }
        Ok(())
    }
}
