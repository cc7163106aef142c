//! The shipped binaries as a user runs them: `foldtrain serve` with two `foldtrain-worker`
//! processes, then `submit --wait`, `status --json`, `workers --json` and `results`; and
//! `foldtrain run`, which starts its own workers; and pretrained weights that travel
//! with a job as a blob, never as a path on the worker.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use foldtrain_proto::BlobHash;
use foldtrain_proto::config::{Arch, ModelConfig};
use foldtrain_tests::binary;
use foldtrain_tests::procs::{Process, ok, run, tiny_job, wait_workers_with};
use foldtrain_worker::model::{Classifier, save_weights};

/// The bundled synthetic data set: 60 training and 8 test images.
fn synth(dir: &Path) -> Vec<String> {
    foldtrain_tests::procs::synth(dir, 60, 8, 24, 3)
}

fn check_results(out: &Path, test_rows: usize) {
    for file in [
        "predictions.csv",
        "probabilities.csv",
        "oof.csv",
        "metrics.json",
        "config.toml",
        "report.html",
        "confusion_matrix.png",
        "folds/0/best.safetensors",
        "folds/2/history.csv",
    ] {
        assert!(
            out.join(file).is_file(),
            "{file} missing in {}",
            out.display()
        );
    }
    let predictions = std::fs::read_to_string(out.join("predictions.csv")).unwrap();
    assert_eq!(predictions.lines().count(), test_rows + 1, "{predictions}");
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let accuracy = metrics["oof"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&accuracy), "{metrics}");
}

#[test]
fn serve_two_workers_submit_watch_results() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = synth(&dir.path().join("data"));
    let token = dir.path().join("token");
    std::fs::write(&token, "binary-test-token\n").unwrap();

    let (_serve, line) = Process::start(
        Command::new(binary("foldtrain")).args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.path().join("coord").to_str().unwrap(),
            "--token-file",
            token.to_str().unwrap(),
            "--lease-ms",
            "3000",
        ]),
        &dir.path().join("coordinator.log"),
        "listening on",
    );
    let url = line.split_whitespace().last().unwrap().to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");

    let workers: Vec<Process> = (0..2)
        .map(|i| {
            Process::start(
                Command::new(binary("foldtrain-worker")).args([
                    "--coordinator",
                    &url,
                    "--cpu",
                    "--cache-dir",
                    dir.path().join(format!("cache-{i}")).to_str().unwrap(),
                    "--token-file",
                    token.to_str().unwrap(),
                ]),
                &dir.path().join(format!("worker-{i}.log")),
                "listening on",
            )
            .0
        })
        .collect();

    let client = |args: &[&str]| {
        let mut cmd = Command::new(binary("foldtrain"));
        cmd.args(args)
            .env("FOLDTRAIN_COORDINATOR", &url)
            .env("FOLDTRAIN_TOKEN_FILE", &token);
        cmd
    };
    // Both workers have registered before the job goes in, so both get folds.
    wait_workers_with(
        || client(&["workers", "--json"]),
        2,
        Duration::from_secs(30),
    );

    let mut submit = client(&["submit", "--wait", "--quiet", "--name", "binaries"]);
    submit.args(&dataset).args(tiny_job(3, 1));
    let stdout = ok(&mut submit);
    let job = stdout.lines().next().unwrap().trim().to_owned();
    assert!(stdout.contains("OOF"), "no summary after --wait:\n{stdout}");

    let status: serde_json::Value =
        serde_json::from_str(&ok(&mut client(&["status", &job, "--json"]))).unwrap();
    assert_eq!(status["state"], "succeeded", "{status}");
    let used: std::collections::BTreeSet<&str> = status["folds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["worker_id"].as_str().unwrap())
        .collect();
    assert_eq!(used.len(), 2, "both workers should train a fold: {status}");

    let out = dir.path().join("results");
    ok(&mut client(&[
        "results",
        &job,
        "--out",
        out.to_str().unwrap(),
    ]));
    check_results(&out, 8);

    // A wrong token is refused by name, and nothing is submitted.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let mut refused = client(&["status", &job]);
    refused.env("FOLDTRAIN_TOKEN_FILE", &wrong);
    let out = run(&mut refused);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token"), "{err}");

    // Deleting the job frees everything it stored: no other job shares its blobs.
    let deleted = ok(&mut client(&["delete", &job]));
    assert!(
        deleted.starts_with(&format!("deleted job {job}: ")) && deleted.contains("0 shared"),
        "{deleted}"
    );
    let coord = dir.path().join("coord");
    assert!(!coord.join("jobs").join(&job).exists());
    let left: Vec<_> = walkdir_files(&coord.join("blobs"))
        .into_iter()
        .filter(|p| !p.starts_with(coord.join("blobs/tmp")))
        .collect();
    assert!(left.is_empty(), "blobs left after delete: {left:?}");
    let out = run(&mut client(&["status", &job]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("no job {job}")), "{err}");
    drop(workers);
}

