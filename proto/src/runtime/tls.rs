//! TLS for every gRPC connection, from PEM files, the same three flags on every binary:
//! `--tls-cert` and `--tls-key` (this process's identity) and `--tls-ca` (the authority
//! that signs the other side's certificate).
//!
//! - A server with a certificate speaks TLS; given `--tls-ca` as well, it requires
//!   client certificates signed by that CA (mutual TLS).
//! - A client with `--tls-ca` verifies the server against it, and presents its own
//!   certificate when it has one. `https://` URLs need `--tls-ca`; an `http://` URL with
//!   TLS configured is refused rather than sent in cleartext.
//!
//! The files are read and parsed here, before rustls sees them, so that a bad file is
//! named with its flag.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// How long a TLS handshake may take before the connection is dropped, so that a peer
/// that connects and says nothing cannot hold a connection open.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A gRPC server builder with the settings both servers share: TLS when given, and
/// HTTP/2 and TCP keepalives, so that a peer that vanished without closing its
/// connection (a half-open connection) is noticed within about half a minute and the
/// streams on it end, which frees what they held (a worker's training slot).
pub fn server_builder(
    tls: Option<ServerTlsConfig>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_keepalive(Some(Duration::from_secs(30)));
    match tls {
        Some(tls) => builder.tls_config(tls),
        None => Ok(builder),
    }
}

/// A TLS file or flag combination that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{flag} {path}: {why}")]
    Pem {
        flag: &'static str,
        path: String,
        why: String,
    },
    #[error("{0}")]
    Flags(String),
    #[error("{url}: {why}")]
    Url { url: String, why: String },
}

