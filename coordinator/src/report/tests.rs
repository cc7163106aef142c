//! The whole report rendered from results written by the real aggregation path.

use std::path::Path;

use foldtrain_proto::task::{EpochRecord, FoldSummary};
use foldtrain_proto::{BlobHash, FoldIndex, ImageRef, JobConfig, JobId};

use super::*;
use crate::aggregate::{FoldResult, ResultsSummary, write_results};
use crate::store::{JobRecord, JobState};

const FOLDS: u32 = 3;
const EPOCHS: u32 = 5;

/// Kvasir-Capsule-like classes, plus one whose name is markup.
fn class_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "<b>&",
        "Ampulla of vater",
        "Angiectasia",
        "Blood - fresh",
        "Erosion",
        "Erythema",
        "Foreign body",
        "Ileocecal valve",
        "Lymphangiectasia",
        "Normal clean mucosa",
        "Polyp",
        "Pylorus",
        "Reduced mucosal view",
        "Ulcer",
    ]
    .map(String::from)
    .to_vec();
    names.sort();
    names
}

fn image(name: String, label: Option<u32>) -> ImageRef {
    ImageRef {
        hash: BlobHash::of(name.as_bytes()),
        name,
        label,
        group: String::new(),
        size: 1,
    }
}

/// A 14-class job with a 30× imbalance: class 9 has 90 rows, class 0 has 3.
fn job() -> JobRecord {
    let classes = class_names();
    let mut train = Vec::new();
    for c in 0..classes.len() as u32 {
        let rows = if c == 9 { 90 } else { 3 + c * 2 };
        for r in 0..rows {
            train.push(image(format!("c{c}_{r}.jpg"), Some(c)));
        }
    }
    let fold_of = (0..train.len() as u32).map(|i| i % FOLDS).collect();
    let mut config = JobConfig::default();
    config.split.folds = FOLDS;
    config.train.epochs = EPOCHS;
    JobRecord {
        id: JobId::new("job-report"),
        name: "kvasir <run> & \"friends\"".into(),
        state: JobState::Running,
        message: String::new(),
        config,
        class_names: classes,
        train,
        // Labelled, so the page shows the test-set scores too.
        test: (0..6)
            .map(|i| image(format!("x{i}.jpg"), Some(i * 2)))
            .collect(),
        fold_of,
        created_ms: 0,
        finished_ms: None,
        summary_json: String::new(),
    }
}

/// Probabilities that favour the true class most of the time, and a neighbour otherwise.
fn probs(labels: &[u32], classes: usize, seed: usize) -> Vec<f32> {
    let mut out = vec![0.01f32; labels.len() * classes];
    for (r, &label) in labels.iter().enumerate() {
        let guess = if (r + seed).is_multiple_of(4) {
            (label as usize + 1) % classes
        } else {
            label as usize
        };
        out[r * classes + guess] = 1.0 - 0.01 * (classes - 1) as f32;
    }
    out
}

fn folds(job: &JobRecord) -> Vec<FoldResult> {
    let classes = job.class_names.len();
    (0..FOLDS)
        .map(|k| {
            let labels: Vec<u32> = job
                .val_rows(FoldIndex(k))
                .iter()
                .map(|&i| job.train[i].label.unwrap())
                .collect();
            let history = (1..=EPOCHS)
                .map(|e| {
                    let t = e as f64;
                    EpochRecord {
                        epoch: e,
                        loss: 2.0 / t + k as f64 * 0.05,
                        accuracy: 0.4 + 0.1 * t,
                        f1: 0.3 + 0.1 * t,
                        val_loss: 1.0 + (t - 3.0).powi(2) / 10.0 + k as f64 * 0.013,
                        val_accuracy: 0.5 + 0.05 * t,
                        val_f1: 0.35 + 0.07 * t,
                        lr: 1e-3,
                        ..Default::default()
                    }
                })
                .collect();
            FoldResult {
                fold: FoldIndex(k),
                summary: FoldSummary {
                    best_epoch: 3,
                    best_val_loss: 1.0 + k as f64 * 0.013,
                    epochs_run: EPOCHS,
                    early_stopped: k == 1,
                },
                history,
                oof: probs(&labels, classes, k as usize),
                test: probs(&[0, 3, 9, 9, 12, 13], classes, k as usize + 1),
                best_weights: None,
            }
        })
        .collect()
}

