//! `report.html` as a reader sees it: a real `foldtrain run` (tiny DenseNet, 2 folds, 1
//! epoch) writes a results folder, and `tests/browser/check_report.mjs` opens its report in
//! headless Chromium (playwright-core): every chart loads, every table has rows, and a
//! full-page screenshot is taken. `make browser` installs Chromium and the node modules.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use foldtrain_tests::binary;
use foldtrain_tests::procs::{ok, synth, tiny_job};

const FOLDS: u32 = 2;
/// Launch, load and screenshot take a few seconds; a wedged browser must not hang the suite.
const CHECK_TIMEOUT: Duration = Duration::from_secs(120);

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("FOLDTRAIN_CHROMIUM").map_or_else(|| "/usr/bin/chromium".into(), Into::into)
}

/// Fails, naming the fix, when what `make browser` installs is missing: this test is part
/// of `make test`, and a silent skip would hide a report nobody checked.
fn require_browser() {
    let chromium = chromium();
    assert!(
        chromium.is_file(),
        "no Chromium at {}: run `make browser` (or set FOLDTRAIN_CHROMIUM)",
        chromium.display()
    );
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        playwright.is_file(),
        "playwright-core is not installed ({} is missing): run `make browser`",
        playwright.display()
    );
}

/// Trains the cheapest real job and returns its results folder.
fn results(dir: &Path) -> PathBuf {
    let dataset = synth(&dir.join("data"), 48, 4, 32, FOLDS);
    let out = dir.join("out");
    ok(Command::new(binary("foldtrain"))
        .arg("run")
        .args(&dataset)
        .args(tiny_job(FOLDS, 1))
        .args(["--workers", "1", "--cpu", "--quiet", "--out"])
        .arg(&out)
        .env("FOLDTRAIN_WORKER_BIN", binary("foldtrain-worker")));
    out
}

/// What `check_report.mjs` printed, and how it exited.
struct Checked {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Checked {
    /// The `FAIL:` lines of a check that ran and failed (exit status 1; 2 means it could
    /// not run at all).
    fn failures(&self) -> Vec<&str> {
        assert_eq!(self.status.code(), Some(1), "{self}");
        self.stderr
            .lines()
            .filter(|l| l.starts_with("FAIL:"))
            .collect()
    }
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "check_report.mjs exited {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `node check_report.mjs REPORT SCREENSHOT --folds K`, killed after `CHECK_TIMEOUT`.
fn check_report(report: &Path, screenshot: &Path, logs: &Path) -> Checked {
    let (stdout_log, stderr_log) = (logs.join("check.stdout"), logs.join("check.stderr"));
    let mut child = Command::new("node")
        .arg(browser_dir().join("check_report.mjs"))
        .arg(report)
        .arg(screenshot)
        .args(["--folds", &FOLDS.to_string()])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_log).unwrap())
        .stderr(std::fs::File::create(&stderr_log).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("starting node: {e}: install Node.js 20 or newer, then run `make browser`")
        });
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for node") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "check_report.mjs did not finish within {CHECK_TIMEOUT:?}; stderr:\n{}",
                std::fs::read_to_string(&stderr_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Checked {
        status,
        stdout: std::fs::read_to_string(&stdout_log).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_log).unwrap_or_default(),
    }
}

#[test]
fn report_renders_in_chromium() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let out = results(dir.path());
    // Beside the binaries, so the screenshot outlives the temporary folder for a look.
    let shots = binary("foldtrain").with_file_name("report-browser");
    std::fs::create_dir_all(&shots).unwrap();
    let screenshot = shots.join("report.png");
    let _ = std::fs::remove_file(&screenshot);

    let checked = check_report(&out.join("report.html"), &screenshot, dir.path());
    assert!(checked.status.success(), "{checked}");
    let expected = (0..FOLDS)
        .map(|k| format!("curves_fold{k}.png"))
        .chain(["label_distribution.png", "confusion_matrix.png"].map(String::from));
    for plot in expected {
        assert!(
            checked.stdout.contains(&plot),
            "{plot} not seen:\n{checked}"
        );
    }
    let png = std::fs::read(&screenshot).unwrap_or_default();
    assert!(
        png.len() > 1000 && png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "no PNG screenshot at {} ({} bytes)\n{checked}",
        screenshot.display(),
        png.len()
    );
    // The script names the screenshot's path; shown with `--nocapture`.
    print!("{}", checked.stdout);
}

#[test]
fn missing_chart_or_empty_table_fails_by_name() {
    require_browser();
    let dir = tempfile::tempdir().unwrap();
    let out = results(dir.path());
    let screenshot = dir.path().join("report.png");

    // The first table (cross-validation) with its body rows cut out.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    let (start, end) = (
        html.find("<tbody>").expect("a <tbody> in report.html") + "<tbody>".len(),
        html.find("</tbody>").expect("a </tbody> in report.html"),
    );
    let gutted = out.join("gutted.html");
    std::fs::write(&gutted, format!("{}{}", &html[..start], &html[end..])).unwrap();
    let checked = check_report(&gutted, &screenshot, dir.path());
    assert_eq!(
        checked.failures(),
        ["FAIL: table 1 (fold, best epoch, epochs run...) has no body rows"],
        "the empty table is not named alone:\n{checked}"
    );

    std::fs::remove_file(out.join("curves_fold1.png")).unwrap();
    let checked = check_report(&out.join("report.html"), &screenshot, dir.path());
    let failures = checked.failures();
    assert_eq!(
        failures.len(),
        1,
        "only the deleted chart fails:\n{checked}"
    );
    assert!(
        failures[0].starts_with("FAIL: image curves_fold1.png did not load"),
        "the missing chart is not named:\n{checked}"
    );
}
