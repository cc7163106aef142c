//! `report.html`: one self-contained page (inline CSS, the charts by relative path) with
//! the job, its resolved config, the CV table, the OOF scores and the charts.

use std::fmt::Write;

use crate::aggregate::{MeanStd, MetricsJson, OofMetrics, ResultsSummary, TestMetrics};
use crate::store::JobRecord;

pub(super) const FILE: &str = "report.html";

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;\
max-width:1240px;padding:0 1rem;color:#222}h1{font-size:1.6rem}h2{margin-top:2.2rem;\
border-bottom:1px solid #ddd;padding-bottom:.3rem}table{border-collapse:collapse;margin:.6rem 0}\
th,td{border:1px solid #ccc;padding:.3rem .7rem;text-align:right}th:first-child,td:first-child\
{text-align:left}thead th{background:#f2f2f2}tfoot td{font-weight:600;background:#fafafa}\
dl{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dt{font-weight:600}\
dd{margin:0}pre{background:#f6f6f6;padding:.8rem;overflow:auto}img{max-width:100%;\
border:1px solid #eee;margin:.5rem 0}.scores td{font-size:1.1rem}";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn num(v: f64) -> String {
    format!("{v:.4}")
}

fn mean_std(m: MeanStd) -> String {
    format!("{} ± {}", num(m.mean), num(m.std))
}

// Writing to a String cannot fail, so the results of `write!` are ignored throughout.

/// The page for `job`, linking `images` (file names relative to the page).
pub(super) fn render(job: &JobRecord, summary: &ResultsSummary, images: &Images) -> String {
    let mut h = String::new();
    write_head(&mut h, job, &summary.metrics);
    write_cv_table(&mut h, &summary.metrics);
    write_oof_scores(&mut h, &summary.metrics.oof);
    if let Some(test) = &summary.metrics.test {
        write_test_scores(&mut h, test);
    }
    h.push_str("<h2>charts</h2>\n");
    for (file, alt) in images.all() {
        let _ = writeln!(
            h,
            "<figure><img src=\"{src}\" alt=\"{alt}\"><figcaption>{alt}</figcaption></figure>",
            src = escape(file),
            alt = escape(&alt),
        );
    }
    let _ = writeln!(
        h,
        "<h2>resolved config</h2>\n<pre>{}</pre>",
        escape(&job.config.to_toml())
    );
    h.push_str("<h2>files</h2>\n<ul>\n");
    for file in &summary.files {
        let _ = writeln!(h, "<li><a href=\"{0}\">{0}</a></li>", escape(file));
    }
    h.push_str("</ul>\n</body></html>\n");
    h
}

/// The document head, the title and the job's facts.
fn write_head(h: &mut String, job: &JobRecord, m: &MetricsJson) {
    let name = if job.name.is_empty() {
        job.id.as_str()
    } else {
        &job.name
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>foldtrain report: {title}</title><style>{STYLE}</style></head><body>\n\
         <h1>foldtrain report: {title}</h1>\n<dl><dt>job id</dt><dd>{id}</dd>\
         <dt>job name</dt><dd>{job_name}</dd><dt>classes</dt><dd>{classes}</dd>\
         <dt>training rows</dt><dd>{train}</dd><dt>test rows</dt><dd>{test}</dd>\
         <dt>folds</dt><dd>{folds}</dd></dl>\n",
        title = escape(name),
        id = escape(job.id.as_str()),
        job_name = escape(&job.name),
        classes = m.classes.len(),
        train = job.train.len(),
        test = job.test.len(),
        folds = m.folds.len(),
    );
}

/// One row per fold, and the mean and spread across folds.
fn write_cv_table(h: &mut String, m: &MetricsJson) {
    h.push_str(
        "<h2>cross-validation</h2>\n<table><thead><tr><th>fold</th><th>best epoch</th>\
        <th>epochs run</th><th>early stopped</th><th>val loss</th><th>val accuracy</th>\
        <th>val macro-F1</th></tr></thead><tbody>\n",
    );
    for f in &m.folds {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f.fold,
            f.best_epoch,
            f.epochs_run,
            if f.early_stopped { "yes" } else { "no" },
            num(f.val_loss),
            num(f.val_accuracy),
            num(f.val_f1),
        );
    }
    let _ = writeln!(
        h,
        "</tbody><tfoot><tr><td>mean ± std</td><td></td><td></td><td></td><td>{}</td><td>{}</td>\
         <td>{}</td></tr></tfoot></table>",
        mean_std(m.cv.val_loss),
        mean_std(m.cv.val_accuracy),
        mean_std(m.cv.val_f1),
    );
}

/// The out-of-fold totals next to the majority-class baseline, then precision, recall
/// and F1 per class.
fn write_oof_scores(h: &mut String, oof: &OofMetrics) {
    let base = &oof.majority_baseline;
    let _ = writeln!(
        h,
        "<h2>out-of-fold scores</h2>\n<table class=\"scores\"><thead><tr><th>predictions</th>\
         <th>rows</th><th>accuracy</th><th>macro-F1</th><th>MCC</th></tr></thead><tbody>\
         <tr><td>the folds' models</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\
         <tr><td>majority class ({})</td><td>{}</td><td>{}</td><td>{}</td><td></td></tr>\
         </tbody></table>",
        oof.rows,
        num(oof.accuracy),
        num(oof.macro_f1),
        num(oof.mcc),
        escape(&base.class),
        oof.rows,
        num(base.accuracy),
        num(base.macro_f1),
    );
    h.push_str(
        "<table><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>\
        <th>support</th></tr></thead><tbody>\n",
    );
    for c in &oof.per_class {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.class),
            num(c.precision),
            num(c.recall),
            num(c.f1),
            c.support,
        );
    }
    h.push_str("</tbody></table>\n");
}

