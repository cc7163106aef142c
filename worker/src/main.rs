//! `foldtrain-worker`: trains folds for a coordinator, one per GPU.

use std::process::ExitCode;

use clap::Parser;
use foldtrain_worker::cli::WorkerArgs;

fn main() -> ExitCode {
    let args = WorkerArgs::parse();
    foldtrain_worker::cli::run(args)
}
