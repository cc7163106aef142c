//! The time breakdown `foldtrain run` prints at its end: what this process measured
//! itself (reading and hashing, starting workers, upload, download) around the job's own
//! breakdown from metrics.json.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::aggregate::JobTiming;

/// What `foldtrain run` measured around the job.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTimes {
    pub hashing: Duration,
    pub starting_workers: Duration,
    pub workers: usize,
    pub upload: Duration,
    /// From submitting to the job's end, as the client waited for it.
    pub job: Duration,
    pub download: Duration,
    pub total: Duration,
}

/// The `timing` section of a downloaded metrics.json, when it has one.
pub fn read_job_timing(metrics_json: &Path) -> Option<JobTiming> {
    #[derive(Deserialize)]
    struct OnlyTiming {
        timing: Option<JobTiming>,
    }
    let text = std::fs::read(metrics_json).ok()?;
    serde_json::from_slice::<OnlyTiming>(&text).ok()?.timing
}

/// The table, one phase a line, seconds right-aligned.
pub fn render(run: &RunTimes, job: Option<&JobTiming>) -> String {
    let mut rows: Vec<(String, f64)> = vec![
        ("reading and hashing the data set".into(), secs(run.hashing)),
        (
            format!(
                "starting {} local worker{}",
                run.workers,
                if run.workers == 1 { "" } else { "s" }
            ),
            secs(run.starting_workers),
        ),
        ("uploading images".into(), secs(run.upload)),
    ];
    match job {
        Some(t) => {
            rows.push((
                "the job, accepted to results written".into(),
                t.wall_seconds,
            ));
            let f = &t.fold_seconds;
            for (what, seconds) in [
                ("waiting for a worker", f.waiting_for_worker),
                ("training", f.training),
                ("validation", f.validation),
                ("checkpoints: encoding (worker)", f.checkpoint_encoding),
                ("checkpoints: streaming", f.checkpoint_streaming),
                ("checkpoints: storage (coordinator)", f.checkpoint_storage),
                ("prediction", f.prediction),
                ("other: dispatch, setup, stalls", f.other),
            ] {
                rows.push((format!("  {what} (fold-s)"), seconds));
            }
            rows.push(("  aggregation".into(), t.aggregation_seconds));
            rows.push(("  report".into(), t.report_seconds));
        }
        None => rows.push((
            "the job (no breakdown in metrics.json)".into(),
            secs(run.job),
        )),
    }
    rows.push(("downloading results".into(), secs(run.download)));
    rows.push(("total".into(), secs(run.total)));

    let width = rows.iter().map(|(what, _)| what.len()).max().unwrap_or(0);
    let mut out = String::from("time breakdown (seconds):\n");
    for (what, seconds) in rows {
        let _ = writeln!(out, "  {what:<width$}  {seconds:>8.1}");
    }
    if let Some(t) = job {
        let _ = writeln!(
            out,
            "  fold-s: seconds summed over the folds, {} at a time at most; checkpoint storage \
             runs beside training and is not part of the rest",
            t.parallel_folds
        );
    }
    out
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{ClientTiming, FoldSeconds};

    #[test]
    fn the_job_breakdown_sits_between_what_the_client_measured() {
        let run = RunTimes {
            hashing: Duration::from_millis(900),
            starting_workers: Duration::from_millis(600),
            workers: 2,
            upload: Duration::from_millis(300),
            job: Duration::from_secs(100),
            download: Duration::from_millis(200),
            total: Duration::from_secs(102),
        };
        let job = JobTiming {
            wall_seconds: 99.5,
            client: ClientTiming::default(),
            fold_seconds: FoldSeconds {
                training: 150.0,
                checkpoint_storage: 12.3,
                ..FoldSeconds::default()
            },
            parallel_folds: 2,
            aggregation_seconds: 0.5,
            report_seconds: 1.0,
        };
        let text = render(&run, Some(&job));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "time breakdown (seconds):");
        assert!(lines[2].contains("starting 2 local workers") && lines[2].ends_with("0.6"));
        assert!(lines[4].ends_with("99.5"), "{text}");
        assert!(text.contains("training (fold-s)"), "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("storage (coordinator)") && l.ends_with("12.3")),
            "{text}"
        );
        assert!(lines.last().unwrap().contains("2 at a time"), "{text}");

        let without = render(&run, None);
        assert!(without.contains("no breakdown") && without.contains("100.0"));
    }

    #[test]
    fn the_timing_is_read_from_metrics_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.json");
        std::fs::write(
            &path,
            r#"{"classes": [], "timing": {"wall_seconds": 3.0,
            "client": {"hashing_seconds": 0.0, "upload_seconds": 0.0},
            "fold_seconds": {"waiting_for_worker": 0, "in_attempts": 0, "training": 1,
              "validation": 0, "checkpoint_encoding": 0, "checkpoint_streaming": 0,
              "checkpoint_storage": 0, "prediction": 0, "other": 0},
            "parallel_folds": 1, "aggregation_seconds": 0, "report_seconds": 0}}"#,
        )
        .unwrap();
        assert_eq!(read_job_timing(&path).unwrap().wall_seconds, 3.0);
        std::fs::write(&path, r#"{"classes": []}"#).unwrap();
        assert_eq!(read_job_timing(&path), None);
        assert_eq!(read_job_timing(&dir.path().join("missing.json")), None);
    }
}
