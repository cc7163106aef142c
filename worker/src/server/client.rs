//! The worker's connection to the coordinator: lazy (the coordinator may start later),
//! authenticated, over TLS when configured, and with the same message limits as the server.

use std::time::Duration;

use foldtrain_proto::pb::coordinator_client::CoordinatorClient;
use foldtrain_proto::runtime::auth::BearerToken;
use foldtrain_proto::runtime::tls::{TlsFiles, secure_endpoint};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::WorkerError;

pub type Coordinator = CoordinatorClient<InterceptedService<Channel, BearerToken>>;

/// A client that connects on first use and reconnects after failures.
pub fn coordinator_client(
    url: &str,
    token: Option<&str>,
    tls: &TlsFiles,
    max_message_size: usize,
) -> Result<Coordinator, WorkerError> {
    let bad = |message: String| WorkerError::Coordinator {
        url: url.to_string(),
        message,
    };
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
