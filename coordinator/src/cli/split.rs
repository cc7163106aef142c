//! `foldtrain split`: the scikit-learn-identical fold of every training row, as
//! `filename,label,fold`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::CommandResult;
use super::dataset_args::DatasetArgs;
use super::progress::Bar;
use crate::dataset::{Dataset, DatasetSpec, LoadOptions, load};
use crate::split::dataset_folds;

#[derive(Debug, Args)]
pub struct SplitArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Number of folds (n_splits).
    #[arg(long, env = "FOLDTRAIN_FOLDS", default_value_t = 5)]
    pub folds: u32,
    /// Seed of numpy's RandomState (random_state), 0 to 4294967295.
    #[arg(long, env = "FOLDTRAIN_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Keep each class's rows in file order (shuffle=False).
    #[arg(long, env = "FOLDTRAIN_NO_SHUFFLE")]
    pub no_shuffle: bool,
    /// Where to write filename,label,fold.
    #[arg(long, env = "FOLDTRAIN_SPLIT_OUT")]
    pub out: PathBuf,
}

pub fn split(args: SplitArgs) -> CommandResult {
    let spec = DatasetSpec::try_from(&args.dataset)?;
    let loaded = load(
        &spec,
        LoadOptions {
            folds: Some(args.folds),
        },
        &Bar::new(),
    );
    if loaded.report.has_errors() {
        eprint!("{}", loaded.report.render(20));
        eprintln!("error: the data set has errors; no folds written");
        return Ok(ExitCode::FAILURE);
    }
    let dataset = loaded.dataset;
    let folds = dataset_folds(&dataset, args.folds, !args.no_shuffle, args.seed)?;
    write_folds(&args.out, &dataset, &folds)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let mut sizes = vec![0usize; args.folds as usize];
    for &f in &folds {
        sizes[f as usize] += 1;
    }
    eprintln!(
        "wrote {} rows in {} folds (sizes {:?}){} to {}",
        folds.len(),
        args.folds,
        sizes,
        if dataset.group_column.is_some() {
            ", grouped"
        } else {
            ""
        },
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn write_folds(path: &std::path::Path, dataset: &Dataset, folds: &[u32]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_path(path)?;
    writer.write_record(["filename", "label", "fold"])?;
    for (entry, fold) in dataset.train.iter().zip(folds) {
        let label = dataset.label_name(entry).unwrap_or_default();
        writer.write_record([entry.name.as_str(), label, &fold.to_string()])?;
    }
    writer.flush()?;
    Ok(())
}
