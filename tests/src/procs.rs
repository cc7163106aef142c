//! The shipped binaries as separate processes: start `foldtrain serve` and
//! `foldtrain-worker` on loopback, read the address each one prints, run client commands
//! against them, and signal them (SIGKILL, SIGSTOP, SIGCONT, SIGTERM) to inject faults.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use foldtrain_proto::runtime::test_util::TestPki;
use foldtrain_proto::runtime::tls::TlsFiles;

use crate::binary;

/// How long a process may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A child process, killed when dropped however the test ends.
pub struct Process {
    child: Child,
    what: String,
    log: PathBuf,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Starts `cmd` with stderr in `log`, and returns it with the first stdout line that
    /// contains `marker`.
    pub fn start(cmd: &mut Command, log: &Path, marker: &str) -> (Process, String) {
        let (process, mut lines) = Self::start_lines(cmd, log, &[marker]);
        (process, lines.remove(0))
    }

    /// Starts `cmd` with stderr in `log`, and returns it with, for each of `markers`, the
    /// first stdout line that contains it.
    pub fn start_lines(cmd: &mut Command, log: &Path, markers: &[&str]) -> (Process, Vec<String>) {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("create log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Process {
            child,
            what,
            log: log.to_path_buf(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut found: Vec<Option<String>> = vec![None; markers.len()];
        while found.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!(
                    "{} never printed all of {markers:?}; its log:\n{}",
                    process.what,
                    process.log_tail()
                );
            };
            for (marker, slot) in markers.iter().zip(&mut found) {
                if slot.is_none() && line.contains(marker) {
                    *slot = Some(line.clone());
                }
            }
        }
        (process, found.into_iter().flatten().collect())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the process's stderr goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process's stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines of the process's stderr, to explain a failed assertion.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- {}\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`, `TERM`) with `kill -s`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid());
    }

    /// SIGKILLs the process and reaps it: the machine is gone, nothing is flushed.
    pub fn kill_hard(mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub fn terminate(self, timeout: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait(timeout)
    }

    /// Waits up to `timeout` for the process to exit on its own, and returns its status.
    pub fn wait(mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for child") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}; its log:\n{}",
                self.what,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs `cmd` to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs `cmd`, asserts that it succeeded and returns its stdout.
pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// A loopback port that was free a moment ago, for a server that must come back on the
/// same address after a restart.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Generates a synthetic data set in `dir` and returns the dataset flags that name it.
pub fn synth(dir: &Path, train: u32, test: u32, image_size: u32, folds: u32) -> Vec<String> {
    ok(Command::new(binary("foldtrain")).args([
        "synth",
        "--out",
        dir.to_str().unwrap(),
        "--train",
        &train.to_string(),
        "--test",
        &test.to_string(),
        "--image-size",
        &image_size.to_string(),
        "--folds",
        &folds.to_string(),
        "--seed",
        "3",
    ]));
    let d = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    vec![
        "--train-csv".into(),
        d("Training_set.csv"),
        "--train-dir".into(),
        d("train"),
        "--test-csv".into(),
        d("Testing_set.csv"),
        "--test-dir".into(),
        d("test"),
    ]
}

/// Job flags for the tiny DenseNet at 32 px, batch 16, one thread per fold: quick, and
/// deterministic on CPU wherever and however often a fold runs. Every epoch writes a
/// latest checkpoint, however quick, so a fault always has one to resume from.
pub fn tiny_job(folds: u32, epochs: u32) -> Vec<String> {
    let (folds, epochs) = (folds.to_string(), epochs.to_string());
    [
        "--folds",
        &folds,
        "--epochs",
        &epochs,
        "--arch",
        "densenet-tiny",
        "--head-units",
        "32",
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--torch-threads",
        "1",
        "--loader-threads",
        "1",
        "--checkpoint-interval",
        "0",
    ]
    .map(String::from)
    .to_vec()
}

/// `foldtrain serve` on `127.0.0.1:port` (0 for any), storing its state in `data_dir`.
pub fn serve(data_dir: &Path, port: u16, lease_ms: u64, log: &Path) -> (Process, String) {
    let (process, line) = Process::start(
        Command::new(binary("foldtrain")).args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--lease-ms",
            &lease_ms.to_string(),
        ]),
        log,
        "listening on",
    );
    let url = line
        .split_whitespace()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    (process, url)
}

/// A `foldtrain-worker` with one CPU slot, registered with `url`; returns its id. It
/// reports progress after every batch, so tests see exactly how far a fold got.
pub fn worker(url: &str, cache_dir: &Path, log: &Path) -> (Process, String) {
    worker_with(url, cache_dir, log, &[])
}

/// [`worker`] with more flags (`--listen`, `--advertise`, ...).
pub fn worker_with(url: &str, cache_dir: &Path, log: &Path, extra: &[&str]) -> (Process, String) {
    let (process, line) = Process::start(
        Command::new(binary("foldtrain-worker"))
            .args([
                "--coordinator",
                url,
                "--cpu",
                "--cache-dir",
                cache_dir.to_str().unwrap(),
                "--progress-every",
                "1",
            ])
            .args(extra),
        log,
        "listening on",
    );
    let id = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (process, id)
}

/// A `foldtrain` client command aimed at the coordinator at `url`.
pub fn client(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(binary("foldtrain"));
    cmd.args(args)
        .env("FOLDTRAIN_COORDINATOR", url)
        .env_remove("FOLDTRAIN_TOKEN_FILE");
    cmd
}

/// `status JOB --json`, parsed.
pub fn status(url: &str, job: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&mut client(url, &["status", job, "--json"])))
        .expect("status --json prints JSON")
}

