//! The written results checked against an independent recomputation.

use foldtrain_proto::metrics::ConfusionMatrix;
use foldtrain_proto::task::{EpochRecord, FoldSummary};
use foldtrain_proto::{BlobHash, FoldIndex, ImageRef, JobConfig, JobId};

use super::*;
use crate::store::{JobRecord, JobState};

const CLASSES: usize = 3;

fn image(name: &str, label: Option<u32>) -> ImageRef {
    ImageRef {
        hash: BlobHash::of(name.as_bytes()),
        name: name.into(),
        label,
        group: String::new(),
        size: 1,
    }
}

fn job() -> JobRecord {
    let mut config = JobConfig::default();
    config.split.folds = 3;
    JobRecord {
        id: JobId::new("job-agg"),
        name: "agg".into(),
        state: JobState::Running,
        message: String::new(),
        config,
        class_names: vec!["ampulla".into(), "blood, fresh".into(), "normal".into()],
        train: (0..12)
            .map(|i| image(&format!("t{i}.jpg"), Some((i * 7 % 3) as u32)))
            .collect(),
        test: (0..4).map(|i| image(&format!("x{i}.jpg"), None)).collect(),
        fold_of: vec![0, 1, 2, 2, 1, 0, 0, 1, 2, 0, 1, 2],
        created_ms: 0,
        finished_ms: None,
        summary_json: String::new(),
    }
}

/// Pseudo-random but awkward probabilities (not short decimals), rows summing to one.
fn probs(rows: usize, seed: u32) -> Vec<f32> {
    let mut out = Vec::new();
    for r in 0..rows {
        let raw: Vec<f32> = (0..CLASSES)
            .map(|c| ((r as u32 * 31 + c as u32 * 17 + seed * 13) % 97) as f32 / 97.0 + 0.013)
            .collect();
        let sum: f32 = raw.iter().sum();
        out.extend(raw.iter().map(|v| v / sum));
    }
    out
}

fn folds(job: &JobRecord) -> Vec<FoldResult> {
    (0..3)
        .map(|k| {
            let rows = job.val_rows(FoldIndex(k)).len();
            let history = (1..=4)
                .map(|e| EpochRecord {
                    epoch: e,
                    loss: 1.0 / e as f64,
                    val_loss: 0.5 + (e as f64 - 2.0).abs() / 10.0 + k as f64 / 100.0,
                    val_accuracy: 0.6 + k as f64 / 10.0,
                    val_f1: 0.5 + k as f64 / 20.0 + e as f64 / 100.0,
                    lr: 1e-3,
                    ..Default::default()
                })
                .collect();
            FoldResult {
                fold: FoldIndex(k),
                summary: FoldSummary {
                    best_epoch: 2,
                    best_val_loss: 0.5,
                    epochs_run: 4,
                    early_stopped: false,
                },
                history,
                oof: probs(rows, k + 100),
                test: probs(4, k),
                best_weights: Some(vec![k as u8; 8]),
            }
        })
        .collect()
}

fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn results_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let job = job();
    let folds = folds(&job);
    let summary = write_results(&job, &folds, dir.path()).unwrap();

    // probabilities.csv: the mean of the folds, full f32 precision, test input order.
    let (header, rows) = read_csv(&dir.path().join("probabilities.csv"));
    assert_eq!(header, ["filename", "ampulla", "blood, fresh", "normal"]);
    let mut mean = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        assert_eq!(row[0], format!("x{r}.jpg"));
        for c in 0..CLASSES {
            let expected: f64 = folds
                .iter()
                .map(|f| f.test[r * CLASSES + c] as f64)
                .sum::<f64>()
                / 3.0;
            let written: f32 = row[c + 1].parse().unwrap();
            assert!(
                (written as f64 - expected).abs() < 1e-6,
                "row {r} class {c}"
            );
            mean.push(written);
        }
    }
    assert_eq!(
        mean, summary.test_probabilities,
        "written values must round-trip exactly"
    );

    // predictions.csv: the argmax of the mean, as class names, in input order.
    let (header, rows) = read_csv(&dir.path().join("predictions.csv"));
    assert_eq!(header, ["filename", "label"]);
    for (r, row) in rows.iter().enumerate() {
        let p = &mean[r * CLASSES..(r + 1) * CLASSES];
        let best = (0..CLASSES).fold(0, |b, c| if p[c] > p[b] { c } else { b });
        assert_eq!(row, &[format!("x{r}.jpg"), job.class_names[best].clone()]);
    }

    // oof.csv: every training row once, in input order, with its fold's exact values.
    let (header, rows) = read_csv(&dir.path().join("oof.csv"));
    assert_eq!(
        header,
        [
            "filename",
            "label",
            "fold",
            "predicted",
            "ampulla",
            "blood, fresh",
            "normal"
        ]
    );
    assert_eq!(rows.len(), job.train.len());
    let mut y_pred = Vec::new();
    for (r, row) in rows.iter().enumerate() {
        assert_eq!(row[0], job.train[r].name);
        assert_eq!(
            row[1],
            job.class_names[job.train[r].label.unwrap() as usize]
        );
        let k = job.fold_of[r];
        assert_eq!(row[2], k.to_string());
        let pos = job
            .val_rows(FoldIndex(k))
            .iter()
            .position(|&x| x == r)
            .unwrap();
        let expected = &folds[k as usize].oof[pos * CLASSES..(pos + 1) * CLASSES];
        let written: Vec<f32> = row[4..].iter().map(|v| v.parse().unwrap()).collect();
        assert_eq!(written, expected);
        y_pred.push(job.class_names.iter().position(|c| c == &row[3]).unwrap() as u32);
    }

    // metrics.json agrees with a recomputation from the files.
    let metrics: MetricsJson =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics.json")).unwrap()).unwrap();
    let y_true: Vec<u32> = job.train.iter().map(|i| i.label.unwrap()).collect();
    let cm = ConfusionMatrix::new(CLASSES, &y_true, &y_pred);
    assert_eq!(metrics.oof.confusion_matrix, cm.matrix);
    assert_eq!(metrics.oof.rows, 12);
    assert!((metrics.oof.accuracy - cm.accuracy()).abs() < 1e-12);
    assert!((metrics.oof.macro_f1 - cm.macro_f1()).abs() < 1e-12);
    assert!((metrics.oof.mcc - cm.mcc()).abs() < 1e-12);
    assert_eq!(metrics.oof.per_class[1].class, "blood, fresh");
    assert_eq!(
        metrics.oof.per_class.iter().map(|c| c.support).sum::<u64>(),
        12
    );
    let best: Vec<&EpochRecord> = folds.iter().map(|f| &f.history[1]).collect();
    for (m, b) in metrics.folds.iter().zip(&best) {
        assert_eq!(
            (m.best_epoch, m.val_loss, m.val_f1),
            (2, b.val_loss, b.val_f1)
        );
    }
    let f1s: Vec<f64> = best.iter().map(|b| b.val_f1).collect();
    let mean_f1 = f1s.iter().sum::<f64>() / 3.0;
    let std_f1 = (f1s.iter().map(|v| (v - mean_f1).powi(2)).sum::<f64>() / 3.0).sqrt();
    assert!((metrics.cv.val_f1.mean - mean_f1).abs() < 1e-12);
    assert!((metrics.cv.val_f1.std - std_f1).abs() < 1e-12);
    assert_eq!(metrics, summary.metrics);

    // Per-fold files and the resolved config.
    let (_, history) = read_csv(&dir.path().join("folds/1/history.csv"));
    assert_eq!(history.len(), 4);
    let (_, fold_probs) = read_csv(&dir.path().join("folds/2/probabilities.csv"));
    let written: Vec<f32> = fold_probs
        .iter()
        .flat_map(|r| r[1..].iter().map(|v| v.parse::<f32>().unwrap()))
        .collect();
    assert_eq!(written, folds[2].test);
    assert_eq!(
        std::fs::read(dir.path().join("folds/0/best.safetensors")).unwrap(),
        vec![0u8; 8]
    );
    let config = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    assert_eq!(JobConfig::from_toml(&config).unwrap(), job.config);
    assert_eq!(summary.label_counts.iter().map(|c| c.1).sum::<u64>(), 12);
}

