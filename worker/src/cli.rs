//! The `foldtrain-worker` command line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use foldtrain_proto::runtime::auth::read_token_file;
use foldtrain_proto::runtime::metrics_http::metrics_url;
use foldtrain_proto::runtime::shutdown_signal;
use foldtrain_proto::runtime::telemetry::init_telemetry;

use crate::device::{Runtime, Slot, select_slots};
use crate::server::WorkerConfig;

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
    #[command(flatten)]
    pub tls: foldtrain_proto::runtime::tls::TlsFiles,
    /// Accept cleartext or unauthenticated calls on a non-loopback address, and send the
    /// token to an http:// coordinator beyond loopback unencrypted: only on a network you
    /// trust.
    #[arg(long, env = "FOLDTRAIN_INSECURE")]
    pub insecure: bool,
    /// Stable worker id (default: <hostname>-<random hex>).
    #[arg(long, env = "FOLDTRAIN_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Export a `batch` span for every Nth training batch (0: none; spans need OTEL_* set).
    #[arg(long, env = "FOLDTRAIN_BATCH_SPAN_EVERY", default_value_t = 0)]
    pub batch_span_every: u32,
    /// Report a fold's progress (loss, images/s, the batch reached) every Nth training
    /// batch and after the last; `foldtrain watch` and `status` show it.
    #[arg(long, env = "FOLDTRAIN_PROGRESS_EVERY", value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub progress_every: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9465; port 0 picks
    /// a free port, printed at startup). Unset: no metrics endpoint.
    #[arg(long, env = "FOLDTRAIN_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// On SIGTERM or Ctrl-C, seconds a running fold gets to hand back a checkpoint at the
    /// end of its current batch before it is stopped where it is.
    #[arg(
        long,
        env = "FOLDTRAIN_DRAIN_TIMEOUT",
        value_name = "SECS",
        default_value_t = crate::server::DEFAULT_DRAIN_TIMEOUT.as_secs()
    )]
    pub drain_timeout: u64,
    /// Print what libtorch sees (CUDA, GPUs, the slots this worker would serve) and exit.
    #[arg(long)]
    pub list_devices: bool,
}

