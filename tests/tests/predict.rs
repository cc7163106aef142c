//! `foldtrain predict` as a user runs it: a job trained by `foldtrain run`, then its
//! ensemble over the job's own test images (the same probabilities), on two workers, with
//! a corrupt image, and from a model folder that lacks a fold's weights.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use foldtrain_tests::binary;
use foldtrain_tests::procs::{ok, run, synth, tiny_job};

/// A finished 2-fold job on the synthetic data set: (data folder, results folder).
fn trained() -> &'static (PathBuf, PathBuf) {
    static TRAINED: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let data = dir.join("data");
        let dataset = synth(&data, 60, 8, 24, 2);
        let out = dir.join("model");
        ok(Command::new(binary("foldtrain"))
            .arg("run")
            .args(&dataset)
            .args(tiny_job(2, 1))
            .args(["--workers", "2", "--cpu", "--quiet", "--out"])
            .arg(&out)
            .env("FOLDTRAIN_WORKER_BIN", binary("foldtrain-worker")));
        (data, out)
    })
}

fn predict(model: &Path, images: &[&str], out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(binary("foldtrain"));
    cmd.arg("predict")
        .arg("--model")
        .arg(model)
        .args(images)
        .arg("--out")
        .arg(out)
        .args(["--cpu", "--quiet"])
        .args(extra)
        .env("FOLDTRAIN_WORKER_BIN", binary("foldtrain-worker"));
    cmd
}

fn test_images(data: &Path) -> Vec<String> {
    let d = |f: &str| data.join(f).to_str().unwrap().to_owned();
    vec![
        "--images-csv".into(),
        d("Testing_set.csv"),
        "--images-dir".into(),
        d("test"),
    ]
}

/// Rows of a probabilities.csv: (filename, probabilities).
fn probabilities(path: &Path) -> Vec<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let mut fields = line.split(',');
            let name = fields.next().unwrap().to_owned();
            (name, fields.map(|p| p.parse().unwrap()).collect())
        })
        .collect()
}

fn assert_close(a: &[(String, Vec<f64>)], b: &[(String, Vec<f64>)], tolerance: f64) {
    assert_eq!(a.len(), b.len());
    for ((name_a, pa), (name_b, pb)) in a.iter().zip(b) {
        assert_eq!(name_a, name_b);
        assert_eq!(pa.len(), pb.len());
        for (x, y) in pa.iter().zip(pb) {
            assert!((x - y).abs() <= tolerance, "{name_a}: {x} vs {y}");
        }
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn predict_reproduces_the_jobs_test_probabilities() {
    let (data, model) = trained();
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<String> = test_images(data);
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    let out = dir.path().join("one");
    let stdout = ok(&mut predict(model, &images, &out, &[]));
    assert!(stdout.contains("predicted 8 of 8 images"), "{stdout}");
    let expected = probabilities(&model.join("probabilities.csv"));
    assert_close(
        &probabilities(&out.join("probabilities.csv")),
        &expected,
        1e-6,
    );
    assert_eq!(
        std::fs::read_to_string(out.join("predictions.csv")).unwrap(),
        std::fs::read_to_string(model.join("predictions.csv")).unwrap()
    );

    // Two workers, shards of 3: both take shards, and the rows are the same, in order.
    let two = dir.path().join("two");
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    let flags = [
        "--workers",
        "2",
        "--shard-size",
        "3",
        "--data-dir",
        state_arg,
    ];
    ok(&mut predict(model, &images, &two, &flags));
    assert_close(
        &probabilities(&two.join("probabilities.csv")),
        &expected,
        1e-6,
    );
    for worker in 0..2 {
        let log = std::fs::read_to_string(state.join(format!("worker-{worker}.log"))).unwrap();
        assert!(
            log.contains("shard blobs ready"),
            "worker {worker} took no shard:\n{log}"
        );
    }

    // Test-time flips change the probabilities, which still sum to one.
    let flipped = dir.path().join("flip");
    ok(&mut predict(model, &images, &flipped, &["--tta", "flip"]));
    let rows = probabilities(&flipped.join("probabilities.csv"));
    assert_eq!(rows.len(), 8);
    assert!(rows.iter().zip(&expected).any(|(a, b)| a.1 != b.1));
    for (name, p) in &rows {
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{name}: {p:?}");
    }
}

#[test]
fn a_corrupt_image_stops_the_run_or_is_skipped() {
    let (data, model) = trained();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("images");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    for (i, entry) in std::fs::read_dir(data.join("test")).unwrap().enumerate() {
        let path = entry.unwrap().path();
        let target = if i % 2 == 0 {
            folder.join(path.file_name().unwrap())
        } else {
            folder.join("sub").join(path.file_name().unwrap())
        };
        std::fs::copy(&path, target).unwrap();
    }
    std::fs::write(folder.join("sub/broken.jpg"), b"not a jpeg at all").unwrap();
    let images = ["--images", folder.to_str().unwrap()];

    let stopped = run(&mut predict(model, &images, &dir.path().join("a"), &[]));
    assert!(!stopped.status.success());
    let err = stderr(&stopped);
    assert!(
        err.contains("sub/broken.jpg") && err.contains("--skip-bad"),
        "{err}"
    );

    let out = dir.path().join("b");
    let skipped = run(&mut predict(model, &images, &out, &["--skip-bad"]));
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert!(
        stderr(&skipped).contains("sub/broken.jpg"),
        "{}",
        stderr(&skipped)
    );
    let listed = std::fs::read_to_string(out.join("skipped.csv")).unwrap();
    assert!(
        listed.starts_with("filename,error\nsub/broken.jpg,"),
        "{listed}"
    );
    let rows = probabilities(&out.join("probabilities.csv"));
    assert_eq!(rows.len(), 8, "every other image is predicted");
    assert!(rows.iter().all(|(name, _)| name != "sub/broken.jpg"));
}

#[test]
fn a_model_folder_without_a_folds_weights_is_named() {
    let (data, model) = trained();
    let dir = tempfile::tempdir().unwrap();
    let partial = dir.path().join("model");
    for file in [
        "config.toml",
        "probabilities.csv",
        "folds/0/best.safetensors",
    ] {
        std::fs::create_dir_all(partial.join(file).parent().unwrap()).unwrap();
        std::fs::copy(model.join(file), partial.join(file)).unwrap();
    }
    let images: Vec<String> = test_images(data);
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    let failed = run(&mut predict(
        &partial,
        &images,
        &dir.path().join("out"),
        &[],
    ));
    assert!(!failed.status.success());
    let err = stderr(&failed);
    assert!(err.contains("folds/1/best.safetensors"), "{err}");
    assert!(!dir.path().join("out").exists());
}

/// The pid of the process whose command line contains `needle`, if one runs.
fn pid_with_argument(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline
                .split(|b| *b == 0)
                .any(|arg| arg == needle.as_bytes())
                .then_some(pid)
        })
}

