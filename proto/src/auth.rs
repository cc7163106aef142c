//! Bearer-token authentication shared by both servers and every client: the server-side
//! check (constant-time) and the client-side interceptor that attaches the token.

use std::sync::Arc;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::ProtoError;

/// The message of every rejected request; it never says which part was wrong.
pub const UNAUTHENTICATED_MESSAGE: &str = "missing or invalid bearer token";

/// Checks `authorization: Bearer <token>` on each request; lets everything through
/// when no token is configured.
#[derive(Clone, Default)]
pub struct BearerAuth {
    token: Option<Arc<[u8]>>,
}

impl BearerAuth {
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.map(|t| Arc::from(t.as_bytes())),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token else {
            return Ok(request);
        };
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes)
            .unwrap_or_default();
        if constant_time_eq(presented, expected) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(UNAUTHENTICATED_MESSAGE))
        }
    }
}

/// Equality whose running time depends only on the lengths, not on where the inputs
/// first differ, so the token cannot be guessed byte by byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("reading token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path} is empty")]
    Empty { path: String },
}

/// Reads a token file (`--token-file`): its first line, trimmed; an empty file is an error.
pub fn read_token_file(path: &std::path::Path) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(token)
}

/// Client side: adds `authorization: Bearer <token>` to every outgoing request.
#[derive(Clone, Default)]
pub struct BearerToken {
    header: Option<AsciiMetadataValue>,
}

impl BearerToken {
    /// Fails when the token cannot travel in a header (control characters, non-ASCII).
    pub fn new(token: Option<&str>) -> Result<Self, ProtoError> {
        let header = token
            .map(|t| {
                format!("Bearer {t}").parse().map_err(|_| {
                    ProtoError::invalid("token", "contains characters not allowed in a header")
                })
            })
            .transpose()?;
        Ok(Self { header })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(header: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(h) = header {
            r.metadata_mut().insert("authorization", h.parse().unwrap());
        }
        r
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let mut auth = BearerAuth::new(Some("s3cret"));
        assert!(auth.call(request(Some("Bearer s3cret"))).is_ok());
        for bad in [
            None,
            Some("Bearer s3creT"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let status = auth.call(request(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert_eq!(status.message(), UNAUTHENTICATED_MESSAGE);
        }
        assert!(BearerAuth::new(None).call(request(None)).is_ok());
        assert!(constant_time_eq(b"", b"") && !constant_time_eq(b"a", b""));
    }

    #[test]
    fn the_client_interceptor_attaches_what_the_server_accepts() {
        let mut attach = BearerToken::new(Some("s3cret")).unwrap();
        let request = attach.call(Request::new(())).unwrap();
        assert!(BearerAuth::new(Some("s3cret")).call(request).is_ok());

        let bare = BearerToken::new(None)
            .unwrap()
            .call(Request::new(()))
            .unwrap();
        assert!(bare.metadata().get("authorization").is_none());

        let err = BearerToken::new(Some("bad\ntoken")).err().unwrap();
        assert!(err.to_string().contains("token"), "{err}");
    }
}
