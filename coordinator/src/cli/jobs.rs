//! `foldtrain watch | status | cancel | delete | workers | results`: asking a coordinator about
//! jobs and workers, as text for people or `--json` for scripts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use foldtrain_proto::{JobId, JobState, pb};

use super::CommandResult;
use super::client_args::ClientArgs;
use super::draw::Draw;
use super::job_json::{JobJson, WorkerJson};
use super::watch::{WatchOptions, summary_text, watch_job};
use crate::client::{Client, download_results};

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job id `foldtrain submit` printed.
    pub job: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// No progress bars or epoch lines; only the summary at the end.
    #[arg(long, short, env = "FOLDTRAIN_QUIET")]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job to show in detail; without it, every job is listed.
    pub job: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job to cancel.
    pub job: String,
    /// Print the job's status afterwards as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The finished job to delete: its records, result files, and every stored image,
    /// checkpoint and probability file that no other job uses.
    pub job: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct WorkersArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The job whose results to download.
    pub job: String,
    /// Folder to write the results into (created if missing).
    #[arg(long, env = "FOLDTRAIN_RESULTS_OUT")]
    pub out: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// 0 for a job that succeeded, 1 for any other outcome.
pub fn exit_code(state: JobState) -> ExitCode {
    if state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `body` with a connected client on a fresh runtime.
fn with_client<F, Fut>(client: &ClientArgs, body: F) -> CommandResult
where
    F: FnOnce(Client) -> Fut,
    Fut: std::future::Future<Output = CommandResult>,
{
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let client = client.connect().await?;
        body(client).await
    })
}

fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn watch(args: WatchArgs) -> CommandResult {
    let job = JobId::new(args.job);
    let options = WatchOptions {
        draw: if args.quiet {
            Draw::Hidden
        } else {
            Draw::Stderr
        },
        quiet: args.quiet,
        ..WatchOptions::default()
    };
    with_client(&args.client, |client| async move {
        let status = watch_job(&client, &job, &options).await?;
        Ok(exit_code(status.state()))
    })
}

pub fn status(args: StatusArgs) -> CommandResult {
    with_client(&args.client, |client| async move {
        match args.job {
            Some(job) => {
                let status = client.job(&JobId::new(job)).await?;
                if args.json {
                    json(&JobJson::from(&status))?;
                } else {
                    print!("{}", summary_text(&client, &status).await);
                }
            }
            None => {
                let jobs = client.jobs().await?;
                if args.json {
                    json(&jobs.iter().map(JobJson::from).collect::<Vec<_>>())?;
                } else {
                    print!("{}", job_table(&jobs, now_ms()));
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn cancel(args: CancelArgs) -> CommandResult {
    with_client(&args.client, |client| async move {
        let status = client.cancel(&JobId::new(args.job)).await?;
        if args.json {
            json(&JobJson::from(&status))?;
        } else {
            println!("job {}: {}", status.job_id, status.state().as_str());
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn delete(args: DeleteArgs) -> CommandResult {
    with_client(&args.client, |client| async move {
        let deleted = client.delete(&JobId::new(args.job)).await?;
        println!(
            "deleted job {}: {} blobs removed ({:.1} MB freed), {} shared with other jobs kept",
            deleted.job_id,
            deleted.blobs_removed,
            deleted.bytes_freed as f64 / 1e6,
            deleted.blobs_kept
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn workers(args: WorkersArgs) -> CommandResult {
    with_client(&args.client, |client| async move {
        let workers = client.workers().await?;
        if args.json {
            json(&workers.iter().map(WorkerJson::from).collect::<Vec<_>>())?;
        } else {
            print!("{}", worker_table(&workers, now_ms()));
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn results(args: ResultsArgs) -> CommandResult {
    with_client(&args.client, |client| async move {
        let job = JobId::new(args.job);
        let status = client.job(&job).await?;
        if status.state() != JobState::Succeeded {
            eprintln!(
                "warning: job {job} is {}; its results are incomplete",
                status.state().as_str()
            );
        }
        let files = download_results(&client, &job, &args.out).await?;
        for file in &files {
            println!("{}", file.display());
        }
        eprintln!("downloaded {} files to {}", files.len(), args.out.display());
        Ok(ExitCode::SUCCESS)
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// "42s ago", "5m ago", "3h ago", "2d ago"; "-" for an unset time.
fn ago(unix_ms: i64, now_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let s = (now_ms - unix_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86_400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

fn job_table(jobs: &[pb::JobStatus], now_ms: i64) -> String {
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let width = jobs
        .iter()
        .map(|j| j.job_id.len())
        .max()
        .unwrap_or(0)
        .max(3);
    let mut out = format!(
        "{:<width$}  {:<9}  {:>8}  name\n",
        "job", "state", "created"
    );
    for j in jobs {
        let message = if j.message.is_empty() {
            String::new()
        } else {
            format!("  ({})", j.message)
        };
        out += &format!(
            "{:<width$}  {:<9}  {:>8}  {}{message}\n",
            j.job_id,
            j.state().as_str(),
            ago(j.created_unix_ms, now_ms),
            j.name
        );
    }
    out
}

fn worker_table(workers: &[pb::WorkerStatus], now_ms: i64) -> String {
    if workers.is_empty() {
        return "no workers\n".into();
    }
    let width = workers
        .iter()
        .map(|w| w.worker_id.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let mut out = format!(
        "{:<width$}  {:<5}  {:>5}  {:>9}  address  devices\n",
        "worker", "alive", "busy", "last seen"
    );
    for w in workers {
        let devices: Vec<&str> = w.slots.iter().map(|s| s.device_name.as_str()).collect();
        out += &format!(
            "{:<width$}  {:<5}  {:>5}  {:>9}  {}  {}\n",
            w.worker_id,
            if w.alive { "yes" } else { "no" },
            format!("{}/{}", w.busy_slots, w.slots.len()),
            ago(w.last_seen_unix_ms, now_ms),
            w.address,
            devices.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_ages() {
        assert_eq!(ago(0, 5), "-");
        assert_eq!(ago(1_000, 43_000), "42s ago");
        assert_eq!(ago(1, 1 + 3 * 3_600_000), "3h ago");
        let jobs = [pb::JobStatus {
            job_id: "job-1".into(),
            name: "demo".into(),
            state: JobState::Failed.into(),
            message: "fold 2 failed: nan loss".into(),
            created_unix_ms: 1,
            ..Default::default()
        }];
        let text = job_table(&jobs, 1 + 120_000);
        assert!(
            text.lines().nth(1).unwrap().contains("job-1  failed"),
            "{text}"
        );
        assert!(text.contains("2m ago") && text.contains("(fold 2 failed: nan loss)"));
        let workers = [pb::WorkerStatus {
            worker_id: "gpu-1".into(),
            address: "http://10.0.0.2:50052".into(),
            slots: vec![
                pb::Slot {
                    device_index: 0,
                    device_name: "H100".into(),
                },
                pb::Slot {
                    device_index: 1,
                    device_name: "H100".into(),
                },
            ],
            busy_slots: 1,
            alive: true,
            last_seen_unix_ms: 1,
        }];
        let text = worker_table(&workers, 2_001);
        assert!(
            text.contains("1/2") && text.contains("H100, H100") && text.contains("2s ago"),
            "{text}"
        );
        assert_eq!(job_table(&[], 0), "no jobs\n");
    }
}
