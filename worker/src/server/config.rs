//! The worker server's configuration (`foldtrain-worker`), independent of how it was
//! given (flags, environment, tests).

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use foldtrain_proto::runtime::auth::validate_token;
use foldtrain_proto::runtime::tls::{TlsError, TlsFiles, exposure_problem, secure_endpoint};
use foldtrain_proto::{CHUNK_SIZE, MAX_MESSAGE_SIZE};

use super::WorkerError;
use crate::device::Slot;
use crate::train::RunOptions;

/// Everything [`start`](super::start) needs to run a worker.
#[derive(Clone)]
pub struct WorkerConfig {
    /// The coordinator's URL, e.g. `http://10.0.0.5:50051`.
    pub coordinator: String,
    /// Address the worker's own gRPC service listens on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// URL the coordinator should call; defaults to `http://<bound address>` (with the
    /// host name in place of an unspecified address such as 0.0.0.0).
    pub advertise: Option<String>,
    /// The devices this worker trains on, one fold each.
    pub slots: Vec<Slot>,
    /// Downloaded images, one file per blob named by its BLAKE3 hex hash.
    pub cache_dir: PathBuf,
    /// Bearer token presented to the coordinator (its workers' token). Calls to this
    /// worker need the call token it made for its registration instead.
    pub token: Option<String>,
    /// The worker's certificate and key (its server identity, and its client identity
    /// towards the coordinator), and the CA both sides' certificates are signed by.
    pub tls: TlsFiles,
    /// Allows listening on a non-loopback address without TLS or a token.
    pub insecure: bool,
    /// Stable identity across re-registrations; default `<hostname>-<random hex>`.
    pub worker_id: Option<String>,
    pub run_options: RunOptions,
    /// Largest gRPC message accepted or sent.
    pub max_message_size: usize,
    /// Where to serve Prometheus metrics at `/metrics`; None: nothing listens.
    pub metrics_listen: Option<SocketAddr>,
    /// On shutdown, how long running folds get to hand back a checkpoint at the end of
    /// their current batch before they are stopped where they are (and count as lost).
    pub drain_timeout: Duration,
}

/// The default `drain_timeout`: a DenseNet121 batch takes seconds even on a CPU, and a
/// checkpoint streams in a few more.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("coordinator", &self.coordinator)
            .field("listen", &self.listen)
            .field("advertise", &self.advertise)
            .field("slots", &self.slots)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("worker_id", &self.worker_id)
            .field("run_options", &self.run_options)
            .field("max_message_size", &self.max_message_size)
            .field("metrics_listen", &self.metrics_listen)
            .field("drain_timeout", &self.drain_timeout)
            .finish()
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            coordinator: "http://127.0.0.1:50051".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise: None,
            slots: vec![Slot::Cpu],
            cache_dir: PathBuf::from("foldtrain-cache"),
            token: None,
            tls: TlsFiles::default(),
            insecure: false,
            worker_id: None,
            run_options: RunOptions::default(),
            max_message_size: MAX_MESSAGE_SIZE,
            metrics_listen: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

impl WorkerConfig {
    /// Rejects settings that could not work, naming the setting and the value.
    pub fn validate(&self) -> Result<(), WorkerError> {
        let bad = |why: String| Err(WorkerError::Config(why));
        check_url("coordinator", &self.coordinator)?;
        if let Some(url) = &self.advertise {
            check_url("advertise", url)?;
        }
        if self.slots.is_empty() {
            return bad("no slots to train on".into());
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if self.slots[..i].contains(slot) {
                return bad(format!("slot {} is listed twice", slot.name()));
            }
        }
        if let Some(token) = &self.token {
            validate_token(token).map_err(|e| WorkerError::Config(e.to_string()))?;
        }
        self.check_exposure()?;
        if let Some(id) = &self.worker_id
            && (id.is_empty() || id.chars().any(char::is_whitespace))
        {
            return bad(format!(
                "worker id {id:?} must be non-empty and without spaces"
            ));
        }
        if self.max_message_size < CHUNK_SIZE + 64 * 1024 {
            return bad(format!(
                "max message size {} cannot carry a {CHUNK_SIZE}-byte chunk",
                self.max_message_size
            ));
        }
        if self.run_options.progress_every == 0 {
            return bad("progress_every must be at least 1".into());
        }
        Ok(())
    }
}