#[test]
fn inconsistent_fold_results_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let job = job();
    let mut bad = folds(&job);
    bad[1].oof.pop();
    let err = write_results(&job, &bad, dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("fold 1") && err.contains("out-of-fold"),
        "{err}"
    );

    let mut bad = folds(&job);
    bad.remove(2);
    let err = write_results(&job, &bad, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no out-of-fold prediction"), "{err}");

    let mut bad = folds(&job);
    bad[0].summary.best_epoch = 9;
    let err = write_results(&job, &bad, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("best epoch 9 is missing"), "{err}");
    assert!(
        !dir.path().join("metrics.json").exists(),
        "nothing is written when results are inconsistent"
    );
}

#[test]
fn metrics_score_the_majority_baseline_and_a_labelled_test_set() {
    let dir = tempfile::tempdir().unwrap();
    let mut job = job();
    let folds = folds(&job);
    // Unlabelled test rows: no test section, but the OOF baseline is always there.
    let unlabelled = write_results(&job, &folds, dir.path()).unwrap().metrics;
    assert!(unlabelled.test.is_none());
    // Labels i*7%3 over 12 rows: 0,1,2 four times each; the tie goes to class 0.
    let baseline = &unlabelled.oof.majority_baseline;
    assert_eq!(baseline.class, "ampulla");
    assert!((baseline.accuracy - 4.0 / 12.0).abs() < 1e-12);
    // F1 of the predicted class is 2 * (1/3) / (1 + 1/3) = 0.5, the others 0.
    assert!((baseline.macro_f1 - 0.5 / 3.0).abs() < 1e-12);

    let truth = [2u32, 0, 1, 2];
    for (image, &label) in job.test.iter_mut().zip(&truth) {
        image.label = Some(label);
    }
    let labelled = write_results(&job, &folds, dir.path()).unwrap().metrics;
    let test = labelled.test.as_ref().expect("a test section");
    assert_eq!(test.rows, 4);
    let scores = |probs: &[f32]| {
        let cm = ConfusionMatrix::new(CLASSES, &truth, &argmax_rows(probs, CLASSES));
        (cm.accuracy(), cm.macro_f1())
    };
    assert_eq!(test.folds.len(), 3);
    for (f, fold) in test.folds.iter().zip(&folds) {
        assert_eq!(f.fold, fold.fold.0);
        assert_eq!((f.accuracy, f.macro_f1), scores(&fold.test));
    }
    let mean = mean_test_probabilities(&job, &folds).unwrap();
    assert_eq!(
        (test.ensemble.accuracy, test.ensemble.macro_f1),
        scores(&mean)
    );
    assert_eq!(test.majority_baseline.class, "ampulla");
    assert!((test.majority_baseline.accuracy - 0.25).abs() < 1e-12);
    // The same numbers reach metrics.json and the status summary.
    let written: MetricsJson =
        serde_json::from_slice(&std::fs::read(dir.path().join("metrics.json")).unwrap()).unwrap();
    assert_eq!(written, labelled);
    let summary: serde_json::Value = serde_json::from_str(&labelled.summary_json()).unwrap();
    assert_eq!(
        summary["test"]["ensemble"]["accuracy"],
        test.ensemble.accuracy
    );
    assert_eq!(summary["oof"]["majority_baseline"]["class"], "ampulla");
}