fn written_results(dir: &Path) -> (JobRecord, ResultsSummary) {
    let job = job();
    let summary = write_results(&job, &folds(&job), dir).unwrap();
    (job, summary)
}

/// Decodes `file`, checks its size, and that it holds a real picture: many colours
/// (anti-aliased text and lines), and ink in `ink_region` (x, y, w, h).
fn check_png(dir: &Path, file: &str, size: (u32, u32), ink_region: (u32, u32, u32, u32)) {
    let img = image::open(dir.join(file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .to_rgb8();
    assert_eq!(img.dimensions(), size, "{file}");
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 20, "{file}: only {} colours", colours.len());
    let (x0, y0, w, h) = ink_region;
    let dark = (x0..x0 + w)
        .flat_map(|x| (y0..y0 + h).map(move |y| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&v| v < 120))
        .count();
    assert!(
        dark > 30,
        "{file}: no text drawn in {ink_region:?} ({dark} dark pixels)"
    );
}

#[test]
fn renders_every_chart_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let (job, summary) = written_results(dir.path());
    let started = std::time::Instant::now();
    let files = render_report(dir.path(), &summary, &job).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        files,
        [
            "label_distribution.png",
            "curves_fold0.png",
            "curves_fold1.png",
            "curves_fold2.png",
            "confusion_matrix.png",
            "report.html",
        ]
    );
    assert!(elapsed.as_secs() < 5, "rendering took {elapsed:?}");

    // Class names sit in the left label area of the bar chart and the heatmap.
    check_png(
        dir.path(),
        "label_distribution.png",
        (1000, 540),
        (16, 60, 140, 400),
    );
    for k in 0..FOLDS {
        let file = format!("curves_fold{k}.png");
        check_png(dir.path(), &file, (1200, 500), (0, 0, 1200, 40));
    }
    check_png(
        dir.path(),
        "confusion_matrix.png",
        (932, 962),
        (0, 60, 220, 672),
    );

    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    let m = &summary.metrics;
    for f in &m.folds {
        assert!(
            html.contains(&format!("{:.4}", f.val_loss)),
            "fold {}",
            f.fold
        );
        assert!(
            html.contains(&format!("{:.4}", f.val_f1)),
            "fold {}",
            f.fold
        );
    }
    assert!(html.contains(&format!(
        "{:.4} ± {:.4}",
        m.cv.val_loss.mean, m.cv.val_loss.std
    )));
    assert!(html.contains(&format!("{:.4}", m.oof.mcc)));
    let base = &m.oof.majority_baseline;
    assert!(html.contains(&format!(
        "<td>majority class ({})</td><td>{}</td><td>{:.4}</td><td>{:.4}</td>",
        escape_html(&base.class),
        m.oof.rows,
        base.accuracy,
        base.macro_f1
    )));
    let test = m.test.as_ref().expect("the test rows are labelled");
    assert!(html.contains("<h2>test-set scores</h2>"));
    assert!(html.contains(&format!(
        "<tr><td><strong>ensemble</strong></td><td>{:.4}</td><td>{:.4}</td></tr>",
        test.ensemble.accuracy, test.ensemble.macro_f1
    )));
    for f in &test.folds {
        assert!(html.contains(&format!(
            "<tr><td>fold {}</td><td>{:.4}</td><td>{:.4}</td></tr>",
            f.fold, f.accuracy, f.macro_f1
        )));
    }
    assert!(html.contains("<td>&lt;b&gt;&amp;</td>"));
    assert!(!html.contains("<b>&"));
    assert!(html.contains("kvasir &lt;run&gt; &amp; &quot;friends&quot;"));
    assert!(html.contains("job-report"));
    for image in [
        "label_distribution.png",
        "curves_fold2.png",
        "confusion_matrix.png",
    ] {
        assert!(html.contains(&format!("<img src=\"{image}\"")), "{image}");
    }
    assert!(html.contains("[split]") && html.contains("folds = 3"));
    assert!(html.contains("<a href=\"metrics.json\">"));
}

#[test]
fn a_failing_chart_leaves_the_others_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let (job, mut summary) = written_results(dir.path());
    summary.metrics.oof.confusion_matrix.pop();
    let err = render_report(dir.path(), &summary, &job).unwrap_err();
    assert!(matches!(err, ReportError::Inconsistent(_)), "{err}");
    assert!(!dir.path().join("confusion_matrix.png").exists());
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains("curves_fold0.png"));
    assert!(!html.contains("confusion_matrix.png"));
}
