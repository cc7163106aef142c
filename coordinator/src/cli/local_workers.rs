//! The worker processes of `foldtrain run`: child `foldtrain-worker` processes on
//! loopback, one per visible GPU (or CPU workers), stopped when the run ends: with
//! SIGTERM first, so each exports its last spans, then SIGKILL if one hangs.
//!
//! They are separate processes because the coordinator never links libtorch.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};
use tracing::warn;

use crate::scheduler::Scheduler;

/// How long stopped workers get to drain and flush their telemetry before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Environment variable naming the `foldtrain-worker` binary to start.
pub const WORKER_BIN_ENV: &str = "FOLDTRAIN_WORKER_BIN";

/// How the local workers should be laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One worker per listed GPU index.
    Gpus(Vec<usize>),
    /// This many CPU workers.
    Cpu(usize),
}

impl Layout {
    /// One worker per visible GPU, at most `limit` of them; with no GPU, `limit` CPU workers
    /// (default one).
    pub fn choose(cuda_devices: usize, limit: Option<usize>) -> Self {
        if cuda_devices > 0 {
            let n = limit.unwrap_or(cuda_devices).min(cuda_devices).max(1);
            Self::Gpus((0..n).collect())
        } else {
            Self::Cpu(limit.unwrap_or(1).max(1))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Gpus(gpus) => gpus.len(),
            Self::Cpu(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The `foldtrain-worker` to start: `$FOLDTRAIN_WORKER_BIN`, else the one installed
/// beside this binary, else whatever `PATH` finds.
pub fn worker_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(WORKER_BIN_ENV) {
        return PathBuf::from(path);
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("foldtrain-worker")));
    match beside {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("foldtrain-worker"),
    }
}

/// How many CUDA devices the worker binary sees (`foldtrain-worker --list-devices`).
pub async fn cuda_devices(binary: &Path) -> anyhow::Result<usize> {
    let output = Command::new(binary)
        .arg("--list-devices")
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| {
            format!(
                "starting {} (build it with `cargo build --release`, or name it with {WORKER_BIN_ENV})",
                binary.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "{} --list-devices failed ({}): {}",
            binary.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    parse_cuda_devices(&stdout).with_context(|| {
        format!(
            "unexpected output of {} --list-devices: {stdout:?}",
            binary.display()
        )
    })
}

fn parse_cuda_devices(listing: &str) -> Option<usize> {
    listing
        .split_whitespace()
        .find_map(|field| field.strip_prefix("cuda_devices="))
        .and_then(|n| n.parse().ok())
}

/// Running worker processes; they are killed when this is dropped.
pub struct LocalWorkers {
    children: Vec<Child>,
    logs: Vec<PathBuf>,
}

impl LocalWorkers {
    /// Starts the workers of `layout` against the coordinator at `url`, each with its own
    /// cache directory under `state_dir`, and waits until all have registered.
    pub async fn start(
        binary: &Path,
        layout: &Layout,
        url: &str,
        state_dir: &Path,
        scheduler: &Scheduler,
    ) -> anyhow::Result<Self> {
        let mut workers = Self {
            children: Vec::new(),
            logs: Vec::new(),
        };
        for i in 0..layout.len() {
            let log_path = state_dir.join(format!("worker-{i}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let mut command = Command::new(binary);
            command
                .arg("--coordinator")
                .arg(url)
                .arg("--listen")
                .arg("127.0.0.1:0")
                .arg("--cache-dir")
                .arg(state_dir.join(format!("worker-{i}-cache")))
                .env_remove("FOLDTRAIN_ADVERTISE")
                .env_remove("FOLDTRAIN_GPUS")
                .env_remove("FOLDTRAIN_CPU")
                // One fixed metrics port cannot serve several local workers.
                .env_remove("FOLDTRAIN_METRICS_LISTEN")
                .stdin(Stdio::null())
                // Progress reaches the terminal through the coordinator; the workers' logs
                // would only scramble it, so they go to files (and are quoted on failure).
                .stdout(Stdio::null())
                .stderr(log)
                .kill_on_drop(true);
            match layout {
                Layout::Gpus(gpus) => command.arg("--gpus").arg(gpus[i].to_string()),
                Layout::Cpu(_) => command.arg("--cpu"),
            };
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?;
            workers.children.push(child);
            workers.logs.push(log_path);
        }
        workers
            .wait_registered(scheduler, layout.len(), Duration::from_secs(120))
            .await?;
        Ok(workers)
    }

    async fn wait_registered(
        &mut self,
        scheduler: &Scheduler,
        expected: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if scheduler.live_workers().len() >= expected {
                return Ok(());
            }
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Some(status) = child.try_wait().context("checking a worker process")? {
                    bail!(
                        "local worker {i} exited before registering ({status}){}",
                        log_tail(&self.logs[i])
                    );
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "only {} of {expected} local workers registered within {} s",
                    scheduler.live_workers().len(),
                    timeout.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Fails if a worker process has died (the job would otherwise wait for it forever).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Some(status) = child.try_wait().context("checking a worker process")? {
                bail!(
                    "local worker {i} exited unexpectedly ({status}){}",
                    log_tail(&self.logs[i])
                );
            }
        }
        Ok(())
    }

    /// Stops every worker and waits for it to exit: SIGTERM, so each hands back any fold
    /// it runs and exports its spans, then SIGKILL for one still running after
    /// [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        for child in &self.children {
            if let Some(pid) = child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32))
            {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        for (i, child) in self.children.iter_mut().enumerate() {
            if tokio::time::timeout_at(deadline, child.wait())
                .await
                .is_err()
            {
                warn!(
                    worker = i,
                    timeout_s = STOP_TIMEOUT.as_secs(),
                    "local worker did not exit after SIGTERM; killing it"
                );
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        self.children.clear();
    }
}

/// The last lines of a worker's log, to quote in an error.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    if tail.is_empty() {
        format!("; its log {} is empty", path.display())
    } else {
        format!("; the end of its log {}:\n{tail}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_the_gpus_then_the_limit() {
        assert_eq!(Layout::choose(0, None), Layout::Cpu(1));
        assert_eq!(Layout::choose(0, Some(3)), Layout::Cpu(3));
        assert_eq!(Layout::choose(4, None), Layout::Gpus(vec![0, 1, 2, 3]));
        assert_eq!(Layout::choose(4, Some(2)), Layout::Gpus(vec![0, 1]));
        assert_eq!(Layout::choose(2, Some(8)), Layout::Gpus(vec![0, 1]));
    }

    #[test]
    fn device_listing_is_parsed() {
        let listing = "cuda_available=true cuda_devices=2 cudnn=true libtorch_cuda_loaded=true\nslot cuda:0\n";
        assert_eq!(parse_cuda_devices(listing), Some(2));
        assert_eq!(parse_cuda_devices("nothing here"), None);
    }

    #[tokio::test]
    async fn a_missing_worker_binary_is_named() {
        let err = cuda_devices(Path::new("/nonexistent/foldtrain-worker"))
            .await
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("/nonexistent/foldtrain-worker") && text.contains(WORKER_BIN_ENV),
            "{text}"
        );
    }
}
