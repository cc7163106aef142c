//! The coordinator server's configuration (`foldtrain serve`), independent of how it
//! was given (flags, environment, tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use foldtrain_proto::runtime::auth::validate_token;
use foldtrain_proto::{CHUNK_SIZE, MAX_MESSAGE_SIZE};

use crate::error::{CoordinatorError, Result};
use crate::server::UploadLimits;

/// Everything `start` needs to run a coordinator.
#[derive(Clone)]
pub struct ServeConfig {
    /// Address to listen on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Holds `state.sqlite`, `blobs/` and `jobs/`.
    pub data_dir: PathBuf,
    /// Bearer token every RPC must carry (and that the coordinator sends to workers).
    pub token: Option<String>,
    /// Allows listening on a non-loopback address without a token.
    pub insecure: bool,
    /// How long a worker counts as alive after a heartbeat.
    pub lease: Duration,
    /// Largest gRPC message accepted or sent.
    pub max_message_size: usize,
    /// Largest blob and longest pause an upload stream may have.
    pub uploads: UploadLimits,
    /// Where to serve Prometheus metrics at `/metrics`; None: nothing listens.
    pub metrics_listen: Option<SocketAddr>,
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("insecure", &self.insecure)
            .field("lease", &self.lease)
            .field("max_message_size", &self.max_message_size)
            .field("uploads", &self.uploads)
            .field("metrics_listen", &self.metrics_listen)
            .finish()
    }
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            data_dir: PathBuf::from("foldtrain-data"),
            token: None,
            insecure: false,
            lease: Duration::from_secs(15),
            max_message_size: MAX_MESSAGE_SIZE,
            uploads: UploadLimits::default(),
            metrics_listen: None,
        }
    }
}

impl ServeConfig {
    /// Rejects settings that would be unsafe or could not work, saying which and why.
    pub fn validate(&self) -> Result<()> {
        if self.token.is_none() && !self.insecure && !self.listen.ip().is_loopback() {
            return Err(CoordinatorError::Config(format!(
                "refusing to listen on non-loopback address {} without a token: pass --token-file, \
                 or --insecure to accept unauthenticated requests from the network",
                self.listen
            )));
        }
        if let Some(token) = &self.token {
            validate_token(token).map_err(|e| CoordinatorError::Config(e.to_string()))?;
        }
        if self.lease < Duration::from_millis(100) {
            return Err(CoordinatorError::Config(format!(
                "lease of {} ms is too short; use at least 100 ms",
                self.lease.as_millis()
            )));
        }
        // Room for one full chunk plus its framing.
        if self.max_message_size < CHUNK_SIZE + 64 * 1024 {
            return Err(CoordinatorError::Config(format!(
                "max message size {} cannot carry a {CHUNK_SIZE}-byte chunk",
                self.max_message_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token_or_insecure() {
        let mut c = ServeConfig {
            listen: "0.0.0.0:50051".parse().unwrap(),
            ..ServeConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0:50051")
                && err.contains("--token-file")
                && err.contains("--insecure"),
            "{err}"
        );
        c.insecure = true;
        c.validate().unwrap();
        c.insecure = false;
        c.token = Some("s3cret".into());
        c.validate().unwrap();
        ServeConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_are_named() {
        let c = ServeConfig {
            token: Some("has space".into()),
            ..ServeConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("printable"));
        let c = ServeConfig {
            lease: Duration::from_millis(5),
            ..ServeConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("5 ms"));
        assert!(
            !format!(
                "{:?}",
                ServeConfig {
                    token: Some("abc".into()),
                    ..ServeConfig::default()
                }
            )
            .contains("abc")
        );
    }
}
