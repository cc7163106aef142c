//! `foldtrain submit`: read and hash the data set here, upload what the coordinator
//! lacks, submit the job and print its id; with `--wait`, follow it to the end.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::CommandResult;
use super::client_args::ClientArgs;
use super::config_args::ConfigArgs;
use super::dataset_args::DatasetArgs;
use super::draw::Draw;
use super::progress::{Bar, UploadBar};
use super::watch::{WatchOptions, watch_job};
use crate::client::{submit_dataset_hashed_in, upload_files};
use crate::dataset::{Dataset, DatasetSpec, LoadOptions, load};
use foldtrain_proto::JobConfig;

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Name shown in listings [default: the data set's folder name].
    #[arg(long, env = "FOLDTRAIN_JOB_NAME")]
    pub name: Option<String>,
    /// Follow the job until it ends, as `foldtrain watch` does; exit 1 unless it succeeded.
    #[arg(long, env = "FOLDTRAIN_WAIT")]
    pub wait: bool,
    /// No progress bars or epoch lines on stderr.
    #[arg(long, short, env = "FOLDTRAIN_QUIET")]
    pub quiet: bool,
}

pub fn submit(mut args: SubmitArgs) -> CommandResult {
    let started = Instant::now();
    let resolved = args.config.resolve(&mut args.dataset)?;
    let config = resolved.config;
    let Some(dataset) = load_checked(&args.dataset, &config)? else {
        return Ok(ExitCode::FAILURE);
    };
    let hashing = started.elapsed();
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.dataset));
    let draw = if args.quiet {
        Draw::Hidden
    } else {
        Draw::Stderr
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let client = args.client.connect().await?;
        if let Some(file) = &resolved.pretrained {
            upload_files(&client, std::slice::from_ref(file), &UploadBar::new(draw)).await?;
        }
        let outcome = submit_dataset_hashed_in(
            &client,
            &dataset,
            config,
            &name,
            &UploadBar::new(draw),
            hashing,
        )
        .await?;
        println!("{}", outcome.job_id);
        if !args.quiet {
            eprintln!(
                "submitted job {} ({} training, {} test images); uploaded {} new images ({:.1} MB)",
                outcome.job_id,
                dataset.train.len(),
                dataset.test.len(),
                outcome.blobs_uploaded,
                outcome.bytes_uploaded as f64 / 1e6
            );
        }
        if !args.wait {
            return Ok(ExitCode::SUCCESS);
        }
        let options = WatchOptions {
            draw,
            quiet: args.quiet,
            ..WatchOptions::default()
        };
        let status = watch_job(&client, &outcome.job_id, &options).await?;
        Ok(super::jobs::exit_code(status.state()))
    })
}

/// Reads and hashes the data set, printing its problems; `None` when it has errors (they
/// were printed, and nothing should be submitted).
pub fn load_checked(dataset: &DatasetArgs, config: &JobConfig) -> anyhow::Result<Option<Dataset>> {
    let spec = DatasetSpec::try_from(dataset)?;
    let loaded = load(
        &spec,
        LoadOptions {
            folds: Some(config.split.folds),
        },
        &Bar::new(),
    );
    if loaded.report.has_errors() || loaded.report.warning_count() > 0 {
        eprint!("{}", loaded.report.render(20));
    }
    if loaded.report.has_errors() {
        eprintln!("error: the data set has errors; nothing was submitted");
        return Ok(None);
    }
    Ok(Some(loaded.dataset))
}

/// The data set's folder name, so listings say what was trained on.
pub fn default_name(dataset: &DatasetArgs) -> String {
    let folder = match (&dataset.train_csv, &dataset.image_folder) {
        (Some(csv), _) => std::path::absolute(csv)
            .ok()
            .and_then(|p| p.parent().map(|d| d.to_path_buf())),
        (None, Some(folder)) => std::path::absolute(folder).ok(),
        (None, None) => None,
    };
    folder
        .and_then(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}