impl WorkerConfig {
    /// Beyond loopback, anyone who reaches the port could make the worker train and read
    /// what it streams: require TLS and a token there, unless `insecure`. With TLS, the
    /// advertised URL must be `https://`, since the coordinator will speak TLS to it.
    fn check_exposure(&self) -> Result<(), WorkerError> {
        if let Some(problem) = exposure_problem(
            self.listen,
            self.token.is_some(),
            self.tls.cert.is_some(),
            self.insecure,
        ) {
            return Err(WorkerError::Config(problem));
        }
        if self.tls.cert.is_some()
            && let Some(url) = &self.advertise
            && !url.starts_with("https://")
        {
            return Err(WorkerError::Config(format!(
                "--advertise {url} must be https:// when the worker serves TLS (--tls-cert)"
            )));
        }
        let config = |e: TlsError| WorkerError::Config(e.to_string());
        self.tls.server().map_err(config)?;
        // The coordinator URL and the client side of TLS must agree (https with a CA).
        let client = self.tls.client().map_err(config)?;
        if let Ok(endpoint) = tonic::transport::Endpoint::from_shared(self.coordinator.clone()) {
            secure_endpoint(endpoint, &self.coordinator, client.as_ref()).map_err(config)?;
        }
        Ok(())
    }
}

fn check_url(what: &str, url: &str) -> Result<(), WorkerError> {
    let ok = (url.starts_with("http://") || url.starts_with("https://"))
        && url
            .parse::<tonic::transport::Uri>()
            .is_ok_and(|u| u.host().is_some());
    if ok {
        Ok(())
    } else {
        Err(WorkerError::Config(format!(
            "{what} URL {url:?} is not valid; expected e.g. http://10.0.0.5:50051"
        )))
    }
}

/// This machine's host name, or `localhost` when it cannot be read.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// `<hostname>-<6 random hex digits>`: random rather than the pid, so several workers in
/// one process (tests, `foldtrain run`) never share an id.
pub fn default_worker_id() -> String {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{}-{:06x}", hostname(), random & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_named() {
        WorkerConfig::default().validate().unwrap();
        let err = |c: WorkerConfig| c.validate().unwrap_err().to_string();
        let e = err(WorkerConfig {
            coordinator: "10.0.0.5:50051".into(),
            ..WorkerConfig::default()
        });
        assert!(e.contains("coordinator URL \"10.0.0.5:50051\""), "{e}");
        let e = err(WorkerConfig {
            advertise: Some("http://".into()),
            ..WorkerConfig::default()
        });
        assert!(e.contains("advertise URL"), "{e}");
        let e = err(WorkerConfig {
            slots: vec![Slot::Cuda(1), Slot::Cuda(1)],
            ..WorkerConfig::default()
        });
        assert!(e.contains("cuda:1 is listed twice"), "{e}");
        let e = err(WorkerConfig {
            token: Some("a b".into()),
            ..WorkerConfig::default()
        });
        assert!(e.contains("printable"), "{e}");
        assert!(
            !format!(
                "{:?}",
                WorkerConfig {
                    token: Some("s3cret".into()),
                    ..WorkerConfig::default()
                }
            )
            .contains("s3cret")
        );
    }

    #[test]
    fn default_ids_differ_within_one_process() {
        let (a, b) = (default_worker_id(), default_worker_id());
        assert!(a.starts_with(&hostname()), "{a}");
        assert_ne!(a, b);
    }
}
