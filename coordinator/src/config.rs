//! The coordinator server's configuration (`foldtrain serve`), independent of how it
//! was given (flags, environment, tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use foldtrain_proto::runtime::auth::{Role, RoleTokens, validate_token};
use foldtrain_proto::runtime::tls::{TlsFiles, exposure_problem};
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
    /// The users' bearer token: submit, watch, cancel, results, uploads.
    pub token: Option<String>,
    /// The workers' bearer token: register, heartbeat, blob downloads. None: workers use
    /// the users' token.
    pub worker_token: Option<String>,
    /// The server's certificate and key (TLS), and the CA its clients' certificates
    /// must be signed by (mutual TLS); also what the coordinator presents to workers
    /// and verifies them against when it calls them.
    pub tls: TlsFiles,
    /// Allows listening on a non-loopback address without TLS or a token.
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
            .field(
                "worker_token",
                &self.worker_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
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
            worker_token: None,
            tls: TlsFiles::default(),
            insecure: false,
            lease: Duration::from_secs(15),
            max_message_size: MAX_MESSAGE_SIZE,
            uploads: UploadLimits::default(),
            metrics_listen: None,
        }
    }
}

impl ServeConfig {
    /// The credentials each role of the `Coordinator` service takes: the workers' token
    /// for workers, or the users' when there is no workers' token.
    pub fn role_tokens(&self) -> RoleTokens {
        RoleTokens::default()
            .with(Role::User, self.token.as_deref())
            .with(
                Role::Worker,
                self.worker_token.as_deref().or(self.token.as_deref()),
            )
    }

    /// Rejects settings that would be unsafe or could not work, saying which and why.
    pub fn validate(&self) -> Result<()> {
        if let Some(problem) = exposure_problem(
            self.listen,
            self.token.is_some(),
            self.tls.cert.is_some(),
            self.insecure,
        ) {
            return Err(CoordinatorError::Config(problem));
        }
        self.tls
            .server()
            .map_err(|e| CoordinatorError::Config(e.to_string()))?;
        for token in [&self.token, &self.worker_token].into_iter().flatten() {
            validate_token(token).map_err(|e| CoordinatorError::Config(e.to_string()))?;
        }
        match (&self.token, &self.worker_token) {
            (None, Some(_)) => {
                return Err(CoordinatorError::Config(
                    "--worker-token-file needs --token-file: users would need no credential \
                     while workers do"
                        .into(),
                ));
            }
            (Some(user), Some(worker)) if user == worker => {
                return Err(CoordinatorError::Config(
                    "the workers' token (--worker-token-file) must differ from the users' \
                     (--token-file), or a worker's credential could submit jobs"
                        .into(),
                ));
            }
            _ => {}
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
    fn non_loopback_needs_tls_and_a_token_or_insecure() {
        let mut c = ServeConfig {
            listen: "0.0.0.0:50051".parse().unwrap(),
            ..ServeConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("0.0.0.0:50051")
                && err.contains("--token-file")
                && err.contains("--tls-cert")
                && err.contains("--insecure"),
            "{err}"
        );
        c.insecure = true;
        c.validate().unwrap();
        c.insecure = false;
        c.token = Some("s3cret".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("without TLS") && !err.contains("--token-file"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let pki = foldtrain_proto::runtime::test_util::TestPki::make(dir.path(), &["c=localhost"]);
        c.tls = pki.files("c");
        c.validate().unwrap();
        c.token = None;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("without a token") && !err.contains("--tls-cert"),
            "{err}"
        );
        ServeConfig::default().validate().unwrap();
    }

    #[test]
    fn workers_take_their_own_token_or_the_users() {
        let c = ServeConfig {
            worker_token: Some("w".into()),
            ..ServeConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("needs --token-file")
        );
        let c = ServeConfig {
            token: Some("same".into()),
            worker_token: Some("same".into()),
            ..ServeConfig::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("must differ")
        );
        let separate = ServeConfig {
            token: Some("u".into()),
            worker_token: Some("w".into()),
            ..ServeConfig::default()
        };
        separate.validate().unwrap();
        let tokens = separate.role_tokens();
        tokens.check(&[Role::Worker], "Heartbeat", b"w").unwrap();
        tokens
            .check(&[Role::Worker], "Heartbeat", b"u")
            .unwrap_err();
        tokens.check(&[Role::User], "SubmitJob", b"w").unwrap_err();
        let one = ServeConfig {
            token: Some("u".into()),
            ..ServeConfig::default()
        };
        one.role_tokens()
            .check(&[Role::Worker], "Heartbeat", b"u")
            .unwrap();
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
