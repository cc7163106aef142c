//! What talking to a coordinator can fail with, and the one mapping from gRPC statuses
//! to messages a user can act on.

use std::path::PathBuf;

use foldtrain_proto::JobId;

/// The hint every "cannot reach the coordinator" message ends with.
const SERVE_HINT: &str = "is `foldtrain serve` running?";

/// Everything talking to a coordinator (submit, watch, status, results) can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid coordinator URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("{0}")]
    Token(String),
    #[error("{0}")]
    Tls(String),
    #[error("cannot connect to the coordinator at {url}: {why}; {SERVE_HINT}")]
    Connect { url: String, why: String },
    #[error(
        "the TLS handshake with the coordinator at {url} failed: {why}; check --tls-ca, --tls-cert and --tls-key"
    )]
    Handshake { url: String, why: String },
    #[error("the coordinator at {url} rejected the token ({message}); check --token-file")]
    Unauthenticated { url: String, message: String },
    #[error(
        "{action} at {url}: the connection was dropped ({why}); if the coordinator serves TLS, \
         use https:// with --tls-ca, and --tls-cert and --tls-key when it requires client certificates"
    )]
    Dropped {
        url: String,
        action: &'static str,
        why: String,
    },
    #[error("no job {0}")]
    NoJob(JobId),
    #[error("{action} at {url} failed ({code:?}): {message}")]
    Rpc {
        url: String,
        action: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image {path} changed since it was hashed (expected {expected}); run submit again")]
    ChangedFile { path: PathBuf, expected: String },
    #[error("the coordinator listed an unsafe artifact path {0:?}; refusing to write it")]
    UnsafeArtifactPath(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "lost the coordinator at {url} while watching job {job} and it did not come back within {seconds} s: {why}"
    )]
    GaveUp {
        url: String,
        job: JobId,
        seconds: u64,
        why: String,
    },
}

impl ClientError {
    /// A failed connection: a TLS problem when the reason says so, else an unreachable
    /// coordinator.
    pub fn connect(url: &str, why: String) -> Self {
        let lower = why.to_ascii_lowercase();
        let url = url.to_string();
        if ["certificate", "tls", "handshake", "alert"]
            .iter()
            .any(|word| lower.contains(word))
        {
            Self::Handshake { url, why }
        } else {
            Self::Connect { url, why }
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Turns a status returned by `action` into a message; `job` is the job the call
    /// was about, so NOT_FOUND for it reads "no job <id>".
    pub fn from_status(
        url: &str,
        action: &'static str,
        job: Option<&JobId>,
        status: tonic::Status,
    ) -> Self {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::Unauthenticated => Self::Unauthenticated {
                url: url.to_string(),
                message,
            },
            tonic::Code::NotFound if job.is_some() && message.starts_with("unknown job") => {
                Self::NoJob(job.cloned().expect("checked above"))
            }
            // A channel that cannot (re)connect reports UNAVAILABLE with the transport's
            // reason; say which coordinator could not be reached.
            tonic::Code::Unavailable => Self::Connect {
                url: url.to_string(),
                why: if message.is_empty() {
                    error_chain(&status)
                } else {
                    message
                },
            },
            // The transport gave up before any answer: a TLS server that rejected the
            // client's certificate or its cleartext looks like this from the client.
            tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::Internal
                if status.metadata().is_empty() && is_transport_failure(&message) =>
            {
                use std::error::Error as _;
                Self::Dropped {
                    url: url.to_string(),
                    action,
                    why: status.source().map_or(message, error_chain),
                }
            }
            code => Self::Rpc {
                url: url.to_string(),
                action,
                code,
                message,
            },
        }
    }

    /// Whether the coordinator might answer if asked again later (it is restarting, or
    /// the network dropped), as opposed to having refused the request.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Dropped { .. } => true,
            Self::Rpc { code, .. } => matches!(
                code,
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Internal
                    | tonic::Code::Cancelled
                    | tonic::Code::DeadlineExceeded
            ),
            _ => false,
        }
    }
}

/// Whether a status message is the transport's rather than the coordinator's.
fn is_transport_failure(message: &str) -> bool {
    ["transport error", "operation was canceled"].contains(&message)
        || message.starts_with("h2 protocol error")
}

/// An error and all its sources, joined by ": ", since transport errors hide the
/// useful part (e.g. "connection refused") in their sources.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_actionable_messages() {
        let job = JobId::new("job-7");
        let url = "http://10.0.0.1:50051";
        let err = ClientError::from_status(
            url,
            "get job",
            Some(&job),
            tonic::Status::not_found("unknown job job-7"),
        );
        assert_eq!(err.to_string(), "no job job-7");
        let err = ClientError::from_status(
            url,
            "download artifact",
            Some(&job),
            tonic::Status::not_found("artifact \"x.csv\" of job job-7 not found"),
        );
        assert!(err.to_string().contains("x.csv"), "{err}");
        let err = ClientError::from_status(
            url,
            "list jobs",
            None,
            tonic::Status::unauthenticated("missing or invalid bearer token"),
        );
        let text = err.to_string();
        assert!(
            text.contains("rejected the token") && text.contains(url),
            "{text}"
        );
        let err = ClientError::from_status(
            url,
            "submit job",
            None,
            tonic::Status::invalid_argument("train.epochs: must be at least 1"),
        );
        assert!(!err.is_transient());
        assert!(err.to_string().contains("train.epochs"), "{err}");
        let err = ClientError::from_status(
            url,
            "get job",
            None,
            tonic::Status::unavailable("tcp connect error"),
        );
        assert!(err.is_transient());
        let text = err.to_string();
        assert!(
            text.contains(url) && text.contains("foldtrain serve"),
            "{text}"
        );
    }
}