/// The labelled test set: each fold's model alone, the ensemble, and the baseline.
fn write_test_scores(h: &mut String, test: &TestMetrics) {
    let _ = writeln!(
        h,
        "<h2>test-set scores</h2>\n<p>{} labelled test images: what each fold's model scores \
         alone, and what averaging them buys.</p>\n<table class=\"scores\"><thead><tr>\
         <th>predictions</th><th>accuracy</th><th>macro-F1</th></tr></thead><tbody>",
        test.rows
    );
    let mut row = |name: String, accuracy: f64, f1: f64| {
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td>{}</td><td>{}</td></tr>",
            num(accuracy),
            num(f1)
        );
    };
    for f in &test.folds {
        row(format!("fold {}", f.fold), f.accuracy, f.macro_f1);
    }
    row(
        "<strong>ensemble</strong>".into(),
        test.ensemble.accuracy,
        test.ensemble.macro_f1,
    );
    let base = &test.majority_baseline;
    row(
        format!("majority class ({})", escape(&base.class)),
        base.accuracy,
        base.macro_f1,
    );
    h.push_str("</tbody></table>\n");
}

/// The charts the page shows, file name and caption.
#[derive(Debug, Default)]
pub(super) struct Images {
    pub label_distribution: Option<String>,
    pub curves: Vec<(u32, String)>,
    pub confusion_matrix: Option<String>,
}

impl Images {
    fn all(&self) -> Vec<(&str, String)> {
        let mut out = Vec::new();
        if let Some(f) = &self.label_distribution {
            out.push((f.as_str(), "training rows per class".to_string()));
        }
        for (fold, f) in &self.curves {
            out.push((f.as_str(), format!("fold {fold}: training curves")));
        }
        if let Some(f) = &self.confusion_matrix {
            out.push((f.as_str(), "out-of-fold confusion matrix".to_string()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<b>&"x"'y'"#),
            "&lt;b&gt;&amp;&quot;x&quot;&#39;y&#39;"
        );
        assert_eq!(escape("blood - fresh"), "blood - fresh");
    }
}
