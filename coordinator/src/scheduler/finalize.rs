//! The end of a job: gather every fold's stored results, write the artifacts, record
//! the summary and mark the job succeeded (or failed, saying why).

use foldtrain_proto::task::FoldSummary;
use foldtrain_proto::{FoldIndex, JobId};
use tracing::{Instrument, Span, error, info, info_span};

use super::core::Scheduler;
use crate::aggregate::{FoldResult, ResultsSummary, write_fold_results, write_results};
use crate::error::{CoordinatorError, Result};
use crate::report::render_report;
use crate::store::{self, JobState, Store};

impl Scheduler {
    /// Aggregates a job whose folds are all done, off the async runtime.
    pub(super) fn spawn_finalize(&self, job: JobId) {
        let Some((record, span)) = self
            .lock()
            .jobs
            .get(&job)
            .map(|j| (j.record.clone(), j.span.clone()))
        else {
            return;
        };
        let scheduler = self.clone();
        let finalize = info_span!(parent: &span, "finalize", folds = record.folds());
        tokio::spawn(
            async move {
                let store = scheduler.inner.store.clone();
                // Blocking threads do not inherit the current span: carry it over.
                let finalize = Span::current();
                let result = tokio::task::spawn_blocking(move || {
                    let summary = finalize.in_scope(|| {
                        info_span!("aggregate").in_scope(|| aggregate(&store, &record))
                    })?;
                    // The results are complete without the report: its failure is recorded
                    // on the job, never turned into a failed job.
                    let report = finalize.in_scope(|| {
                        info_span!("render_report").in_scope(|| {
                            render_report(&store.job_dir(&record.id), &summary, &record)
                        })
                    });
                    Ok::<_, CoordinatorError>((summary, report))
                })
                .await
                .map_err(|e| CoordinatorError::Corrupt(format!("aggregation task failed: {e}")))
                .and_then(|r| r);
                match result {
                    Ok((summary, report)) => {
                        let json = summary.metrics.summary_json();
                        let message = match report {
                            Ok(_) => String::new(),
                            Err(e) => {
                                error!(error = %e, "rendering the report failed");
                                format!("results written, but the report failed: {e}")
                            }
                        };
                        let id = job.clone();
                        let stored = scheduler
                            .inner
                            .store
                            .db
                            .call(move |c| {
                                store::jobs::set_summary(c, &id, &json)?;
                                store::jobs::set_job_state(c, &id, JobState::Succeeded, &message)
                            })
                            .await;
                        match stored {
                            Ok(()) => {
                                info!(
                                    oof_accuracy = summary.metrics.oof.accuracy,
                                    oof_macro_f1 = summary.metrics.oof.macro_f1,
                                    "job succeeded"
                                );
                                scheduler.lock().jobs.remove(&job);
                                scheduler.notify(&job, None, None);
                            }
                            Err(e) => error!(error = %e, "recording the job's success failed"),
                        }
                    }
                    Err(e) => {
                        error!(error = %e, "aggregating results failed");
                        let message = format!("aggregating results: {e}");
                        if let Err(e) = scheduler.stop_job(&job, JobState::Failed, message).await {
                            error!(error = %e, "recording the job's failure failed");
                        }
                    }
                }
            }
            .instrument(finalize),
        );
    }
}

/// Reads every fold's results from the store and writes the artifacts.
fn aggregate(store: &Store, job: &store::JobRecord) -> Result<ResultsSummary> {
    let (folds, histories) = store.db.call_blocking(|c| {
        let folds = store::folds::folds(c, &job.id)?;
        let histories = folds
            .iter()
            .map(|f| store::folds::history(c, &job.id, f.fold))
            .collect::<Result<Vec<_>>>()?;
        Ok((folds, histories))
    })?;
    let results = folds
        .into_iter()
        .zip(histories)
        .map(|(f, history)| fold_result(store, job, f, history))
        .collect::<Result<Vec<_>>>()?;
    write_results(job, &results, &store.job_dir(&job.id))
}

/// Writes the files of one finished fold, so they stay downloadable whatever becomes of
/// the rest of the job.
pub(super) fn write_finished_fold(
    store: &Store,
    job: &store::JobRecord,
    fold: FoldIndex,
) -> Result<()> {
    let (record, history) = store.db.call_blocking(|c| {
        let record = store::folds::folds(c, &job.id)?
            .into_iter()
            .find(|f| f.fold == fold)
            .ok_or_else(|| {
                CoordinatorError::Corrupt(format!("job {} has no fold {fold}", job.id))
            })?;
        Ok((record, store::folds::history(c, &job.id, fold)?))
    })?;
    let result = fold_result(store, job, record, history)?;
    write_fold_results(job, &result, &store.job_dir(&job.id))?;
    Ok(())
}

/// One fold's stored results, read back from the blob store.
fn fold_result(
    store: &Store,
    job: &store::JobRecord,
    f: store::FoldRecord,
    history: Vec<foldtrain_proto::task::EpochRecord>,
) -> Result<FoldResult> {
    let probabilities = |blob: Option<foldtrain_proto::BlobHash>, what: &str| -> Result<Vec<f32>> {
        let blob = blob.ok_or_else(|| CoordinatorError::BadFoldResult {
            job: job.id.clone(),
            fold: f.fold,
            message: format!("no {what} probabilities stored"),
        })?;
        let bytes = store.blobs.read(&blob)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    };
    Ok(FoldResult {
        fold: f.fold,
        summary: FoldSummary {
            best_epoch: f.best_epoch.unwrap_or_default(),
            best_val_loss: f.best_val_loss.unwrap_or(f64::NAN),
            epochs_run: f.epochs_run.unwrap_or_default(),
            early_stopped: f.early_stopped,
        },
        history,
        oof: probabilities(f.oof_blob, "out-of-fold")?,
        test: probabilities(f.test_blob, "test")?,
        best_weights: f
            .best_checkpoint
            .map(|c| store.blobs.read(&c.blob))
            .transpose()?,
    })
}
