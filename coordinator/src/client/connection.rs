//! A connection to a coordinator: TLS when asked for, the bearer-token interceptor,
//! explicit message limits, keepalives, and errors that name the coordinator's URL.

use std::path::Path;
use std::time::Duration;

use foldtrain_proto::pb::coordinator_client::CoordinatorClient;
use foldtrain_proto::runtime::auth::{BearerToken, read_token_file};
use foldtrain_proto::runtime::tls::{cleartext_token_problem, secure_endpoint};
use foldtrain_proto::{JobId, MAX_MESSAGE_SIZE, pb};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::error::{ClientError, error_chain};

/// Where the coordinator is when no flag or environment variable says.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";

/// How long connecting may take before the coordinator counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The generated client with the token interceptor.
pub type RpcClient = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// A connected coordinator client that knows its URL, so every error can name it.
/// Cheap to clone; clones share one HTTP/2 connection.
#[derive(Clone)]
pub struct Client {
    rpc: RpcClient,
    url: String,
}

impl Client {
    /// Connects to `url` (http://host:port) in cleartext, failing fast when nothing
    /// answers.
    pub async fn connect(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        Self::connect_secure(url, token, None, false).await
    }

    /// Connects to `url`: `https://` with `tls`, `http://` without; failing fast when
    /// nothing answers. A token goes to an `http://` host beyond loopback only when
    /// `insecure`: it would cross the network in cleartext.
    pub async fn connect_secure(
        url: &str,
        token: Option<&str>,
        tls: Option<&ClientTlsConfig>,
        insecure: bool,
    ) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(bad("expected http://HOST:PORT or https://HOST:PORT"));
        }
        if let Some(problem) = cleartext_token_problem(url, token.is_some(), insecure) {
            return Err(ClientError::Tls(problem));
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| bad(&error_chain(&e)))?
            .connect_timeout(CONNECT_TIMEOUT)
            // Pings notice a coordinator that vanished without closing the connection,
            // so a long watch does not hang on a dead socket.
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true)
            .initial_stream_window_size(foldtrain_proto::STREAM_WINDOW)
            .initial_connection_window_size(foldtrain_proto::CONNECTION_WINDOW);
        let endpoint =
            secure_endpoint(endpoint, url, tls).map_err(|e| ClientError::Tls(e.to_string()))?;
        let interceptor = BearerToken::new(token).map_err(|_| {
            ClientError::Token("the token must be printable ASCII without spaces".to_string())
        })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ClientError::connect(url, error_chain(&e)))?;
        let rpc = CoordinatorClient::with_interceptor(channel, interceptor)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        Ok(Self {
            rpc,
            url: url.to_string(),
        })
    }

    /// Reads the token from `token_file` (its first line), if any, and connects.
    pub async fn connect_with_token_file(
        url: &str,
        token_file: Option<&Path>,
        tls: Option<&ClientTlsConfig>,
        insecure: bool,
    ) -> Result<Self, ClientError> {
        let token = token_file
            .map(read_token_file)
            .transpose()
            .map_err(|e| ClientError::Token(e.to_string()))?;
        Self::connect_secure(url, token.as_deref(), tls, insecure).await
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The raw generated client, for calls this library does not wrap.
    pub fn rpc(&self) -> RpcClient {
        self.rpc.clone()
    }

    /// The error for a failed `action` (about `job`, when it is about one).
    pub fn error(
        &self,
        action: &'static str,
        job: Option<&JobId>,
        status: tonic::Status,
    ) -> ClientError {
        ClientError::from_status(&self.url, action, job, status)
    }
}

/// The request naming one job.
pub(super) fn job_request(job: &JobId) -> pb::GetJobRequest {
    pb::GetJobRequest {
        job_id: job.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_and_unreachable_urls_are_named() {
        let err = Client::connect("127.0.0.1:1", None).await.err().unwrap();
        assert!(err.to_string().contains("http://"), "{err}");
        // A port nothing listens on: bind one, then free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let err = Client::connect(&url, None).await.err().unwrap();
        let text = err.to_string();
        assert!(
            text.contains(&url) && text.contains("is `foldtrain serve` running?"),
            "{text}"
        );
    }
}
