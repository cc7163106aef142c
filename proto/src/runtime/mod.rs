//! The plumbing both binaries share around the contract: telemetry, trace propagation,
//! bearer-token auth, TLS, the `/metrics` endpoint, the gRPC health service, shutdown on a
//! signal and panic messages.

pub mod auth;
pub mod health;
pub mod metrics_http;
mod panic;
pub mod propagation;
mod shutdown;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod tls;

pub use panic::panic_message;
pub use shutdown::shutdown_signal;
