//! `foldtrain run`: the whole flow on one machine. An in-process coordinator on
//! loopback, child `foldtrain-worker` processes (one per visible GPU, else CPU workers),
//! then submit, watch and results, exactly as against a cluster.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use foldtrain_proto::{JobConfig, JobState};
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::CommandResult;
use super::config_args::ConfigArgs;
use super::dataset_args::DatasetArgs;
use super::draw::Draw;
use super::local_workers::{Layout, LocalWorkers, cuda_devices, worker_binary};
use super::progress::UploadBar;
use super::watch::{WatchOptions, watch_job};
use crate::client::{Client, download_results, submit_dataset};
use crate::config::ServeConfig;
use crate::dataset::Dataset;
use crate::server::ServerHandle;

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Directory for the results (predictions, probabilities, metrics, weights, report).
    #[arg(long, env = "FOLDTRAIN_OUT")]
    pub out: PathBuf,
    /// Local workers to start [default: one per visible GPU, else one CPU worker].
    #[arg(long, env = "FOLDTRAIN_WORKERS")]
    pub workers: Option<usize>,
    /// Train on the CPU even when GPUs are visible.
    #[arg(long, env = "FOLDTRAIN_CPU")]
    pub cpu: bool,
    /// Keep the coordinator's state (job database, blobs, worker caches and logs) here
    /// instead of in a temporary directory removed at the end.
    #[arg(long, env = "FOLDTRAIN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// No progress bars or epoch lines on stderr.
    #[arg(long, short, env = "FOLDTRAIN_QUIET")]
    pub quiet: bool,
}

pub fn run(mut args: RunArgs) -> CommandResult {
    let config = args.config.resolve(&mut args.dataset)?;
    let Some(dataset) = super::submit::load_checked(&args.dataset, &config)? else {
        return Ok(ExitCode::FAILURE);
    };
    let name = super::submit::default_name(&args.dataset);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_locally(args, config, dataset, name))
}

/// Starts the coordinator and workers, trains the job and downloads its results.
async fn run_locally(
    args: RunArgs,
    mut config: JobConfig,
    dataset: Dataset,
    name: String,
) -> CommandResult {
    let binary = worker_binary();
    let gpus = if args.cpu {
        0
    } else {
        cuda_devices(&binary).await?
    };
    let layout = Layout::choose(gpus, args.workers);
    share_cores(&mut config, &layout);
    let (state_dir, _temporary) = state_dir(args.data_dir.as_deref())?;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = start_coordinator(&state_dir, stopped).await?;
    let draw = if args.quiet {
        Draw::Hidden
    } else {
        Draw::Stderr
    };
    if !args.quiet {
        announce(&layout);
    }
    let mut workers = LocalWorkers::start(
        &binary,
        &layout,
        &server.url(),
        &state_dir,
        server.scheduler(),
    )
    .await?;
    let client = Client::connect(&server.url(), None).await?;
    let outcome = submit_dataset(&client, &dataset, config, &name, &UploadBar::new(draw)).await?;
    let options = WatchOptions {
        draw,
        quiet: args.quiet,
        ..WatchOptions::default()
    };
    let job = outcome.job_id;
    let status = tokio::select! {
        status = watch_job(&client, &job, &options) => status?,
        lost = watch_workers(&mut workers) => return Err(lost),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: cancelling job {job}");
            let _ = client.cancel(&job).await;
            workers.stop().await;
            return Ok(ExitCode::from(130));
        }
    };
    let written = if status.state() == JobState::Succeeded {
        download_results(&client, &job, &args.out).await?
    } else {
        Vec::new()
    };
    workers.stop().await;
    let _ = stop.send(());
    server.wait().await?;
    if !written.is_empty() {
        println!("{} result files in {}", written.len(), args.out.display());
    }
    Ok(super::jobs::exit_code(status.state()))
}

/// The folder for the coordinator's state: `data_dir`, or a temporary one that lives as
/// long as the returned guard.
fn state_dir(data_dir: Option<&Path>) -> anyhow::Result<(PathBuf, Option<TempDir>)> {
    let (dir, temporary) = match data_dir {
        Some(dir) => (dir.to_path_buf(), None),
        None => {
            let temporary = tempfile::Builder::new()
                .prefix("foldtrain-run-")
                .tempdir()
                .context("creating a temporary state directory")?;
            (temporary.path().to_path_buf(), Some(temporary))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((dir, temporary))
}

/// An in-process coordinator on a free loopback port, running until `stopped` fires.
async fn start_coordinator(
    state_dir: &Path,
    stopped: oneshot::Receiver<()>,
) -> anyhow::Result<ServerHandle> {
    let config = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("a valid address"),
        data_dir: state_dir.join("coordinator"),
        lease: Duration::from_secs(10),
        ..ServeConfig::default()
    };
    let server = crate::server::start(config, async {
        let _ = stopped.await;
    })
    .await?;
    Ok(server)
}

fn announce(layout: &Layout) {
    eprintln!(
        "starting {} local worker{} ({})",
        layout.len(),
        if layout.len() == 1 { "" } else { "s" },
        match layout {
            Layout::Gpus(gpus) => format!("GPUs {gpus:?}"),
            Layout::Cpu(_) => "CPU".to_owned(),
        }
    );
}

/// Resolves only when a worker process has died; the job could not finish without it.
async fn watch_workers(workers: &mut LocalWorkers) -> anyhow::Error {
    loop {
        if let Err(e) = workers.check_alive() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Several CPU workers on one machine would each take every core; give each its share.
fn share_cores(config: &mut JobConfig, layout: &Layout) {
    if let Layout::Cpu(n) = layout
        && *n > 1
        && config.train.torch_threads == 0
    {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        config.train.torch_threads = (cores / n).max(1) as u32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_workers_share_the_cores_unless_told_otherwise() {
        let mut config = JobConfig::default();
        share_cores(&mut config, &Layout::Cpu(1));
        assert_eq!(config.train.torch_threads, 0);
        share_cores(&mut config, &Layout::Gpus(vec![0, 1]));
        assert_eq!(config.train.torch_threads, 0);
        share_cores(&mut config, &Layout::Cpu(64));
        assert_eq!(config.train.torch_threads, 1);
        config.train.torch_threads = 3;
        share_cores(&mut config, &Layout::Cpu(2));
        assert_eq!(config.train.torch_threads, 3);
    }
}
