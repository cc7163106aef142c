//! Staying registered with the coordinator: register, heartbeat every third of the
//! lease with the busy slot count, and register again whenever the coordinator forgets
//! this worker or cannot be reached, backing off up to [`MAX_BACKOFF`]. Never gives up,
//! except while draining: then a forgotten worker stays forgotten.
//!
//! The health service says SERVING once registered. When draining begins it says
//! NOT_SERVING, and a heartbeat tells the coordinator at once, so no new fold comes.

use std::sync::Arc;
use std::time::Duration;

use foldtrain_proto::pb;
use tracing::{info, warn};

use super::service::Shared;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Floor on the heartbeat period, whatever lease the coordinator grants.
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);

/// Runs until the task is aborted.
pub async fn stay_registered(shared: Arc<Shared>, registration: pb::RegisterWorkerRequest) {
    let mut client = shared.client.clone();
    let mut backoff = FIRST_BACKOFF;
    let mut failures = 0u32;
    loop {
        if shared.is_draining() {
            info!("draining: not registering again");
            return;
        }
        let lease = match client.register_worker(registration.clone()).await {
            Ok(response) => Duration::from_millis(response.into_inner().lease_ms),
            Err(status) => {
                failures += 1;
                warn!(
                    coordinator = %shared.coordinator_url,
                    failures,
                    retry_in_ms = backoff.as_millis() as u64,
                    code = ?status.code(),
                    error = status.message(),
                    "cannot register with the coordinator; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        info!(
            coordinator = %shared.coordinator_url,
            address = %registration.address,
            lease_ms = lease.as_millis() as u64,
            "registered with the coordinator"
        );
        backoff = FIRST_BACKOFF;
        failures = 0;
        shared.health.set(!shared.is_draining()).await;
        heartbeat_until_forgotten(&shared, &mut client, lease).await;
        shared.health.set(false).await;
    }
}

/// Heartbeats until the coordinator says it does not know this worker, or a heartbeat
/// fails; either way the caller registers again.
async fn heartbeat_until_forgotten(
    shared: &Shared,
    client: &mut super::client::Coordinator,
    lease: Duration,
) {
    let period = (lease / 3).max(MIN_HEARTBEAT);
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shared.drain_started.notified() => {}
        }
        let request = pb::HeartbeatRequest {
            worker_id: shared.worker_id.clone(),
            busy_slots: shared.slots.busy() as u32,
            draining: shared.is_draining(),
            call_token: shared.call_token.clone(),
        };
        match client.heartbeat(request).await {
            Ok(response) if response.get_ref().known => {}
            Ok(_) => {
                info!(
                    "the coordinator does not know this worker (it restarted?); registering again"
                );
                return;
            }
            Err(status) => {
                warn!(
                    coordinator = %shared.coordinator_url,
                    code = ?status.code(),
                    error = status.message(),
                    "heartbeat failed; registering again"
                );
                return;
            }
        }
    }
}
