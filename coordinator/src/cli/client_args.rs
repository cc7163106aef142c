//! The `--coordinator`, `--token-file` and TLS flags every command that talks to a
//! coordinator shares.

use std::path::PathBuf;

use clap::Args;
use foldtrain_proto::runtime::tls::TlsFiles;

use crate::client::{Client, ClientError, DEFAULT_COORDINATOR};

/// The flags every command that talks to a coordinator shares.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// URL of the coordinator (`foldtrain serve`).
    #[arg(long, env = "FOLDTRAIN_COORDINATOR", default_value = DEFAULT_COORDINATOR, help_heading = "Coordinator")]
    pub coordinator: String,
    /// File holding the bearer token the coordinator expects (its first line).
    #[arg(long, env = "FOLDTRAIN_TOKEN_FILE", help_heading = "Coordinator")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsFiles,
    /// Send the token to an http:// coordinator beyond loopback, unencrypted: only on a
    /// network you trust (refused otherwise).
    #[arg(long, env = "FOLDTRAIN_INSECURE", help_heading = "Coordinator")]
    pub insecure: bool,
}

impl ClientArgs {
    /// Reads the token and TLS files, if any, and connects.
    pub async fn connect(&self) -> Result<Client, ClientError> {
        let tls = self
            .tls
            .client()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Client::connect_with_token_file(
            &self.coordinator,
            self.token_file.as_deref(),
            tls.as_ref(),
            self.insecure,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use foldtrain_proto::runtime::auth::BearerToken;
    use tonic::service::Interceptor;

    use super::*;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        client: ClientArgs,
    }

    #[test]
    fn flags_and_token_header() {
        let h = Harness::try_parse_from(["x", "--coordinator", "http://h:1"]).unwrap();
        assert_eq!(h.client.coordinator, "http://h:1");
        let mut t = BearerToken::new(Some("s3cret")).unwrap();
        let r = t.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer s3cret");
        let r = BearerToken::default()
            .call(tonic::Request::new(()))
            .unwrap();
        assert!(r.metadata().get("authorization").is_none());
        assert!(BearerToken::new(Some("bad\ntoken")).is_err());
    }
}
