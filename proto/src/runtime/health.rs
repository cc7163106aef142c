//! The standard gRPC health service, `grpc.health.v1.Health`, that both binaries serve
//! beside their own service. It answers without the bearer token, so Kubernetes probes,
//! load balancers and Compose health checks can ask. The overall status (the service
//! named "") and the named service's always move together.

use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use tonic_health::pb::health_client::HealthClient;
pub use tonic_health::pb::health_server::{Health as HealthApi, HealthServer};
pub use tonic_health::pb::{HealthCheckRequest, health_check_response};

/// Sets what the health service reports for one binary's main service.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    service: &'static str,
}

impl Health {
    /// A health service for `S` that reports NOT_SERVING until [`Health::set`] says
    /// otherwise, and the gRPC service to add to the server.
    pub async fn new<S: NamedService>() -> (Self, HealthServer<impl HealthApi>) {
        let (reporter, server) = tonic_health::server::health_reporter();
        let health = Self {
            reporter,
            service: S::NAME,
        };
        health.set(false).await;
        (health, server)
    }

    /// SERVING or NOT_SERVING, for the overall status and the named service.
    pub async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for name in ["", self.service] {
            self.reporter.set_service_status(name, status).await;
        }
    }
}
