//! A blocking HTTP/1.1 client for tests that scrape `/metrics`, so they need no HTTP
//! client library. Built only for this crate's tests and under the `test-util` feature.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// `GET path` on `addr`, returning (status, headers, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
    http_request(addr, "GET", path)
}

/// `method path` on `addr` without a body, returning (status, headers, body).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> std::io::Result<(u16, String, String)> {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no end of headers in the response"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| bad("no status code in the response"))?;
    Ok((status, head.to_owned(), body.to_owned()))
}

/// A certificate authority and certificates made by `deploy/tls/make-certs.sh` (the
/// script operators use), in a folder of the caller's.
pub struct TestPki {
    pub dir: std::path::PathBuf,
}

impl TestPki {
    /// Runs the script in `dir` with `specs` (`NAME=HOST[,HOST...]`).
    pub fn make(dir: &std::path::Path, specs: &[&str]) -> Self {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tls/make-certs.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg(dir)
            .args(specs)
            .output()
            .expect("running deploy/tls/make-certs.sh (needs bash and openssl)");
        assert!(
            out.status.success(),
            "make-certs.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.join("ca.pem")
    }

    /// The TLS files of `name`: its certificate and key, and the CA.
    pub fn files(&self, name: &str) -> crate::runtime::tls::TlsFiles {
        crate::runtime::tls::TlsFiles {
            cert: Some(self.dir.join(format!("{name}.pem"))),
            key: Some(self.dir.join(format!("{name}.key"))),
            ca: Some(self.ca()),
        }
    }
}
