//! The parsed command line and its dispatch to one subcommand.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::{check_data, jobs, serve, split, submit, synth};

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
    /// Hash and upload a data set, submit a training job and print its id.
    Submit(Box<submit::SubmitArgs>),
    /// Follow a job live until it ends (exit 0 only if it succeeded).
    Watch(jobs::WatchArgs),
    /// Show one job in detail, or list every job.
    Status(jobs::StatusArgs),
    /// Cancel a job.
    Cancel(jobs::CancelArgs),
    /// Delete a finished job: its records, results and the stored files only it used.
    Delete(jobs::DeleteArgs),
    /// List the workers the coordinator knows.
    Workers(jobs::WorkersArgs),
    /// Download a job's results.
    Results(jobs::ResultsArgs),
    /// Train on this machine: an in-process coordinator and local worker processes,
    /// with the same results as a cluster.
    Run(Box<super::run::RunArgs>),
    /// Apply a finished job's ensemble (its results folder) to new images, on local
    /// workers; writes predictions.csv and probabilities.csv in input order.
    Predict(Box<super::predict::PredictArgs>),
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    let mut env = foldtrain_proto::runtime::telemetry::TelemetryEnv::from_process();
    // Only the server logs at info by default; the other commands speak through their
    // output and progress bars, which info lines from an embedded coordinator would bury.
    if !matches!(cli.command, Command::Serve(_)) && std::env::var_os("RUST_LOG").is_none() {
        env = env.with("RUST_LOG", "warn");
    }
    // Spans of the client commands (when OTEL_* is set) are told apart from the server's.
    let service = match cli.command {
        Command::Serve(_) | Command::Run(_) | Command::Predict(_) => "foldtrain-coordinator",
        _ => "foldtrain-cli",
    };
    let _telemetry = foldtrain_proto::runtime::telemetry::init_telemetry_with(service, &env);
    let result: CommandResult = match cli.command {
        Command::DefaultConfig => {
            print!("{}", foldtrain_proto::JobConfig::default().to_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckData(args) => check_data::check_data(args),
        Command::Split(args) => split::split(args),
        Command::Serve(args) => serve::serve(args),
        Command::Synth(args) => synth::synth(args),
        Command::Submit(args) => submit::submit(*args),
        Command::Watch(args) => jobs::watch(args),
        Command::Status(args) => jobs::status(args),
        Command::Cancel(args) => jobs::cancel(args),
        Command::Delete(args) => jobs::delete(args),
        Command::Workers(args) => jobs::workers(args),
        Command::Results(args) => jobs::results(args),
        Command::Run(args) => super::run::run(*args),
        Command::Predict(args) => super::predict::predict(*args),
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
