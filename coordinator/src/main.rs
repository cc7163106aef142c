//! `foldtrain`: the coordinator server and the command-line client.

use std::process::ExitCode;

use clap::Parser;
use foldtrain_coordinator::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    foldtrain_coordinator::cli::run(cli)
}
