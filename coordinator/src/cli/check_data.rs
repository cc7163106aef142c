//! `foldtrain check-data`: the validation report and label distribution; exit 1 on errors.

use std::process::ExitCode;

use clap::Args;

use super::CommandResult;
use super::dataset_args::DatasetArgs;
use super::progress::Bar;
use crate::dataset::{DatasetSpec, LoadOptions, load};

#[derive(Debug, Args)]
pub struct CheckDataArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// The number of folds the data set must support: every class needs this many rows.
    #[arg(long, env = "FOLDTRAIN_FOLDS", default_value_t = 5)]
    pub folds: u32,
    /// List at most this many findings of each kind; 0 lists them all.
    #[arg(long, env = "FOLDTRAIN_MAX_FINDINGS", default_value_t = 20)]
    pub max_findings: usize,
}

pub fn check_data(args: CheckDataArgs) -> CommandResult {
    let spec = DatasetSpec::try_from(&args.dataset)?;
    let started = std::time::Instant::now();
    let loaded = load(
        &spec,
        LoadOptions {
            folds: Some(args.folds),
        },
        &Bar::new(),
    );
    print!("{}", loaded.report.render(args.max_findings));
    println!(
        "checked {} images in {:.1} s; the usable ones hold {:.1} MB",
        loaded.report.images_checked,
        started.elapsed().as_secs_f64(),
        loaded.dataset.total_bytes() as f64 / 1e6
    );
    Ok(if loaded.report.has_errors() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
