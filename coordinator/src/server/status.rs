//! Job and worker status as the wire shows it: durable rows from the database, with the
//! live numbers of running folds laid over them.

use foldtrain_proto::{JobId, pb};

use crate::error::Result;
use crate::scheduler::{LiveWorker, Scheduler};
use crate::store::{self, AttemptRecord, FoldRecord, FoldState, JobSummary};

/// The full status of one job; `UnknownJob` (NOT_FOUND) when there is none.
pub async fn job_status(scheduler: &Scheduler, job: &JobId) -> Result<pb::JobStatus> {
    let id = job.clone();
    let (summary, folds, attempts, epochs) = scheduler
        .store()
        .db
        .call(move |c| {
            let summary = store::jobs::job_summary(c, &id)?;
            let folds = store::folds::folds(c, &id)?;
            let attempts = store::folds::attempts(c, &id)?;
            let epochs = store::jobs::load_epochs_setting(c, &id)?;
            Ok((summary, folds, attempts, epochs))
        })
        .await?;
    let live = scheduler.live_folds(job);
    let mut status = summary_status(&summary);
    // The scheduler's view is newer than the database's while a job runs. A final state
    // is shown only once it is stored, together with its message.
    if let Some(state) = scheduler.live_job_state(job)
        && !state.is_terminal()
    {
        status.set_state(state);
    }
    status.folds = folds
        .iter()
        .map(|f| {
            fold_status(
                f,
                &attempts,
                epochs,
                live.as_ref().and_then(|l| l.get(f.fold.0 as usize)),
            )
        })
        .collect();
    Ok(status)
}

/// The short status used in listings (no folds).
pub fn summary_status(s: &JobSummary) -> pb::JobStatus {
    pb::JobStatus {
        job_id: s.id.to_string(),
        name: s.name.clone(),
        state: s.state as i32,
        message: s.message.clone(),
        folds: Vec::new(),
        created_unix_ms: s.created_ms,
        finished_unix_ms: s.finished_ms.unwrap_or_default(),
        summary_json: s.summary_json.clone(),
    }
}

fn fold_status(
    f: &FoldRecord,
    attempts: &[AttemptRecord],
    epochs: u32,
    live: Option<&(FoldState, crate::scheduler::FoldLive)>,
) -> pb::FoldStatus {
    let attempts: Vec<pb::AttemptStatus> = attempts
        .iter()
        .filter(|a| a.fold == f.fold)
        .map(|a| pb::AttemptStatus {
            attempt: a.id.0,
            worker_id: a.worker.to_string(),
            state: a.state as i32,
            reason: a.reason.clone(),
            started_unix_ms: a.started_ms,
            ended_unix_ms: a.ended_ms.unwrap_or_default(),
            resumed_from_epoch: a.resumed_from_epoch,
        })
        .collect();
    let mut status = pb::FoldStatus {
        fold: f.fold.0,
        state: f.state as i32,
        epochs,
        best_epoch: f.best_epoch.unwrap_or_default(),
        worker_id: attempts
            .last()
            .map(|a| a.worker_id.clone())
            .unwrap_or_default(),
        attempts,
        ..Default::default()
    };
    if let Some((state, live)) = live {
        status.set_state(*state);
        status.epoch = live.epoch;
        status.batch = live.batch;
        status.batches = live.batches;
        status.loss = live.loss;
        status.val_loss = live.val_loss;
        status.val_f1 = live.val_f1;
        status.images_per_sec = live.images_per_sec;
        if let Some(worker) = &live.worker {
            status.worker_id = worker.to_string();
        }
    } else if let Some(epochs_run) = f.epochs_run {
        status.epoch = epochs_run;
        status.val_loss = f.best_val_loss.unwrap_or_default();
    }
    status
}

/// A registered worker as the wire shows it.
pub fn worker_status(w: &LiveWorker, alive: bool) -> pb::WorkerStatus {
    pb::WorkerStatus {
        worker_id: w.id.to_string(),
        address: w.address.clone(),
        slots: w
            .slots
            .iter()
            .map(|s| pb::Slot {
                device_index: s.device_index,
                device_name: s.device_name.clone(),
            })
            .collect(),
        busy_slots: w.slots.iter().filter(|s| s.busy.is_some()).count() as u32,
        alive,
        last_seen_unix_ms: w.last_seen_ms,
    }
}
