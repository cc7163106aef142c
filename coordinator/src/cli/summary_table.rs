//! The plain-text job summary `watch`, `submit --wait` and `status JOB` print: one row
//! per fold, then the CV mean ± std, the out-of-fold scores next to the majority-class
//! baseline, and, when the test set was labelled, each fold's test score next to the
//! ensemble's.

use std::fmt::Write;

use foldtrain_proto::pb;
use serde_json::Value;

/// The summary of `status`; `metrics` is the job's metrics.json when it was fetched,
/// whose per-fold best scores are preferred over the status's.
pub fn render_summary(status: &pb::JobStatus, metrics: Option<&Value>) -> String {
    let mut out = String::new();
    let name = if status.name.is_empty() {
        String::new()
    } else {
        format!(" ({})", status.name)
    };
    let _ = writeln!(
        out,
        "job {}{name}: {}",
        status.job_id,
        status.state().as_str()
    );
    if !status.message.is_empty() {
        let _ = writeln!(out, "  {}", status.message);
    }
    if !status.folds.is_empty() {
        let _ = writeln!(
            out,
            "{:>4}  {:<9}  {:>10}  {:>8}  {:>6}  {:>8}  worker",
            "fold", "state", "best epoch", "val loss", "val F1", "attempts"
        );
    }
    for fold in &status.folds {
        out += &fold_row(fold, metrics);
    }
    if let Ok(summary) = serde_json::from_str::<Value>(&status.summary_json) {
        out += &score_lines(&summary);
    }
    out
}

/// One fold's table row; best scores from metrics.json win over the status's.
fn fold_row(fold: &pb::FoldStatus, metrics: Option<&Value>) -> String {
    let from_metrics = metrics
        .and_then(|m| m.get("folds"))
        .and_then(Value::as_array)
        .and_then(|folds| {
            folds
                .iter()
                .find(|f| f.get("fold").and_then(Value::as_u64) == Some(u64::from(fold.fold)))
        });
    let number = |key: &str| {
        from_metrics
            .and_then(|f| f.get(key))
            .and_then(Value::as_f64)
    };
    let best_epoch = number("best_epoch")
        .map(|e| e as u32)
        .or((fold.best_epoch > 0).then_some(fold.best_epoch));
    let val_loss = number("val_loss").or((fold.val_loss > 0.0).then_some(fold.val_loss));
    let val_f1 = number("val_f1").or((fold.val_f1 > 0.0).then_some(fold.val_f1));
    format!(
        "{:>4}  {:<9}  {:>10}  {:>8}  {:>6}  {:>8}  {}\n",
        fold.fold,
        fold.state().as_str(),
        best_epoch.map_or("-".into(), |e| e.to_string()),
        val_loss.map_or("-".into(), |v| format!("{v:.4}")),
        val_f1.map_or("-".into(), |v| format!("{v:.4}")),
        fold.attempts.len(),
        if fold.worker_id.is_empty() {
            "-"
        } else {
            &fold.worker_id
        },
    )
}

/// The CV mean ± std line and the out-of-fold line, each when the summary has it.
fn score_lines(summary: &Value) -> String {
    let mut out = String::new();
    let mean_std = |metric: &str| {
        let m = summary.get("cv")?.get(metric)?;
        Some(format!(
            "{:.4} ± {:.4}",
            m.get("mean")?.as_f64()?,
            m.get("std")?.as_f64()?
        ))
    };
    if let (Some(loss), Some(acc), Some(f1)) = (
        mean_std("val_loss"),
        mean_std("val_accuracy"),
        mean_std("val_f1"),
    ) {
        let _ = writeln!(
            out,
            "CV   val loss {loss}   val accuracy {acc}   val macro-F1 {f1}"
        );
    }
    let oof = |metric: &str| summary.get("oof")?.get(metric)?.as_f64();
    if let (Some(acc), Some(f1), Some(mcc)) = (oof("accuracy"), oof("macro_f1"), oof("mcc")) {
        let _ = writeln!(
            out,
            "OOF  accuracy {acc:.4}   macro-F1 {f1:.4}   MCC {mcc:.4}"
        );
    }
    if let Some(line) = summary
        .get("oof")
        .and_then(|o| o.get("majority_baseline"))
        .and_then(baseline_line)
    {
        out += &line;
    }
    if let Some(test) = summary.get("test") {
        out += &test_lines(test);
    }
    out
}

