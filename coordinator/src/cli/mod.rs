//! The `foldtrain` command line: one subcommand per file.

mod check_data;
pub mod dataset_args;
mod progress;
pub mod serve;
mod split;
mod synth;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Train k-fold ensembles of image classifiers on a cluster of GPU machines.
#[derive(Debug, Parser)]
#[command(name = "foldtrain", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the resolved default job configuration (job.toml) with every default.
    DefaultConfig,
    /// Validate a data set: a report of every problem and the label distribution
    /// (exit 1 on errors).
    CheckData(check_data::CheckDataArgs),
    /// Assign every training row a fold, as scikit-learn's StratifiedKFold (or, with
    /// --group-column, StratifiedGroupKFold) would; writes filename,label,fold.
    Split(split::SplitArgs),
    /// Run the coordinator server: job state, fold scheduling and results.
    Serve(serve::ServeArgs),
    /// Write a synthetic capsule-endoscopy data set in the seed's layout.
    Synth(synth::SynthArgs),
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let _telemetry = foldtrain_proto::telemetry::init_telemetry("foldtrain-coordinator");
    let result: CommandResult = match cli.command {
        Command::DefaultConfig => {
            print!("{}", foldtrain_proto::JobConfig::default().to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckData(args) => check_data::check_data(args),
        Command::Split(args) => split::split(args),
        Command::Serve(args) => serve::serve(args),
        Command::Synth(args) => synth::synth(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The result every subcommand returns: an exit code, or an error to print.
pub type CommandResult = anyhow::Result<ExitCode>;