/// The PEM files a process was given, from the TLS flags every binary and every client
/// command shares; each is optional, and [`server`](Self::server) and
/// [`client`](Self::client) say which combinations make sense.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TlsFiles {
    /// This process's certificate chain (PEM). A server with it speaks TLS; a client
    /// presents it to servers that require client certificates.
    #[arg(
        id = "tls_cert",
        long = "tls-cert",
        env = "FOLDTRAIN_TLS_CERT",
        value_name = "F",
        requires = "tls_key",
        help_heading = "TLS"
    )]
    pub cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(
        id = "tls_key",
        long = "tls-key",
        env = "FOLDTRAIN_TLS_KEY",
        value_name = "F",
        requires = "tls_cert",
        help_heading = "TLS"
    )]
    pub key: Option<PathBuf>,
    /// The certificate authority (PEM) that signs the other side's certificates: a
    /// client verifies servers against it; a server requires client certificates
    /// signed by it (mutual TLS).
    #[arg(
        id = "tls_ca",
        long = "tls-ca",
        env = "FOLDTRAIN_TLS_CA",
        value_name = "F",
        help_heading = "TLS"
    )]
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    /// True when no TLS file was given.
    pub fn is_empty(&self) -> bool {
        self.cert.is_none() && self.key.is_none() && self.ca.is_none()
    }

    /// The server side: TLS with this identity, and client certificates required when a
    /// CA is given. None when no certificate was given (plain HTTP/2).
    pub fn server(&self) -> Result<Option<ServerTlsConfig>, TlsError> {
        let Some(identity) = self.identity()? else {
            if self.ca.is_some() {
                return Err(TlsError::Flags(
                    "--tls-ca on a server requires client certificates, which needs TLS: \
                     add --tls-cert and --tls-key"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(ca) = self.ca_certificate()? {
            config = config.client_ca_root(ca);
        }
        Ok(Some(config))
    }

    /// The client side: verify servers against the CA, and present this identity when
    /// there is one. None when no CA was given (plain HTTP/2 only).
    pub fn client(&self) -> Result<Option<ClientTlsConfig>, TlsError> {
        let identity = self.identity()?;
        let Some(ca) = self.ca_certificate()? else {
            if identity.is_some() {
                return Err(TlsError::Flags(
                    "a client certificate (--tls-cert) is only sent over TLS: add --tls-ca \
                     with the authority that signed the server's certificate"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let mut config = ClientTlsConfig::new()
            .ca_certificate(ca)
            .timeout(HANDSHAKE_TIMEOUT);
        if let Some(identity) = identity {
            config = config.identity(identity);
        }
        Ok(Some(config))
    }

    /// The certificate and key, checked, when both are given; one without the other is
    /// an error.
    fn identity(&self) -> Result<Option<Identity>, TlsError> {
        match (&self.cert, &self.key) {
            (None, None) => Ok(None),
            (Some(_), None) => Err(TlsError::Flags("--tls-cert needs --tls-key".into())),
            (None, Some(_)) => Err(TlsError::Flags("--tls-key needs --tls-cert".into())),
            (Some(cert), Some(key)) => {
                let cert = read_certificates("--tls-cert", cert)?;
                let key = read_key("--tls-key", key)?;
                Ok(Some(Identity::from_pem(cert, key)))
            }
        }
    }

    fn ca_certificate(&self) -> Result<Option<Certificate>, TlsError> {
        self.ca
            .as_deref()
            .map(|ca| read_certificates("--tls-ca", ca).map(Certificate::from_pem))
            .transpose()
    }
}

/// Why a server must not listen on `listen` as configured: beyond loopback it needs TLS
/// and a token, unless the operator passed `--insecure`. None when it may.
pub fn exposure_problem(
    listen: std::net::SocketAddr,
    token: bool,
    tls: bool,
    insecure: bool,
) -> Option<String> {
    if insecure || listen.ip().is_loopback() || (token && tls) {
        return None;
    }
    let (lacks, add) = match (token, tls) {
        (false, false) => ("a token or TLS", "--token-file, --tls-cert and --tls-key"),
        (false, true) => ("a token", "--token-file"),
        _ => ("TLS", "--tls-cert and --tls-key"),
    };
    Some(format!(
        "refusing to listen on non-loopback address {listen} without {lacks}: add {add}, or \
         pass --insecure to accept cleartext, unauthenticated calls from the network"
    ))
}

/// Why a client must not call `url` as configured: over `http://` to a host beyond
/// loopback, a token would cross the network in cleartext (HTTP/2 sends the request,
/// token and all, before a TLS server can refuse it), unless the operator passed
/// `--insecure`. None when it may.
pub fn cleartext_token_problem(url: &str, token: bool, insecure: bool) -> Option<String> {
    let authority = url.strip_prefix("http://")?.split('/').next().unwrap_or("");
    if !token || insecure || is_loopback_host(host_of(authority)) {
        return None;
    }
    Some(format!(
        "refusing to send the token in cleartext to {url}: use https:// with --tls-ca, or \
         pass --insecure to send it over the network unencrypted anyway"
    ))
}

/// The host of `host:port`, `[v6]:port` or a bare host.
fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Applies `tls` to an endpoint for `url`: `https://` needs a TLS configuration, and
/// `http://` is refused when one is configured, so a typo cannot send in cleartext what
/// was meant to be encrypted.
pub fn secure_endpoint(
    endpoint: Endpoint,
    url: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, TlsError> {
    let bad = |why: &str| TlsError::Url {
        url: url.to_string(),
        why: why.to_string(),
    };
    match (url.starts_with("https://"), tls) {
        (true, Some(tls)) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| bad(&format!("TLS setup failed: {e}"))),
        (true, None) => Err(bad(
            "https:// needs --tls-ca (the authority that signed the server's certificate)",
        )),
        (false, Some(_)) => Err(bad(
            "TLS is configured (--tls-ca) but the URL is http://; use https://",
        )),
        (false, None) => Ok(endpoint),
    }
}

/// The PEM text of a file that holds at least one certificate.
fn read_certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(flag, path)?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| pem_error(flag, path, format!("not a PEM certificate: {e}")))?;
        count += 1;
    }
    if count == 0 {
        return Err(pem_error(
            flag,
            path,
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(pem)
}

/// The PEM text of a file that holds a private key (PKCS#8, PKCS#1 or SEC1).
fn read_key(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| pem_error(flag, path, format!("holds no PEM private key: {e}")))?;
    Ok(pem)
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

fn pem_error(flag: &'static str, path: &Path, why: String) -> TlsError {
    TlsError::Pem {
        flag,
        path: path.display().to_string(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_crosses_the_network_only_encrypted_or_on_request() {
        for url in [
            "http://10.0.0.2:50051",
            "http://coordinator.example:50051/",
            "http://[fd00::2]:50051",
        ] {
            let problem = cleartext_token_problem(url, true, false).unwrap();
            assert!(
                problem.starts_with(&format!("refusing to send the token in cleartext to {url}"))
                    && problem.contains("https://")
                    && problem.contains("--insecure"),
                "{problem}"
            );
            assert_eq!(cleartext_token_problem(url, true, true), None);
            assert_eq!(cleartext_token_problem(url, false, false), None);
        }
        for url in [
            "http://127.0.0.1:50051",
            "http://localhost:50051",
            "http://[::1]:50051",
            "https://10.0.0.2:50051",
        ] {
            assert_eq!(cleartext_token_problem(url, true, false), None, "{url}");
        }
    }

    fn files(cert: Option<&Path>, key: Option<&Path>, ca: Option<&Path>) -> TlsFiles {
        TlsFiles {
            cert: cert.map(Path::to_path_buf),
            key: key.map(Path::to_path_buf),
            ca: ca.map(Path::to_path_buf),
        }
    }

    #[test]
    fn flag_combinations_that_cannot_work_say_what_to_add() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        let only_cert = files(Some(&p), None, None);
        assert!(
            only_cert
                .server()
                .unwrap_err()
                .to_string()
                .contains("--tls-key")
        );
        let only_key = files(None, Some(&p), None);
        assert!(
            only_key
                .client()
                .unwrap_err()
                .to_string()
                .contains("--tls-cert")
        );
        let only_ca = files(None, None, Some(&p));
        let err = only_ca.server().unwrap_err().to_string();
        assert!(err.contains("--tls-cert and --tls-key"), "{err}");
        assert!(TlsFiles::default().server().unwrap().is_none());
        assert!(TlsFiles::default().client().unwrap().is_none());
    }

    #[test]
    fn unreadable_and_malformed_files_are_named_with_their_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = files(None, None, Some(&missing))
            .client()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tls-ca") && err.contains("missing.pem"),
            "{err}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let err = files(None, None, Some(&garbage))
            .client()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tls-ca")
                && err.contains("garbage.pem")
                && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = files(Some(&garbage), Some(&garbage), None)
            .server()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tls-cert") && err.contains("garbage.pem"),
            "{err}"
        );
    }

    #[test]
    fn urls_and_tls_must_agree() {
        let endpoint = || Endpoint::from_static("http://127.0.0.1:1");
        let tls = ClientTlsConfig::new();
        secure_endpoint(endpoint(), "http://127.0.0.1:1", None).unwrap();
        let err = secure_endpoint(endpoint(), "https://h:1", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("https://h:1") && err.contains("--tls-ca"),
            "{err}"
        );
        let err = secure_endpoint(endpoint(), "http://h:1", Some(&tls))
            .unwrap_err()
            .to_string();
        assert!(err.contains("use https://"), "{err}");
    }
}