fn scores(v: &Value) -> Option<(f64, f64)> {
    Some((v.get("accuracy")?.as_f64()?, v.get("macro_f1")?.as_f64()?))
}

/// What predicting the majority class for every row would score.
fn baseline_line(baseline: &Value) -> Option<String> {
    let (acc, f1) = scores(baseline)?;
    let class = baseline.get("class")?.as_str()?;
    Some(format!(
        "     majority class ({class}) would score accuracy {acc:.4}   macro-F1 {f1:.4}\n"
    ))
}

/// The test set against its labels: each fold's model, the ensemble, the baseline.
fn test_lines(test: &Value) -> String {
    let mut out = String::new();
    let rows = test.get("rows").and_then(Value::as_u64).unwrap_or(0);
    let _ = writeln!(out, "TEST {rows} labelled images");
    for fold in test
        .get("folds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(k), Some((acc, f1))) = (fold.get("fold").and_then(Value::as_u64), scores(fold))
        {
            let _ = writeln!(
                out,
                "     fold {k:<4}  accuracy {acc:.4}   macro-F1 {f1:.4}"
            );
        }
    }
    if let Some((acc, f1)) = test.get("ensemble").and_then(scores) {
        let _ = writeln!(out, "     ensemble   accuracy {acc:.4}   macro-F1 {f1:.4}");
    }
    if let Some(line) = test.get("majority_baseline").and_then(baseline_line) {
        out += &line;
    }
    out
}

#[cfg(test)]
mod tests {
    use foldtrain_proto::{FoldState, JobState};

    use super::*;

    #[test]
    fn folds_cv_and_oof_are_shown() {
        let status = pb::JobStatus {
            job_id: "job-1".into(),
            name: "kvasir".into(),
            state: JobState::Succeeded.into(),
            folds: vec![
                pb::FoldStatus {
                    fold: 0,
                    state: FoldState::Done.into(),
                    best_epoch: 2,
                    val_loss: 0.5,
                    worker_id: "w1".into(),
                    attempts: vec![pb::AttemptStatus::default(); 2],
                    ..Default::default()
                },
                pb::FoldStatus {
                    fold: 1,
                    state: FoldState::Done.into(),
                    ..Default::default()
                },
            ],
            summary_json: r#"{"cv":{"val_loss":{"mean":0.5,"std":0.01},"val_accuracy":{"mean":0.8,"std":0.02},"val_f1":{"mean":0.7,"std":0.03}},"oof":{"accuracy":0.81,"macro_f1":0.69,"mcc":0.77,"majority_baseline":{"class":"normal","accuracy":0.62,"macro_f1":0.05}},"test":{"rows":20,"ensemble":{"accuracy":0.85,"macro_f1":0.6},"folds":[{"fold":0,"accuracy":0.8,"macro_f1":0.5},{"fold":1,"accuracy":0.75,"macro_f1":0.55}],"majority_baseline":{"class":"normal","accuracy":0.6,"macro_f1":0.0625}}}"#.into(),
            ..Default::default()
        };
        let metrics: Value = serde_json::from_str(
            r#"{"folds":[{"fold":1,"best_epoch":3,"val_loss":0.25,"val_f1":0.75}]}"#,
        )
        .unwrap();
        let text = render_summary(&status, Some(&metrics));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "job job-1 (kvasir): succeeded");
        assert!(
            lines[2].contains("0.5000") && lines[2].contains("w1"),
            "{text}"
        );
        assert!(lines[2].split_whitespace().nth(5) == Some("2"), "{text}");
        assert!(
            lines[3].contains("0.2500") && lines[3].contains("0.7500"),
            "{text}"
        );
        assert!(text.contains("val macro-F1 0.7000 ± 0.0300"), "{text}");
        assert!(
            text.contains("OOF  accuracy 0.8100   macro-F1 0.6900   MCC 0.7700"),
            "{text}"
        );
        let tail: Vec<&str> = lines[lines.len() - 6..].to_vec();
        assert_eq!(
            tail,
            [
                "     majority class (normal) would score accuracy 0.6200   macro-F1 0.0500",
                "TEST 20 labelled images",
                "     fold 0     accuracy 0.8000   macro-F1 0.5000",
                "     fold 1     accuracy 0.7500   macro-F1 0.5500",
                "     ensemble   accuracy 0.8500   macro-F1 0.6000",
                "     majority class (normal) would score accuracy 0.6000   macro-F1 0.0625",
            ],
            "{text}"
        );
    }
}
