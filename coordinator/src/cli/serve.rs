//! `foldtrain serve`: run the coordinator until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use foldtrain_proto::runtime::auth::read_token_file;
use foldtrain_proto::runtime::metrics_http::metrics_url;
use foldtrain_proto::runtime::shutdown_signal;
use foldtrain_proto::runtime::tls::TlsFiles;

use super::CommandResult;
use crate::config::ServeConfig;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, env = "FOLDTRAIN_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Directory holding the job database, blobs and results.
    #[arg(long, env = "FOLDTRAIN_DATA_DIR", default_value = "foldtrain-data")]
    pub data_dir: PathBuf,
    /// File holding the users' bearer token: submit, status, watch, cancel, results.
    #[arg(long, env = "FOLDTRAIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// File holding the workers' bearer token: register, heartbeat, blob downloads.
    /// Unset: workers present the users' token, and so could submit jobs.
    #[arg(long, env = "FOLDTRAIN_WORKER_TOKEN_FILE", value_name = "F")]
    pub worker_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsFiles,
    /// Accept cleartext or unauthenticated requests on a non-loopback address.
    #[arg(long, env = "FOLDTRAIN_INSECURE")]
    pub insecure: bool,
    /// Milliseconds a worker stays counted as alive after its last heartbeat.
    #[arg(long, env = "FOLDTRAIN_LEASE_MS", default_value_t = 15_000)]
    pub lease_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; port 0 picks
    /// a free port, printed at startup). Unset: no metrics endpoint.
    #[arg(long, env = "FOLDTRAIN_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl ServeArgs {
    /// The library configuration these flags describe.
    pub fn into_config(self) -> anyhow::Result<ServeConfig> {
        let token = self
            .token_file
            .as_deref()
            .map(read_token_file)
            .transpose()?;
        let worker_token = self
            .worker_token_file
            .as_deref()
            .map(read_token_file)
            .transpose()?;
        let config = ServeConfig {
            listen: self.listen,
            data_dir: self.data_dir,
            token,
            worker_token,
            tls: self.tls,
            insecure: self.insecure,
            lease: Duration::from_millis(self.lease_ms),
            metrics_listen: self.metrics_listen,
            ..ServeConfig::default()
        };
        config.validate()?;
        Ok(config)
    }
}

pub fn serve(args: ServeArgs) -> CommandResult {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let handle = crate::server::start(config, shutdown_signal()).await?;
        println!("foldtrain coordinator listening on {}", handle.url());
        if let Some(addr) = handle.metrics_addr() {
            println!("metrics on {}", metrics_url(addr));
        }
        handle.wait().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn flags_become_a_validated_config() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let pki = foldtrain_proto::runtime::test_util::TestPki::make(dir.path(), &["c=localhost"]);
        let tls = pki.files("c");
        let w = Wrapper::try_parse_from([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            token.to_str().unwrap(),
            "--tls-cert",
            tls.cert.as_ref().unwrap().to_str().unwrap(),
            "--tls-key",
            tls.key.as_ref().unwrap().to_str().unwrap(),
            "--tls-ca",
            tls.ca.as_ref().unwrap().to_str().unwrap(),
            "--lease-ms",
            "500",
        ])
        .unwrap();
        let c = w.args.into_config().unwrap();
        assert_eq!(c.token.as_deref(), Some("s3cret"));
        assert_eq!(c.tls, tls);
        assert_eq!(c.lease, Duration::from_millis(500));
        assert_eq!(c.metrics_listen, None);

        let w = Wrapper::try_parse_from(["serve", "--listen", "0.0.0.0:0"]).unwrap();
        let err = w.args.into_config().unwrap_err().to_string();
        assert!(
            err.contains("without a token or TLS") && err.contains("--insecure"),
            "{err}"
        );
        let w = Wrapper::try_parse_from(["serve", "--listen", "0.0.0.0:0", "--insecure"]).unwrap();
        w.args.into_config().unwrap();

        std::fs::write(&token, "\n").unwrap();
        let err = read_token_file(&token).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
    }

    #[test]
    fn metrics_listen_is_an_address_named_on_error() {
        let w = Wrapper::try_parse_from(["serve", "--metrics-listen", "127.0.0.1:0"]).unwrap();
        let c = w.args.into_config().unwrap();
        assert_eq!(c.metrics_listen, Some("127.0.0.1:0".parse().unwrap()));

        let err = Wrapper::try_parse_from(["serve", "--metrics-listen", "localhost:nope"])
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--metrics-listen") && err.contains("localhost:nope"),
            "{err}"
        );
    }
}
