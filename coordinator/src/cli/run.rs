//! `foldtrain run`: the whole flow on one machine. An in-process coordinator on
//! loopback, child `foldtrain-worker` processes (one per visible GPU, else CPU workers laid
//! out by [`cpu_layout`](super::cpu_layout)), then submit, watch and results, exactly as
//! against a cluster; at the end, where the time went.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use foldtrain_proto::{JobConfig, JobState};
use tempfile::TempDir;
use tokio::sync::oneshot;

use super::CommandResult;
use super::config_args::ConfigArgs;
use super::cpu_layout::{self, Asked, FoldDemand, Machine, fold_peak_bytes};
use super::dataset_args::DatasetArgs;
use super::draw::Draw;
use super::local_args::LocalArgs;
use super::local_workers::{Layout, LocalWorkers, cuda_devices, worker_binary};
use super::progress::UploadBar;
use super::time_breakdown::{self, RunTimes, read_job_timing};
use super::watch::{WatchOptions, watch_job};
use crate::client::{Client, download_results, submit_dataset_hashed_in, upload_files};
use crate::config::ServeConfig;
use crate::dataset::{Dataset, Entry};
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
    #[command(flatten)]
    pub local: LocalArgs,
}

pub fn run(mut args: RunArgs) -> CommandResult {
    let started = Instant::now();
    let resolved = args.config.resolve(&mut args.dataset)?;
    let (config, pretrained) = (resolved.config, resolved.pretrained);
    let Some(dataset) = super::submit::load_checked(&args.dataset, &config)? else {
        return Ok(ExitCode::FAILURE);
    };
    let times = RunTimes {
        hashing: started.elapsed(),
        ..RunTimes::default()
    };
    let name = super::submit::default_name(&args.dataset);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let job = LocalJob {
        config,
        pretrained,
        dataset,
        name,
    };
    runtime.block_on(run_locally(args, job, started, times))
}

/// What `run` submits: the configuration, the pretrained weights file it names, and the
/// data set.
struct LocalJob {
    config: JobConfig,
    pretrained: Option<Entry>,
    dataset: Dataset,
    name: String,
}

/// Starts the coordinator and workers, trains the job and downloads its results.
async fn run_locally(
    args: RunArgs,
    job: LocalJob,
    started: Instant,
    mut times: RunTimes,
) -> CommandResult {
    let LocalJob {
        mut config,
        pretrained,
        dataset,
        name,
    } = job;
    let binary = worker_binary();
    let gpus = if args.local.cpu {
        0
    } else {
        cuda_devices(&binary).await?
    };
    let (layout, announcement) = if gpus > 0 {
        let layout = Layout::choose(gpus, args.local.workers);
        let line = gpu_announcement(&layout);
        (layout, line)
    } else {
        let machine = Machine::this_one();
        let demand = FoldDemand {
            folds: config.split.folds,
            peak_bytes: fold_peak_bytes(
                &config,
                dataset.classes.len(),
                dataset.train.len() + dataset.test.len(),
            ),
        };
        let chosen = cpu_layout::choose(machine, demand, asked(&config, args.local.workers));
        chosen.apply(&mut config);
        (
            Layout::Cpu(chosen.workers),
            chosen.describe(machine, demand),
        )
    };
    let draw = if args.local.quiet {
        Draw::Hidden
    } else {
        Draw::Stderr
    };
    if !args.local.quiet {
        eprintln!("{announcement}");
    }
    let mut cluster = LocalCluster::start(&binary, &layout, args.local.data_dir.as_deref()).await?;
    times.starting_workers = cluster.starting_workers;
    times.workers = layout.len();
    let client = &cluster.client;
    if let Some(file) = &pretrained {
        upload_files(client, std::slice::from_ref(file), &UploadBar::new(draw)).await?;
    }
    let outcome = submit_dataset_hashed_in(
        client,
        &dataset,
        config,
        &name,
        &UploadBar::new(draw),
        times.hashing,
    )
    .await?;
    times.upload = outcome.upload;
    let watching = Instant::now();
    let options = WatchOptions {
        draw,
        quiet: args.local.quiet,
        ..WatchOptions::default()
    };
    let job = outcome.job_id;
    let status = tokio::select! {
        status = watch_job(client, &job, &options) => status?,
        lost = watch_workers(&mut cluster.workers) => return Err(lost),
        _ = tokio::signal::ctrl_c() => {
            eprintln!("interrupted: cancelling job {job}");
            let _ = client.cancel(&job).await;
            cluster.workers.stop().await;
            return Ok(ExitCode::from(130));
        }
    };
    times.job = watching.elapsed();
    let downloading = Instant::now();
    let written = if status.state() == JobState::Succeeded {
        download_results(client, &job, &args.out).await?
    } else {
        Vec::new()
    };
    times.download = downloading.elapsed();
    let _state = cluster.shutdown().await?;
    if !written.is_empty() {
        println!("{} result files in {}", written.len(), args.out.display());
        times.total = started.elapsed();
        let timing = read_job_timing(&args.out.join("metrics.json"));
        print!("{}", time_breakdown::render(&times, timing.as_ref()));
    }
    Ok(super::jobs::exit_code(status.state()))
}

