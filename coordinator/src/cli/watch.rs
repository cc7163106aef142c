//! Following a job live on the terminal: one progress bar per fold, epoch and reconnect
//! lines above them, and a summary table at the end.

use std::time::Duration;

use foldtrain_proto::{FoldState, JobId, JobState, pb};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::draw::Draw;
use super::summary_table::render_summary;
use crate::client::{
    self, Client, ClientError, DEFAULT_GIVE_UP_AFTER, WatchEvents, fetch_artifact,
};

/// How `watch_job` shows what happens.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Where the per-fold bars go.
    pub draw: Draw,
    /// Leave out the epoch and reconnect lines on stderr.
    pub quiet: bool,
    /// Print the summary table to stdout when the job ends.
    pub summary: bool,
    /// Fail when the coordinator stays unreachable this long.
    pub give_up_after: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            draw: Draw::Stderr,
            quiet: false,
            summary: true,
            give_up_after: DEFAULT_GIVE_UP_AFTER,
        }
    }
}

/// Follows `job` until it ends, drawing its folds; returns its final status.
pub async fn watch_job(
    client: &Client,
    job: &JobId,
    options: &WatchOptions,
) -> Result<pb::JobStatus, ClientError> {
    let view = FoldBars::new(options);
    let result = client::watch_job(client, job, options.give_up_after, &view).await;
    match &result {
        Ok(last) => view.finish(last),
        Err(_) => view.clear(),
    }
    let last = result?;
    if options.summary {
        print!("{}", summary_text(client, &last).await);
    }
    Ok(last)
}

/// The summary table of `status`, with the per-fold best scores from metrics.json
/// when the job succeeded (the status alone carries only what the database keeps).
pub async fn summary_text(client: &Client, status: &pb::JobStatus) -> String {
    let metrics = if status.state() == JobState::Succeeded {
        fetch_artifact(client, &JobId::new(status.job_id.clone()), "metrics.json")
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    } else {
        None
    };
    render_summary(status, metrics.as_ref())
}

/// One bar per fold, and lines above them.
struct FoldBars {
    multi: MultiProgress,
    bars: std::sync::Mutex<Vec<ProgressBar>>,
    quiet: bool,
}

/// Bar resolution within one epoch.
const STEPS_PER_EPOCH: u64 = 100;

impl FoldBars {
    fn new(options: &WatchOptions) -> Self {
        Self {
            multi: MultiProgress::with_draw_target(options.draw.target()),
            bars: std::sync::Mutex::new(Vec::new()),
            quiet: options.quiet,
        }
    }

    /// A line on stderr, above the bars when they are shown.
    fn note(&self, line: &str) {
        if self.quiet {
            return;
        }
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }

    fn epoch_line(&self, fold: u32, e: &pb::EpochMetrics) {
        self.note(&format!(
            "fold {fold} epoch {}: loss {:.4} acc {:.4} f1 {:.4} | val_loss {:.4} val_acc {:.4} val_f1 {:.4} | lr {:.2e} | {:.0} img/s",
            e.epoch, e.loss, e.accuracy, e.f1, e.val_loss, e.val_accuracy, e.val_f1, e.lr, e.images_per_sec
        ));
    }

    fn update(&self, status: &pb::JobStatus) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        while bars.len() < status.folds.len() {
            let bar = self.multi.add(ProgressBar::new(STEPS_PER_EPOCH));
            bar.set_style(
                ProgressStyle::with_template("fold {prefix:>2} {bar:24} {msg}")
                    .expect("the template is valid"),
            );
            bar.set_prefix(bars.len().to_string());
            bars.push(bar);
        }
        for (bar, fold) in bars.iter().zip(&status.folds) {
            let epochs = u64::from(fold.epochs.max(1));
            bar.set_length(epochs * STEPS_PER_EPOCH);
            let position = if fold.state() == FoldState::Done {
                epochs * STEPS_PER_EPOCH
            } else {
                let within = if fold.batches > 0 {
                    u64::from(fold.batch.min(fold.batches)) * STEPS_PER_EPOCH
                        / u64::from(fold.batches)
                } else {
                    0
                };
                u64::from(fold.epoch.saturating_sub(1)) * STEPS_PER_EPOCH + within
            };
            bar.set_position(position);
            bar.set_message(fold_message(fold));
        }
    }

    fn finish(&self, status: &pb::JobStatus) {
        self.update(status);
        self.clear();
    }

    fn clear(&self) {
        let bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for bar in bars.iter() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

impl WatchEvents for FoldBars {
    fn epoch(&self, fold: u32, metrics: &pb::EpochMetrics) {
        self.epoch_line(fold, metrics);
    }

    fn status(&self, status: &pb::JobStatus) {
        self.update(status);
    }

    fn note(&self, line: &str) {
        FoldBars::note(self, line);
    }
}

/// The text beside a fold's bar.
fn fold_message(f: &pb::FoldStatus) -> String {
    let running = f.state() == FoldState::Running;
    let mut parts = vec![format!("{:<9}", f.state().as_str())];
    if f.epoch > 0 {
        parts.push(format!("epoch {}/{}", f.epoch, f.epochs));
    }
    if f.batches > 0 && running {
        parts.push(format!("batch {}/{}", f.batch, f.batches));
    }
    if f.loss > 0.0 {
        parts.push(format!("loss {:.4}", f.loss));
    }
    if f.val_loss > 0.0 {
        parts.push(format!("val_loss {:.4}", f.val_loss));
    }
    if f.val_f1 > 0.0 {
        parts.push(format!("val_f1 {:.4}", f.val_f1));
    }
    if f.images_per_sec > 0.0 && running {
        parts.push(format!("{:.0} img/s", f.images_per_sec));
    }
    if !f.worker_id.is_empty() {
        parts.push(format!("on {}", f.worker_id));
    }
    parts.join("  ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_messages_show_what_is_known() {
        let running = pb::FoldStatus {
            fold: 1,
            state: FoldState::Running.into(),
            epoch: 3,
            epochs: 10,
            batch: 7,
            batches: 20,
            loss: 0.5,
            val_loss: 0.61,
            val_f1: 0.7,
            images_per_sec: 321.0,
            worker_id: "gpu-box-1".into(),
            ..Default::default()
        };
        let text = fold_message(&running);
        for part in [
            "epoch 3/10",
            "batch 7/20",
            "loss 0.5000",
            "val_loss 0.6100",
            "val_f1 0.7000",
            "321 img/s",
            "on gpu-box-1",
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
        let queued = pb::FoldStatus {
            state: FoldState::Queued.into(),
            ..Default::default()
        };
        assert_eq!(fold_message(&queued).trim(), "queued");
        assert!(JobState::Cancelled.is_terminal() && !JobState::Running.is_terminal());
    }
}
