//! The end of a job: gather every fold's stored results, write the artifacts and the
//! report, and record the summary with the job's success.

use std::sync::Arc;
use std::time::Instant;

use foldtrain_proto::task::FoldSummary;
use foldtrain_proto::{FoldIndex, JobId};
use tracing::{Span, error, info, info_span};

use crate::aggregate::{
    FoldResult, JobTiming, ResultsSummary, TimingInputs, write_fold_results, write_results,
};
use crate::error::{CoordinatorError, Result, run_blocking};
use crate::report::render_report;
use crate::store::{self, JobRecord, JobState, Store, write_atomic};

/// Turns a job's finished folds into its results; owns nothing but the store.
#[derive(Debug, Clone)]
pub(super) struct Finalizer {
    store: Store,
}

impl Finalizer {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Aggregates a job whose folds are all done and stores it as succeeded. The results
    /// are complete without the report: a report failure is recorded in the job's message,
    /// never turned into a failed job. Runs in the current (finalize) span.
    ///
    /// An error means aggregation failed (the job should fail); `Ok(false)` that the
    /// results are written but the job's success could not be stored (logged here).
    pub async fn finalize(&self, record: Arc<JobRecord>) -> Result<bool> {
        let store = self.store.clone();
        // Blocking threads do not inherit the current span: carry it over.
        let finalize = Span::current();
        let job = record.id.clone();
        let created_ms = record.created_ms;
        let (mut summary, report, spent) = run_blocking("aggregation", move || {
            let started = Instant::now();
            let summary = finalize
                .in_scope(|| info_span!("aggregate").in_scope(|| aggregate(&store, &record)))?;
            let aggregated = started.elapsed();
            let report = finalize.in_scope(|| {
                info_span!("render_report")
                    .in_scope(|| render_report(&store.job_dir(&record.id), &summary, &record))
            });
            let spent = Spent {
                aggregation: aggregated.as_secs_f64(),
                report: (started.elapsed() - aggregated).as_secs_f64(),
            };
            Ok((summary, report, spent))
        })
        .await?;
        // The breakdown is diagnostics: without it the results are still whole.
        match self.add_timing(&job, created_ms, spent, &mut summary).await {
            Ok(timing) => info!(
                wall_seconds = timing.wall_seconds,
                training_fold_seconds = timing.fold_seconds.training,
                checkpoint_storage_fold_seconds = timing.fold_seconds.checkpoint_storage,
                "time breakdown written"
            ),
            Err(e) => error!(error = %e, "writing the time breakdown failed"),
        }
        let json = summary.metrics.summary_json();
        let message = match report {
            Ok(_) => String::new(),
            Err(e) => {
                error!(error = %e, "rendering the report failed");
                format!("results written, but the report failed: {e}")
            }
        };
        match self.record_success(job, json, message).await {
            Ok(()) => {}
            // A cancel (or a failure) committed first: the job keeps that end.
            Err(e @ CoordinatorError::AlreadyFinal { .. }) => {
                info!(error = %e, "the job was stopped while its results were aggregated");
                return Ok(false);
            }
            Err(e) => {
                error!(error = %e, "recording the job's success failed");
                return Ok(false);
            }
        }
        info!(
            oof_accuracy = summary.metrics.oof.accuracy,
            oof_macro_f1 = summary.metrics.oof.macro_f1,
            "job succeeded"
        );
        Ok(true)
    }

    /// Computes where the job's time went and rewrites metrics.json with it.
    async fn add_timing(
        &self,
        job: &JobId,
        created_ms: i64,
        spent: Spent,
        summary: &mut ResultsSummary,
    ) -> Result<JobTiming> {
        let id = job.clone();
        let (attempts, phases) = self
            .store
            .db
            .call(move |c| {
                Ok((
                    store::folds::attempts(c, &id)?,
                    store::timing::phase_seconds(c, &id)?,
                ))
            })
            .await?;
        let timing = JobTiming::compute(TimingInputs {
            created_ms,
            finished_ms: store::now_ms(),
            attempts: &attempts,
            phases: &phases,
            aggregation_seconds: spent.aggregation,
            report_seconds: spent.report,
        });
        summary.metrics.timing = Some(timing);
        let json = serde_json::to_vec_pretty(&summary.metrics)
            .map_err(|e| CoordinatorError::encode("metrics.json", e))?;
        let path = self.store.job_dir(job).join("metrics.json");
        run_blocking("metrics.json", move || write_atomic(&path, &json)).await?;
        Ok(timing)
    }

    async fn record_success(&self, job: JobId, json: String, message: String) -> Result<()> {
        self.store
            .db
            .call(move |c| {
                // One transaction: a job cancelled meanwhile gets no success summary either.
                let tx = c.transaction()?;
                store::jobs::set_summary(&tx, &job, &json)?;
                store::jobs::set_job_state(&tx, &job, JobState::Succeeded, &message)?;
                Ok(tx.commit()?)
            })
            .await
    }

    /// Writes the files of one finished fold, so they stay downloadable whatever becomes
    /// of the rest of the job.
    pub async fn write_finished_fold(&self, record: Arc<JobRecord>, fold: FoldIndex) -> Result<()> {
        let store = self.store.clone();
        run_blocking("fold results", move || {
            write_finished_fold(&store, &record, fold)
        })
        .await
    }
}

/// Seconds that finalizing spent, for the time breakdown.
#[derive(Debug, Clone, Copy)]
struct Spent {
    aggregation: f64,
    report: f64,
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

fn write_finished_fold(store: &Store, job: &store::JobRecord, fold: FoldIndex) -> Result<()> {
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
