//! The `foldtrain-worker` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::device::{Runtime, select_slots};

/// Train folds for a foldtrain coordinator, one fold per GPU.
#[derive(Debug, Parser)]
#[command(name = "foldtrain-worker", version, about, long_about = None)]
pub struct WorkerArgs {
    /// Coordinator to register with, e.g. http://10.0.0.5:50051.
    #[arg(long, env = "FOLDTRAIN_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Address the worker's own gRPC service listens on.
    #[arg(long, env = "FOLDTRAIN_WORKER_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// URL the coordinator should use to reach this worker (defaults to the listen address).
    #[arg(long, env = "FOLDTRAIN_ADVERTISE")]
    pub advertise: Option<String>,
    /// GPU indices to serve, one fold each (default: every visible GPU).
    #[arg(
        long,
        env = "FOLDTRAIN_GPUS",
        value_delimiter = ',',
        conflicts_with = "cpu"
    )]
    pub gpus: Option<Vec<usize>>,
    /// Train on the CPU even when GPUs are present.
    #[arg(long, env = "FOLDTRAIN_CPU")]
    pub cpu: bool,
    /// Where downloaded images are cached, by content hash.
    #[arg(long, env = "FOLDTRAIN_CACHE_DIR", default_value = "foldtrain-cache")]
    pub cache_dir: PathBuf,
    /// File holding the bearer token the coordinator requires.
    #[arg(long, env = "FOLDTRAIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print what libtorch sees (CUDA, GPUs, the slots this worker would serve) and exit.
    #[arg(long)]
    pub list_devices: bool,
}

pub fn run(args: WorkerArgs) -> ExitCode {
    let _telemetry = foldtrain_proto::telemetry::init_telemetry("foldtrain-worker");
    let runtime = Runtime::detect();
    let slots = match select_slots(args.gpus.as_deref(), args.cpu, &runtime) {
        Ok(slots) => slots,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.list_devices {
        println!(
            "cuda_available={} cuda_devices={} cudnn={} libtorch_cuda_loaded={}",
            runtime.cuda_available,
            runtime.cuda_devices,
            runtime.cudnn_available,
            runtime.cuda_library_loaded
        );
        for slot in &slots {
            println!("slot {}", slot.name());
        }
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "error: serving folds needs the worker service, which this build does not include yet"
    );
    ExitCode::FAILURE
}