impl WorkerArgs {
    /// The library configuration these flags describe, serving `slots`.
    pub fn into_config(self, slots: Vec<Slot>) -> anyhow::Result<WorkerConfig> {
        let coordinator = self.coordinator.context(
            "--coordinator (or FOLDTRAIN_COORDINATOR) is required to serve folds, \
             e.g. --coordinator http://10.0.0.5:50051",
        )?;
        let listen: SocketAddr = self.listen.parse().with_context(|| {
            format!(
                "--listen {:?} is not an address like 0.0.0.0:50052",
                self.listen
            )
        })?;
        let token = self
            .token_file
            .as_deref()
            .map(read_token_file)
            .transpose()?;
        let config = WorkerConfig {
            coordinator,
            listen,
            advertise: self.advertise,
            slots,
            cache_dir: self.cache_dir,
            token,
            tls: self.tls,
            insecure: self.insecure,
            worker_id: self.worker_id,
            metrics_listen: self.metrics_listen,
            drain_timeout: std::time::Duration::from_secs(self.drain_timeout),
            run_options: crate::train::RunOptions {
                batch_span_every: self.batch_span_every,
                progress_every: self.progress_every,
                ..crate::train::RunOptions::default()
            },
            ..WorkerConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

pub fn run(args: WorkerArgs) -> ExitCode {
    let _telemetry = init_telemetry("foldtrain-worker");
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
    match serve(args, slots) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: WorkerArgs, slots: Vec<Slot>) -> anyhow::Result<()> {
    let config = args.into_config(slots)?;
    let names: Vec<String> = config.slots.iter().map(|s| s.name()).collect();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let handle = crate::server::start(config, shutdown_signal()).await?;
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "foldtrain-worker {} listening on {} with slots {}",
            handle.worker_id(),
            handle.url(),
            names.join(",")
        )?;
        if let Some(addr) = handle.metrics_addr() {
            writeln!(stdout, "metrics on {}", metrics_url(addr))?;
        }
        stdout.flush()?;
        drop(stdout);
        handle.wait().await?;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> WorkerArgs {
        WorkerArgs::try_parse_from(std::iter::once("foldtrain-worker").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn flags_become_a_validated_config() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "  s3cret  \nignored\n").unwrap();
        let pki = foldtrain_proto::runtime::test_util::TestPki::make(dir.path(), &["w=gpu-box-1"]);
        let tls = pki.files("w");
        let path = |p: &Option<PathBuf>| p.as_ref().unwrap().to_str().unwrap().to_string();
        let (cert, key, ca) = (path(&tls.cert), path(&tls.key), path(&tls.ca));
        let config = parse(&[
            "--coordinator",
            "https://10.0.0.5:50051",
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            token.to_str().unwrap(),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca,
            "--worker-id",
            "gpu-box-1",
        ])
        .into_config(vec![Slot::Cuda(0), Slot::Cuda(1)])
        .unwrap();
        assert_eq!(config.token.as_deref(), Some("s3cret"));
        assert_eq!(config.tls, tls);
        assert_eq!(config.worker_id.as_deref(), Some("gpu-box-1"));
        assert_eq!(config.slots, vec![Slot::Cuda(0), Slot::Cuda(1)]);
        assert_eq!(config.listen.port(), 0);
        assert_eq!(config.metrics_listen, None);

        let config = parse(&[
            "--coordinator",
            "http://c:1",
            "--metrics-listen",
            "0.0.0.0:9465",
        ])
        .into_config(vec![Slot::Cpu])
        .unwrap();
        assert_eq!(config.metrics_listen, Some("0.0.0.0:9465".parse().unwrap()));
        let err = WorkerArgs::try_parse_from(["foldtrain-worker", "--metrics-listen", ":9465"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--metrics-listen") && err.contains(":9465"),
            "{err}"
        );
    }

    #[test]
    fn missing_or_bad_inputs_are_named() {
        let err = parse(&[])
            .into_config(vec![Slot::Cpu])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--coordinator"), "{err}");

        let err = parse(&["--coordinator", "http://c:1", "--listen", "nowhere"])
            .into_config(vec![Slot::Cpu])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--listen \"nowhere\""), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("empty-token");
        std::fs::write(&token, "\n").unwrap();
        let err = parse(&[
            "--coordinator",
            "http://c:1",
            "--token-file",
            token.to_str().unwrap(),
        ])
        .into_config(vec![Slot::Cpu])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("empty-token") && err.contains("is empty"),
            "{err}"
        );

        let err = parse(&["--coordinator", "c:1"])
            .into_config(vec![Slot::Cpu])
            .unwrap_err()
            .to_string();
        assert!(err.contains("coordinator URL \"c:1\""), "{err}");
    }

    #[test]
    fn beyond_loopback_it_needs_tls_and_a_token_or_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let token = token.to_str().unwrap();
        let wide = ["--coordinator", "http://c:1", "--listen", "0.0.0.0:0"];
        let err = parse(&wide)
            .into_config(vec![Slot::Cpu])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("0.0.0.0:0")
                && err.contains("--token-file")
                && err.contains("--tls-cert")
                && err.contains("--insecure"),
            "{err}"
        );
        let err = parse(&[&wide[..], &["--token-file", token]].concat())
            .into_config(vec![Slot::Cpu])
            .unwrap_err()
            .to_string();
        assert!(err.contains("without TLS"), "{err}");
        parse(&[&wide[..], &["--insecure"]].concat())
            .into_config(vec![Slot::Cpu])
            .unwrap();
        parse(&["--coordinator", "http://c:1", "--listen", "127.0.0.1:0"])
            .into_config(vec![Slot::Cpu])
            .unwrap();

        let pki = foldtrain_proto::runtime::test_util::TestPki::make(dir.path(), &["w=w"]);
        let tls = pki.files("w");
        let cert = tls.cert.as_ref().unwrap().to_str().unwrap();
        let key = tls.key.as_ref().unwrap().to_str().unwrap();
        let ca = tls.ca.as_ref().unwrap().to_str().unwrap();
        let err = parse(&[
            "--coordinator",
            "http://c:1",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--tls-ca",
            ca,
        ])
        .into_config(vec![Slot::Cpu])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("http://c:1") && err.contains("use https://"),
            "{err}"
        );
        let err = parse(&[
            "--coordinator",
            "https://c:1",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--advertise",
            "http://w:2",
        ])
        .into_config(vec![Slot::Cpu])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("--advertise http://w:2 must be https://"),
            "{err}"
        );
    }
}