/// An in-process coordinator with local workers registered to it, and a client of it:
/// what `run` and `predict` both stand on.
pub(super) struct LocalCluster {
    pub server: ServerHandle,
    pub workers: LocalWorkers,
    pub client: Client,
    /// The coordinator's and workers' state: `--data-dir`, or a temporary folder.
    pub state_dir: PathBuf,
    /// How long the workers took to start and register.
    pub starting_workers: Duration,
    stop: oneshot::Sender<()>,
    _temporary: Option<TempDir>,
}

impl LocalCluster {
    /// Starts the coordinator on a free loopback port, then the workers of `layout`, and
    /// waits until all have registered.
    pub async fn start(
        binary: &Path,
        layout: &Layout,
        data_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let (state_dir, temporary) = state_dir(data_dir)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = start_coordinator(&state_dir, stopped).await?;
        let starting = Instant::now();
        let workers = LocalWorkers::start(
            binary,
            layout,
            &server.url(),
            &state_dir,
            server.scheduler(),
        )
        .await?;
        let starting_workers = starting.elapsed();
        let client = Client::connect(&server.url(), None).await?;
        Ok(Self {
            server,
            workers,
            client,
            state_dir,
            starting_workers,
            stop,
            _temporary: temporary,
        })
    }

    /// Stops the workers (SIGTERM, then a bounded wait), then the coordinator. The
    /// returned guard keeps a temporary state folder (and what was written under it,
    /// such as prediction shards) until the caller drops it.
    pub async fn shutdown(self) -> anyhow::Result<StateDir> {
        self.workers.stop().await;
        let _ = self.stop.send(());
        self.server.wait().await?;
        Ok(StateDir {
            _temporary: self._temporary,
        })
    }
}

/// Keeps a local cluster's temporary state folder alive after the cluster has stopped.
#[must_use = "dropping it deletes a temporary state folder"]
pub(super) struct StateDir {
    _temporary: Option<TempDir>,
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

fn gpu_announcement(layout: &Layout) -> String {
    format!(
        "starting {} local worker{} ({})",
        layout.len(),
        if layout.len() == 1 { "" } else { "s" },
        match layout {
            Layout::Gpus(gpus) => format!("GPUs {gpus:?}"),
            Layout::Cpu(_) => "CPU".to_owned(),
        }
    )
}

/// What the user fixed: `--workers`, and threads set in the config or on the command line.
fn asked(config: &JobConfig, workers: Option<usize>) -> Asked {
    let set = |threads: u32| (threads > 0).then_some(threads);
    Asked {
        workers,
        torch_threads: set(config.train.torch_threads),
        loader_threads: set(config.train.loader_threads),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_in_the_config_count_as_asked() {
        let mut config = JobConfig::default();
        assert_eq!(asked(&config, None), Asked::default());
        config.train.torch_threads = 3;
        assert_eq!(
            asked(&config, Some(2)),
            Asked {
                workers: Some(2),
                torch_threads: Some(3),
                loader_threads: None,
            }
        );
    }
}