#[test]
fn a_worker_killed_mid_prediction_costs_only_its_shard() {
    let (_, model) = trained();
    let dir = tempfile::tempdir().unwrap();
    let many = dir.path().join("many");
    synth(&many, 60, 1200, 24, 2);
    let (csv, folder) = (many.join("Testing_set.csv"), many.join("test"));
    let images = [
        "--images-csv",
        csv.to_str().unwrap(),
        "--images-dir",
        folder.to_str().unwrap(),
    ];
    // Small shards and batches: many shards, so the run is far from its end when the
    // second worker takes its first one.
    let flags = ["--workers", "2", "--shard-size", "8", "--batch-size", "2"];
    let whole = dir.path().join("whole");
    ok(&mut predict(model, &images, &whole, &flags));

    let state = dir.path().join("state");
    let out = dir.path().join("killed");
    let log = dir.path().join("predict.log");
    let mut cmd = predict(model, &images, &out, &flags);
    cmd.arg("--data-dir").arg(&state);
    let (process, _) = foldtrain_tests::procs::Process::start_lines(&mut cmd, &log, &[]);
    // The event: worker 1 has its first shard's blobs and is scoring it.
    let worker_log = state.join("worker-1.log");
    let cache = state.join("worker-1-cache");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let text = std::fs::read_to_string(&worker_log).unwrap_or_default();
        if text.contains("shard blobs ready") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker 1 took no shard:\n{text}\n{}",
            process.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pid = pid_with_argument(cache.to_str().unwrap()).expect("worker 1 runs");
    ok(Command::new("kill").args(["-KILL", &pid.to_string()]));
    let status = process.wait(std::time::Duration::from_secs(300));
    let err = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{err}");
    assert!(
        err.contains("shard attempt failed; it goes to another slot"),
        "the kill cost no shard:\n{err}"
    );
    assert_eq!(
        std::fs::read(out.join("probabilities.csv")).unwrap(),
        std::fs::read(whole.join("probabilities.csv")).unwrap(),
        "the probabilities differ from the uninterrupted run's"
    );
    assert_eq!(
        std::fs::read(out.join("predictions.csv")).unwrap(),
        std::fs::read(whole.join("predictions.csv")).unwrap()
    );
    assert_eq!(probabilities(&out.join("probabilities.csv")).len(), 1200);
}
