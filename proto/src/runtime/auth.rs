//! Bearer-token authentication shared by both servers and every client: the server-side
//! checks (constant-time; one token for a whole service, or one per role and method),
//! the client-side interceptor that attaches the token, and the one rule for what a
//! token and a token file may hold.

use std::path::Path;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};
use tonic::metadata::AsciiMetadataValue;
use tonic::server::NamedService;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::ProtoError;

/// The message of every rejected request; it never says which part was wrong.
pub const UNAUTHENTICATED_MESSAGE: &str = "missing or invalid bearer token";

/// Who holds a credential, and so which calls it may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// People and their tools: submit, watch, cancel, results, uploads.
    User,
    /// Worker nodes: register, heartbeat, download blobs.
    Worker,
    /// The coordinator, calling a worker's `TrainFold` and `PredictShard`.
    Coordinator,
}

impl Role {
    fn holder(self) -> &'static str {
        match self {
            Role::User => "a user's",
            Role::Worker => "a worker's",
            Role::Coordinator => "the coordinator's",
        }
    }
}

/// The token of each role a server accepts. A role with no token is open (loopback
/// set-ups without credentials); a role may accept several tokens.
#[derive(Clone, Default)]
pub struct RoleTokens {
    tokens: Vec<(Role, Arc<[u8]>)>,
}

impl std::fmt::Debug for RoleTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let roles: Vec<Role> = self.tokens.iter().map(|(role, _)| *role).collect();
        f.debug_struct("RoleTokens").field("roles", &roles).finish()
    }
}

impl RoleTokens {
    /// Adds `token`, when there is one, as a credential of `role`.
    pub fn with(mut self, role: Role, token: Option<&str>) -> Self {
        if let Some(token) = token {
            self.tokens.push((role, Arc::from(token.as_bytes())));
        }
        self
    }

    /// Whether `presented` belongs to one of the `allowed` roles; a role without a token
    /// is open. The error says whether the credential is unknown or another role's.
    pub fn check(&self, allowed: &[Role], method: &str, presented: &[u8]) -> Result<(), Status> {
        let open = allowed
            .iter()
            .any(|role| !self.tokens.iter().any(|(r, _)| r == role));
        if open {
            return Ok(());
        }
        // Every token is compared, in constant time, whatever matched first.
        let matches = |token: &[u8]| bool::from(presented.ct_eq(token));
        let mut admitted = false;
        let mut held = None;
        for (role, token) in &self.tokens {
            let matched = matches(token);
            admitted |= matched && allowed.contains(role);
            if matched && held.is_none() {
                held = Some(*role);
            }
        }
        if admitted {
            return Ok(());
        }
        match held {
            Some(held) => Err(Status::permission_denied(format!(
                "{method} needs {} credential; this is {}",
                describe(allowed),
                held.holder()
            ))),
            None => Err(Status::unauthenticated(UNAUTHENTICATED_MESSAGE)),
        }
    }
}

/// "a user's", "a user's or a worker's".
fn describe(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.holder())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A gRPC service behind a check per method: `policy` names the roles that may call each
/// method (none: no such method), and the bearer token must be one of theirs.
#[derive(Clone)]
pub struct RoleGate<S> {
    inner: S,
    tokens: Arc<RoleTokens>,
    policy: fn(&str) -> &'static [Role],
}

impl<S> RoleGate<S> {
    pub fn new(inner: S, tokens: RoleTokens, policy: fn(&str) -> &'static [Role]) -> Self {
        Self {
            inner,
            tokens: Arc::new(tokens),
            policy,
        }
    }

    fn admit<B>(&self, request: &http::Request<B>) -> Result<(), Status> {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default();
        let allowed = (self.policy)(method);
        if allowed.is_empty() {
            return Err(Status::unimplemented(format!("no method {method:?}")));
        }
        let presented = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes)
            .unwrap_or_default();
        self.tokens.check(allowed, method, presented)
    }
}

impl<S, B> Service<http::Request<B>> for RoleGate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match self.admit(&request) {
            Ok(()) => Box::pin(self.inner.call(request)),
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

impl<S: NamedService> NamedService for RoleGate<S> {
    const NAME: &'static str = S::NAME;
}

/// The roles that may call each method of the `Coordinator` service. Workers ask which
/// blobs are missing to name an image the coordinator lacks.
pub fn coordinator_policy(method: &str) -> &'static [Role] {
    match method {
        "RegisterWorker" | "Heartbeat" | "DownloadBlobs" => &[Role::Worker],
        "MissingBlobs" => &[Role::User, Role::Worker],
        "UploadBlobs" | "SubmitJob" | "GetJob" | "WatchJob" | "CancelJob" | "ListJobs"
        | "DownloadArtifact" | "ListArtifacts" | "ListWorkers" | "DeleteJob" => &[Role::User],
        _ => &[],
    }
}

