//! The worker's connection to the coordinator: lazy (the coordinator may start later),
//! authenticated, over TLS when configured, and with the same message limits as the server.

use std::time::Duration;

use foldtrain_proto::pb::coordinator_client::CoordinatorClient;
use foldtrain_proto::runtime::auth::BearerToken;
use foldtrain_proto::runtime::tls::{TlsFiles, cleartext_token_problem, secure_endpoint};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::WorkerError;

pub type Coordinator = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// A client that connects on first use and reconnects after failures.
/// A token goes to an `http://` coordinator beyond loopback only when `insecure`.
pub fn coordinator_client(
    url: &str,
    token: Option<&str>,
    tls: &TlsFiles,
    insecure: bool,
    max_message_size: usize,
) -> Result<Coordinator, WorkerError> {
    let bad = |message: String| WorkerError::Coordinator {
        url: url.to_string(),
        message,
    };
    if let Some(problem) = cleartext_token_problem(url, token.is_some(), insecure) {
        return Err(bad(problem));
    }
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(format!("invalid URL: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        // Keepalives notice a vanished coordinator during long blob downloads.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .initial_stream_window_size(foldtrain_proto::STREAM_WINDOW)
        .initial_connection_window_size(foldtrain_proto::CONNECTION_WINDOW);
    let tls = tls.client().map_err(|e| bad(e.to_string()))?;
    let endpoint = secure_endpoint(endpoint, url, tls.as_ref()).map_err(|e| bad(e.to_string()))?;
    let auth = BearerToken::new(token).map_err(|e| bad(e.to_string()))?;
    Ok(
        CoordinatorClient::with_interceptor(endpoint.connect_lazy(), auth)
            .max_decoding_message_size(max_message_size)
            .max_encoding_message_size(max_message_size),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_token_never_goes_to_a_remote_coordinator_in_cleartext() {
        let tls = TlsFiles::default();
        let connect = |url: &str, insecure: bool| {
            coordinator_client(url, Some("worker-secret"), &tls, insecure, 1 << 20)
        };
        let err = connect("http://10.0.0.2:50051", false)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to send the token in cleartext to http://10.0.0.2:50051")
                && err.contains("--insecure"),
            "{err}"
        );
        connect("http://10.0.0.2:50051", true).unwrap();
        connect("http://127.0.0.1:50051", false).unwrap();
    }
}