/// `workers --json`, parsed.
pub fn workers(url: &str) -> serde_json::Value {
    serde_json::from_str(&ok(&mut client(url, &["workers", "--json"])))
        .expect("workers --json prints JSON")
}

/// Polls `status JOB --json` every 50 ms until `done` holds, and returns that status;
/// panics if the job ends first.
pub fn wait_status(
    url: &str,
    job: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        let out = run(&mut client(url, &["status", job, "--json"]));
        if out.status.success()
            && let Ok(s) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        {
            if done(&s) {
                return s;
            }
            let state = s["state"].as_str().unwrap_or_default();
            assert!(
                !state
                    .parse::<foldtrain_proto::JobState>()
                    .is_ok_and(|s| s.is_terminal()),
                "the job ended {state} while waiting for {what}:\n{s:#}"
            );
            last = s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}; last status:\n{last:#}");
}

/// Waits until `workers --json` lists `count` live workers.
pub fn wait_workers(url: &str, count: usize, timeout: Duration) {
    wait_workers_with(|| client(url, &["workers", "--json"]), count, timeout);
}

/// Waits until `listing()` (a `workers --json` command, with whatever credentials the
/// coordinator needs) lists `count` live workers.
pub fn wait_workers_with(listing: impl Fn() -> Command, count: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let out = run(&mut listing());
        if let Ok(listing) = serde_json::from_slice::<serde_json::Value>(&out.stdout) {
            let alive = listing
                .as_array()
                .map_or(0, |w| w.iter().filter(|w| w["alive"] == true).count());
            if alive >= count {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {count} workers registered within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `--tls-cert`, `--tls-key` and `--tls-ca` for `pki`'s certificate `name`.
pub fn tls_flags(pki: &TestPki, name: &str) -> Vec<PathBuf> {
    let TlsFiles { cert, key, ca } = pki.files(name);
    [
        "--tls-cert".into(),
        cert.unwrap(),
        "--tls-key".into(),
        key.unwrap(),
        "--tls-ca".into(),
        ca.unwrap(),
    ]
    .to_vec()
}

/// A `foldtrain` client command for `url` that presents `pki`'s certificate `identity`
/// and the token in `token`.
pub fn tls_client(
    url: &str,
    token: &Path,
    pki: &TestPki,
    identity: &str,
    args: &[&str],
) -> Command {
    let TlsFiles { cert, key, ca } = pki.files(identity);
    let mut cmd = Command::new(binary("foldtrain"));
    cmd.args(args)
        .env("FOLDTRAIN_COORDINATOR", url)
        .env("FOLDTRAIN_TOKEN_FILE", token)
        .env("FOLDTRAIN_TLS_CA", ca.unwrap())
        .env("FOLDTRAIN_TLS_CERT", cert.unwrap())
        .env("FOLDTRAIN_TLS_KEY", key.unwrap());
    cmd
}

/// Runs `cmd`, which must fail, and returns what it said on stderr.
pub fn refused(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "expected a refusal of {cmd:?}, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("refused as expected: {}", err.trim());
    err
}