/// The roles that may call each method of the `Worker` service.
pub fn worker_policy(method: &str) -> &'static [Role] {
    match method {
        "TrainFold" | "PredictShard" => &[Role::Coordinator],
        _ => &[],
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

    /// The RPC names a .proto file declares.
    fn rpcs(proto: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(proto);
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .map(|l| l.split('(').next().unwrap().trim().to_string())
            .collect()
    }

    #[test]
    fn every_rpc_of_both_services_needs_a_role() {
        let coordinator = rpcs("foldtrain/v1/coordinator.proto");
        assert_eq!(coordinator.len(), 14, "{coordinator:?}");
        for method in &coordinator {
            assert!(
                !coordinator_policy(method).is_empty(),
                "{method} has no role"
            );
        }
        let worker = rpcs("foldtrain/v1/worker.proto");
        assert_eq!(worker.len(), 2, "{worker:?}");
        for method in &worker {
            assert_eq!(worker_policy(method), [Role::Coordinator], "{method}");
        }
        assert!(coordinator_policy("Nope").is_empty());
    }

    #[test]
    fn each_role_takes_only_its_own_tokens() {
        let tokens = RoleTokens::default()
            .with(Role::User, Some("user-t"))
            .with(Role::Worker, Some("worker-t"));
        tokens.check(&[Role::User], "SubmitJob", b"user-t").unwrap();
        tokens
            .check(&[Role::Worker], "Heartbeat", b"worker-t")
            .unwrap();
        let wrong_role = tokens
            .check(&[Role::User], "SubmitJob", b"worker-t")
            .unwrap_err();
        assert_eq!(wrong_role.code(), tonic::Code::PermissionDenied);
        assert!(
            wrong_role
                .message()
                .contains("SubmitJob needs a user's credential; this is a worker's"),
            "{}",
            wrong_role.message()
        );
        let wrong = tokens
            .check(&[Role::Worker], "Heartbeat", b"guess")
            .unwrap_err();
        assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
        let none = tokens.check(&[Role::Worker], "Heartbeat", b"").unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unauthenticated);
        // A role without a token of its own is open; one token may serve two roles.
        tokens
            .check(&[Role::Coordinator], "TrainFold", b"")
            .unwrap();
        let shared = RoleTokens::default()
            .with(Role::User, Some("t"))
            .with(Role::Worker, Some("t"));
        shared
            .check(&[Role::Worker], "RegisterWorker", b"t")
            .unwrap();
        assert!(!format!("{tokens:?}").contains("user-t"));
    }

    /// Whether a user's call to `GetJob` with `header` gets past a gate that knows the
    /// user token `s3cret`.
    fn admitted(header: Option<&str>) -> Result<(), Status> {
        let tokens = RoleTokens::default().with(Role::User, Some("s3cret"));
        let gate = RoleGate::new((), tokens, coordinator_policy);
        let mut request = http::Request::builder().uri("/foldtrain.v1.Coordinator/GetJob");
        if let Some(h) = header {
            request = request.header("authorization", h);
        }
        gate.admit(&request.body(()).unwrap())
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        admitted(Some("Bearer s3cret")).unwrap();
        for bad in [
            None,
            Some("Bearer s3creT"),
            Some("Bearer s3cret2"),
            Some("Bearer s3cre"),
            Some("Bearer "),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let status = admitted(bad).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert_eq!(status.message(), UNAUTHENTICATED_MESSAGE);
        }
        let open = RoleGate::new((), RoleTokens::default(), coordinator_policy);
        let request = http::Request::builder()
            .uri("/foldtrain.v1.Coordinator/GetJob")
            .body(())
            .unwrap();
        open.admit(&request).unwrap();
        let unknown = http::Request::builder()
            .uri("/foldtrain.v1.Coordinator/Nope")
            .body(())
            .unwrap();
        assert_eq!(
            open.admit(&unknown).unwrap_err().code(),
            tonic::Code::Unimplemented
        );
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
        let header = request
            .metadata()
            .get("authorization")
            .unwrap()
            .to_str()
            .unwrap();
        admitted(Some(header)).unwrap();

        let bare = BearerToken::new(None)
            .unwrap()
            .call(Request::new(()))
            .unwrap();
        assert!(bare.metadata().get("authorization").is_none());

        let err = BearerToken::new(Some("bad\ntoken")).err().unwrap();
        assert!(err.to_string().contains("token"), "{err}");
    }
}
