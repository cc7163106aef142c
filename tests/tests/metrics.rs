//! Prometheus metrics from the shipped binaries: `foldtrain serve` and `foldtrain-worker`
//! with `--metrics-listen 127.0.0.1:0`, scraped over plain HTTP before, during and after
//! a real training job.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use foldtrain_proto::runtime::test_util::http_get;
use foldtrain_tests::binary;
use foldtrain_tests::procs::{Process, ok, synth, tiny_job};

/// The running `submit --wait`, killed if the test ends first.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` (stderr in `log`) and returns the address printed after each of
/// `markers` on stdout (the last word of the line, without `http://` and `/metrics`).
fn start(cmd: &mut Command, log: &Path, markers: &[&str]) -> (Process, Vec<String>) {
    let (process, lines) = Process::start_lines(cmd, log, markers);
    let addresses = lines
        .iter()
        .map(|line| {
            let word = line.split_whitespace().last().unwrap_or_default();
            word.trim_start_matches("http://")
                .trim_end_matches("/metrics")
                .to_owned()
        })
        .collect();
    (process, addresses)
}

/// Every sample of one scrape, by series (name plus labels as printed).
fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let (status, head, body) = http_get(addr, "/metrics").expect("scraping /metrics");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn get(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

const FOLDS: u32 = 3;
const EPOCHS: u32 = 2;
const TRAIN_ROWS: u32 = 60;

#[test]
fn both_binaries_export_metrics_that_follow_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = synth(&dir.path().join("data"), TRAIN_ROWS, 8, 24, FOLDS);

    let (_serve, found) = start(
        Command::new(binary("foldtrain")).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("coord").to_str().unwrap(),
            "--metrics-listen",
            "127.0.0.1:0",
        ]),
        &dir.path().join("coordinator.log"),
        &["listening on", "metrics on"],
    );
    let url = format!("http://{}", found[0]);
    let coordinator: SocketAddr = found[1].parse().unwrap();

    let (_worker, found) = start(
        Command::new(binary("foldtrain-worker"))
            .args([
                "--coordinator",
                &url,
                "--cpu",
                "--cache-dir",
                dir.path().join("cache").to_str().unwrap(),
            ])
            .env("FOLDTRAIN_METRICS_LISTEN", "127.0.0.1:0"),
        &dir.path().join("worker.log"),
        &["listening on", "metrics on"],
    );
    let worker: SocketAddr = found[1].parse().unwrap();

    let before = scrape(worker);
    assert_eq!(get(&before, "foldtrain_worker_served_slots"), 1.0);
    assert_eq!(get(&before, "foldtrain_worker_busy_slots"), 0.0);
    assert_eq!(
        get(
            &before,
            r#"foldtrain_worker_images_trained_total{slot="cpu"}"#
        ),
        0.0
    );
    let before = scrape(coordinator);
    assert_eq!(get(&before, r#"foldtrain_jobs{state="succeeded"}"#), 0.0);
    assert_eq!(
        get(
            &before,
            r#"foldtrain_streamed_bytes_total{direction="upload"}"#
        ),
        0.0
    );

    let started = Instant::now();
    let mut submit = Command::new(binary("foldtrain"));
    submit
        .args(["submit", "--wait", "--quiet", "--name", "metrics"])
        .args(&dataset)
        .args(tiny_job(FOLDS, EPOCHS))
        .env("FOLDTRAIN_COORDINATOR", &url)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("submit.log")).unwrap());
    let mut job = Running(submit.spawn().unwrap());

    // Scrape both endpoints while the job runs.
    let (mut saw_busy, mut saw_running_fold, mut saw_throughput) = (false, false, false);
    let mut last_images = 0.0;
    let status = loop {
        let w = scrape(worker);
        saw_busy |= get(&w, "foldtrain_worker_busy_slots") == 1.0;
        saw_throughput |= get(&w, r#"foldtrain_worker_images_per_second{slot="cpu"}"#) > 0.0;
        let images = get(&w, r#"foldtrain_worker_images_trained_total{slot="cpu"}"#);
        assert!(
            images >= last_images,
            "a counter went down: {images} < {last_images}"
        );
        last_images = images;
        let c = scrape(coordinator);
        saw_running_fold |= get(&c, r#"foldtrain_folds{state="running"}"#) >= 1.0;
        if let Some(status) = job.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the job took too long"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(job.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(
        status.success(),
        "submit --wait failed: {out}\n{}",
        std::fs::read_to_string(dir.path().join("submit.log")).unwrap_or_default()
    );
    let job_id = out.lines().next().unwrap().trim().to_owned();
    assert!(saw_busy, "the worker never showed a busy slot");
    assert!(
        saw_running_fold,
        "the coordinator never showed a running fold"
    );
    assert!(saw_throughput, "the worker never showed throughput");

    ok(Command::new(binary("foldtrain"))
        .args(["results", &job_id, "--out"])
        .arg(dir.path().join("results"))
        .env("FOLDTRAIN_COORDINATOR", &url));

    let w = scrape(worker);
    // Every training row of every fold, every epoch: each row trains in k - 1 folds.
    assert_eq!(
        get(&w, r#"foldtrain_worker_images_trained_total{slot="cpu"}"#),
        f64::from(TRAIN_ROWS * (FOLDS - 1) * EPOCHS)
    );
    assert_eq!(get(&w, "foldtrain_worker_busy_slots"), 0.0);
    assert_eq!(
        get(&w, r#"foldtrain_worker_images_per_second{slot="cpu"}"#),
        0.0
    );
    assert_eq!(
        get(&w, r#"foldtrain_worker_epoch{slot="cpu"}"#),
        f64::from(EPOCHS)
    );
    assert!(
        get(
            &w,
            r#"foldtrain_worker_batch_duration_seconds_count{slot="cpu"}"#
        ) >= 9.0
    );
    assert!(
        get(
            &w,
            r#"foldtrain_worker_batch_duration_seconds_sum{slot="cpu"}"#
        ) > 0.0
    );
    assert!(get(&w, r#"foldtrain_worker_loss{slot="cpu"}"#).is_finite());
    assert!(get(&w, r#"foldtrain_worker_val_loss{slot="cpu"}"#) > 0.0);
    assert_eq!(
        get(
            &w,
            r#"foldtrain_worker_folds_total{slot="cpu",outcome="done"}"#
        ),
        f64::from(FOLDS)
    );

    let c = scrape(coordinator);
    assert_eq!(get(&c, r#"foldtrain_jobs{state="succeeded"}"#), 1.0);
    assert_eq!(get(&c, r#"foldtrain_jobs{state="running"}"#), 0.0);
    assert_eq!(
        get(&c, r#"foldtrain_folds{state="done"}"#),
        f64::from(FOLDS)
    );
    assert_eq!(get(&c, "foldtrain_queued_folds"), 0.0);
    assert_eq!(get(&c, "foldtrain_workers_alive"), 1.0);
    assert_eq!(get(&c, r#"foldtrain_worker_slots{state="busy"}"#), 0.0);
    for direction in ["upload", "download", "checkpoint", "artifact"] {
        let bytes = get(
            &c,
            &format!(r#"foldtrain_streamed_bytes_total{{direction="{direction}"}}"#),
        );
        assert!(bytes > 0.0, "no {direction} bytes counted");
    }
    // The worker downloads every image the client uploaded (one worker, one cache).
    assert!(
        get(
            &c,
            r#"foldtrain_streamed_bytes_total{direction="download"}"#
        ) >= get(&c, r#"foldtrain_streamed_bytes_total{direction="upload"}"#)
    );
    assert!(
        !c.keys()
            .any(|k| k.starts_with("foldtrain_fold_attempt_failures_total")),
        "no attempt failed: {c:#?}"
    );

    let (status, _, _) = http_get(coordinator, "/").unwrap();
    assert_eq!(status, 404);
}
