//! The `foldtrain` command line: one subcommand per file, parsing flags and printing;
//! talking to a coordinator is the `client` module's work.

mod check_data;
pub mod client_args;
mod command;
pub mod config_args;
mod cpu_layout;
pub mod dataset_args;
pub mod draw;
pub mod job_json;
pub(crate) mod jobs;
mod local_args;
pub mod local_workers;
mod predict;
pub mod pretrained_file;
mod progress;
mod run;
pub mod serve;
mod split;
mod submit;
pub mod summary_table;
mod synth;
mod time_breakdown;
pub mod watch;

pub use client_args::ClientArgs;
pub use command::{Cli, Command, CommandResult, run};
pub use config_args::{ConfigArgs, ConfigError};
pub use draw::Draw;
pub use progress::UploadBar;
pub use watch::{WatchOptions, watch_job};
