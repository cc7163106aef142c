//! A quick job on the real binaries with span export switched on: `foldtrain serve` and
//! `foldtrain-worker` processes exporting to an OTLP endpoint, a tiny job submitted with
//! `foldtrain submit --wait`, then every process stopped with SIGTERM so it flushes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};

use crate::binary;
use crate::procs::{Process, ok, synth, wait_workers};

/// How to run the job.
#[derive(Debug, Clone)]
pub struct TracedJob {
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// Extra arguments per worker; one worker process each.
    pub workers: Vec<Vec<String>>,
    pub folds: u32,
    pub epochs: u32,
    /// When set, each process also gets `OTEL_RESOURCE_ATTRIBUTES=<this>=<its service
    /// name>`: for a backend that groups spans by a resource attribute of its own rather
    /// than by `service.name` (Phoenix's `openinference.project.name`).
    pub service_attribute: Option<String>,
}

/// What a finished run leaves behind for the assertions.
#[derive(Debug)]
pub struct TracedRun {
    pub job_id: String,
    /// Log files (stderr) of the coordinator and workers, for failure messages.
    pub logs: Vec<PathBuf>,
}

impl TracedRun {
    /// The last lines of every process log, to explain a failed assertion.
    pub fn log_tails(&self) -> String {
        self.logs
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(15)..].join("\n");
                format!("--- {}\n{tail}", path.display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Environment every process of the run gets: export to `endpoint` with a short batch
/// delay, and nothing inherited that could rename services or switch export off.
fn traced(cmd: &mut Command, endpoint: &str, service: (&Option<String>, &str)) {
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("RUST_LOG", "info");
    if let (Some(attribute), name) = service {
        cmd.env("OTEL_RESOURCE_ATTRIBUTES", format!("{attribute}={name}"));
    }
}

impl TracedJob {
    /// Runs the job in `dir` and stops every process; its spans are then at the endpoint
    /// (or on their way: the exporters flushed before the processes exited).
    pub fn run(&self, dir: &Path) -> anyhow::Result<TracedRun> {
        let data = dir.join("data");
        let dataset = synth(&data, 48, 4, 24, self.folds);
        let coordinator_log = dir.join("coordinator.log");
        let mut logs = vec![coordinator_log.clone()];
        let mut serve = Command::new(binary("foldtrain"));
        serve.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            path(&dir.join("coord")),
        ]);
        traced(
            &mut serve,
            &self.endpoint,
            (&self.service_attribute, "foldtrain-coordinator"),
        );
        let (coordinator, line) = Process::start(&mut serve, &coordinator_log, "listening on");
        let url = line
            .split_whitespace()
            .last()
            .context("no URL in the coordinator's first line")?
            .to_owned();

        let mut workers = Vec::new();
        for (i, extra) in self.workers.iter().enumerate() {
            let log = dir.join(format!("worker-{i}.log"));
            let mut cmd = Command::new(binary("foldtrain-worker"));
            cmd.args(["--coordinator", &url, "--cpu", "--worker-id"])
                .arg(format!("traced-worker-{i}"))
                .args(["--cache-dir", path(&dir.join(format!("cache-{i}")))])
                .args(extra);
            traced(
                &mut cmd,
                &self.endpoint,
                (&self.service_attribute, "foldtrain-worker"),
            );
            workers.push(Process::start(&mut cmd, &log, "listening on").0);
            logs.push(log);
        }
        wait_workers(&url, self.workers.len(), Duration::from_secs(30));

        // The client exports too (as foldtrain-cli): submitting must work with OTEL_* set.
        let mut submit = Command::new(binary("foldtrain"));
        submit
            .args(["submit", "--wait", "--quiet", "--coordinator", &url])
            .args(&dataset)
            .args(["--folds", &self.folds.to_string()])
            .args(["--epochs", &self.epochs.to_string()])
            .args(["--arch", "densenet-tiny", "--head-units", "16"])
            .args(["--image-size", "32", "--batch-size", "8"])
            .args(["--torch-threads", "1", "--loader-threads", "1"])
            .args(["--checkpoint-interval", "0"]);
        traced(
            &mut submit,
            &self.endpoint,
            (&self.service_attribute, "foldtrain-cli"),
        );
        submit.env("RUST_LOG", "warn");
        let stdout = ok(&mut submit);
        let job_id = stdout
            .lines()
            .next()
            .map(|l| l.trim().to_owned())
            .filter(|l| l.starts_with("job-"))
            .with_context(|| format!("no job id printed by submit:\n{stdout}"))?;

        // SIGTERM and a clean exit is when the exporters flush.
        for process in workers.into_iter().chain([coordinator]) {
            let exit = process.terminate(Duration::from_secs(20));
            ensure!(exit.success(), "a traced process exited with {exit}");
        }
        Ok(TracedRun { job_id, logs })
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}
