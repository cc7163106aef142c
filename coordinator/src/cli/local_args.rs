//! The flags of the commands that run on this machine with local workers (`run`,
//! `predict`): how many workers, on which device, where their state goes, and quiet.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct LocalArgs {
    /// Local workers to start [default: one per visible GPU; else one CPU worker per
    /// core, no more than the folds (or shards) nor than fit in memory].
    #[arg(long, env = "FOLDTRAIN_WORKERS")]
    pub workers: Option<usize>,
    /// Run on the CPU even when GPUs are visible.
    #[arg(long, env = "FOLDTRAIN_CPU")]
    pub cpu: bool,
    /// Keep the coordinator's state (job database, blobs, worker caches and logs) here
    /// instead of in a temporary directory removed at the end.
    #[arg(long, env = "FOLDTRAIN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// No progress bars or epoch lines on stderr.
    #[arg(long, short, env = "FOLDTRAIN_QUIET")]
    pub quiet: bool,
}
