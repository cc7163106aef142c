//! Bearer-token authentication shared by both servers and every client: the server-side
//! check (constant-time), the client-side interceptor that attaches the token, and the
//! one rule for what a token and a token file may hold.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;
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
        // Constant time in the contents, so the token cannot be guessed byte by byte.
        if bool::from(presented.ct_eq(expected)) {
            Ok(request)
        } else {
            Err(Status::unauthenticated(UNAUTHENTICATED_MESSAGE))
        }
    }
}

/// Why a token cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("the token is empty")]
    Empty,
    #[error("the token must be printable ASCII without spaces")]
    NotPrintable,
}

/// The rule every configured token follows, on both servers and every client.
pub fn validate_token(token: &str) -> Result<(), InvalidToken> {
    if token.is_empty() {
        Err(InvalidToken::Empty)
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Err(InvalidToken::NotPrintable)
    } else {
        Ok(())
    }
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
    #[error("token file {path}: {problem}")]
    Invalid { path: String, problem: InvalidToken },
}

/// Reads a token file (`--token-file`): its first line, trimmed, which must be a valid
/// token; an empty file is an error.
pub fn read_token_file(path: &Path) -> Result<String, TokenFileError> {
    let path_text = || path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path_text(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim().to_string();
    match validate_token(&token) {
        Ok(()) => Ok(token),
        Err(InvalidToken::Empty) => Err(TokenFileError::Empty { path: path_text() }),
        Err(problem) => Err(TokenFileError::Invalid {
            path: path_text(),
            problem,
        }),
    }
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
            Some("Bearer s3cre"),
            Some("Bearer "),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let status = auth.call(request(bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert_eq!(status.message(), UNAUTHENTICATED_MESSAGE);
        }
        assert!(BearerAuth::new(None).call(request(None)).is_ok());
    }

    #[test]
    fn a_token_is_printable_ascii_without_spaces() {
        validate_token("s3cret-~!").unwrap();
        assert_eq!(validate_token(""), Err(InvalidToken::Empty));
        for bad in ["a b", "tab\there", "caf\u{e9}", "nul\0"] {
            assert_eq!(
                validate_token(bad),
                Err(InvalidToken::NotPrintable),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_token_file_gives_its_trimmed_first_line_or_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret  \nignored\n").unwrap();
        assert_eq!(read_token_file(&file).unwrap(), "s3cret");

        let named = |text: &str| {
            std::fs::write(&file, text).unwrap();
            let err = read_token_file(&file).unwrap_err().to_string();
            assert!(err.contains(&file.display().to_string()), "{err}");
            err
        };
        assert!(named("\n").contains("is empty"));
        assert!(named("a b\n").contains("printable ASCII"));
        let missing = read_token_file(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(missing, TokenFileError::Read { .. }), "{missing}");
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