/// Every file under `dir`, at any depth.
fn walkdir_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walkdir_files(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn run_trains_on_local_workers() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = synth(&dir.path().join("data"));
    let out: PathBuf = dir.path().join("out");
    let state = dir.path().join("state");
    let weights = tiny_weights();
    let hash = BlobHash::of(&weights);
    std::fs::write(dir.path().join("tiny.safetensors"), &weights).unwrap();
    let mut cmd = Command::new(binary("foldtrain"));
    cmd.arg("run")
        .args(&dataset)
        .args(tiny_job(3, 1))
        .args(["--workers", "2", "--cpu", "--quiet", "--out"])
        .arg(&out)
        .arg("--pretrained")
        .arg(dir.path().join("tiny.safetensors"))
        .arg("--data-dir")
        .arg(&state)
        .env("FOLDTRAIN_WORKER_BIN", binary("foldtrain-worker"));
    let stdout = ok(&mut cmd);
    assert!(stdout.contains("OOF"), "no CV summary:\n{stdout}");
    check_results(&out, 8);
    // The weights went up as a blob, and every fold started from them.
    let saved = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        saved.contains(&format!("pretrained = \"blake3:{hash}\"")),
        "{saved}"
    );
    let loads: usize = (0..2)
        .map(|i| std::fs::read_to_string(state.join(format!("worker-{i}.log"))).unwrap())
        .map(|log| {
            log.lines()
                .filter(|l| l.contains("loaded pretrained weights") && l.contains(&hash.to_hex()))
                .count()
        })
        .sum();
    assert_eq!(loads, 3, "one load per fold");

    // A worker binary that cannot start is named, and the run fails cleanly.
    let mut broken = Command::new(binary("foldtrain"));
    broken
        .arg("run")
        .args(&dataset)
        .args(tiny_job(3, 1))
        .args(["--out", dir.path().join("never").to_str().unwrap()])
        .env("FOLDTRAIN_WORKER_BIN", "/nonexistent/foldtrain-worker");
    let failed = run(&mut broken);
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(err.contains("/nonexistent/foldtrain-worker"), "{err}");
}

/// A safetensors file of a freshly initialised densenet-tiny: `features.*` names and
/// shapes the tiny job's backbone loads, plus a head the loader ignores.
fn tiny_weights() -> Vec<u8> {
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let cfg = ModelConfig {
        arch: Arch::DensenetTiny,
        head_units: 32,
        ..ModelConfig::default()
    };
    let _model = Classifier::new(&vs.root(), &cfg, 3);
    save_weights(&vs).unwrap()
}

/// Every file under `dir` that holds the blob `hash`: named by its hex, whole or cut
/// into nested folders.
fn blob_files(dir: &Path, hash: &BlobHash) -> Vec<PathBuf> {
    let hex = hash.to_hex();
    walkdir_files(dir)
        .into_iter()
        .filter(|p| {
            let flat: String = p
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            flat.ends_with(&hex)
        })
        .collect()
}

#[test]
fn pretrained_weights_reach_the_worker_as_a_blob_not_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = synth(&dir.path().join("data"));
    let data_dir = dir.path().join("coord");
    let (_serve, url) =
        foldtrain_tests::procs::serve(&data_dir, 0, 30_000, &dir.path().join("coordinator.log"));
    let cache = dir.path().join("worker-cache");
    let (worker, _) = foldtrain_tests::procs::worker(&url, &cache, &dir.path().join("worker.log"));
    foldtrain_tests::procs::wait_workers(&url, 1, Duration::from_secs(30));

    // The client runs in a directory of its own and names the file relative to it: a path
    // no worker could open.
    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(client_dir.join("weights")).unwrap();
    let weights = tiny_weights();
    let hash = BlobHash::of(&weights);
    std::fs::write(client_dir.join("weights/tiny.safetensors"), &weights).unwrap();
    let submit = |extra: &[&str]| {
        let mut cmd = foldtrain_tests::procs::client(&url, &["submit", "--quiet"]);
        cmd.args(&dataset)
            .args(tiny_job(2, 1))
            .args(extra)
            .current_dir(&client_dir);
        cmd
    };

    // A file that is not there is named, and nothing is submitted.
    let failed = run(&mut submit(&["--pretrained", "weights/absent.safetensors"]));
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("--pretrained weights/absent.safetensors: cannot open"),
        "{err}"
    );
    // A job file naming weights by path is refused before any upload, naming the key.
    std::fs::write(
        client_dir.join("job.toml"),
        "[model]\npretrained = \"/models/densenet121.safetensors\"\n",
    )
    .unwrap();
    let failed = run(&mut submit(&["--config", "job.toml"]));
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("model.pretrained") && err.contains("--pretrained on submit or run"),
        "{err}"
    );
    let listing = ok(&mut foldtrain_tests::procs::client(
        &url,
        &["status", "--json"],
    ));
    assert!(!listing.contains("job-"), "a job was submitted: {listing}");

    let stdout = ok(&mut submit(&[
        "--pretrained",
        "weights/tiny.safetensors",
        "--wait",
    ]));
    let job = stdout.lines().next().unwrap().trim().to_owned();
    ok(&mut foldtrain_tests::procs::client(
        &url,
        &[
            "results",
            &job,
            "--out",
            dir.path().join("out").to_str().unwrap(),
        ],
    ));
    let saved = std::fs::read_to_string(dir.path().join("out/config.toml")).unwrap();
    assert!(
        saved.contains(&format!("pretrained = \"blake3:{hash}\"")),
        "{saved}"
    );

    // The worker pulled the weights into its cache by hash and loaded them from there;
    // the client's path never reached it.
    let cached = blob_files(&cache, &hash);
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert_eq!(std::fs::read(&cached[0]).unwrap(), weights);
    let log = worker.log_text();
    let loaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("loaded pretrained weights"))
        .collect();
    assert_eq!(loaded.len(), 2, "one load per fold:\n{log}");
    assert!(loaded.iter().all(|l| l.contains(&hash.to_hex())), "{log}");
    assert!(!log.contains("tiny.safetensors"), "{log}");
    assert_eq!(blob_files(&data_dir, &hash).len(), 1);

    // Deleting the job lets the coordinator's copy go.
    ok(&mut foldtrain_tests::procs::client(&url, &["delete", &job]));
    assert!(blob_files(&data_dir, &hash).is_empty());
}
