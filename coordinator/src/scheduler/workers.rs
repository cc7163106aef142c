//! Worker registration, heartbeats and lease expiry.

use std::time::{Duration, Instant};

use foldtrain_proto::WorkerId;
use tracing::{info, warn};

use super::core::Scheduler;
use super::registry::LiveWorker;
use super::state::StopReason;
use crate::error::{CoordinatorError, Result};
use crate::store::{self, WorkerRecord, now_ms};

impl Scheduler {
    /// Registers (or re-registers) a worker and its slots; returns the lease it must renew.
    pub async fn register_worker(
        &self,
        id: WorkerId,
        address: String,
        hostname: String,
        slots: Vec<(i32, String)>,
    ) -> Result<Duration> {
        if slots.is_empty() {
            return Err(CoordinatorError::invalid(format!(
                "worker {id} registered without slots"
            )));
        }
        let now = now_ms();
        let record = WorkerRecord {
            id: id.clone(),
            address: address.clone(),
            hostname: hostname.clone(),
            slots: slots.clone(),
            registered_ms: now,
            last_seen_ms: now,
        };
        self.inner
            .store
            .db
            .call(move |c| store::workers::upsert_worker(c, &record))
            .await?;
        info!(worker = %id, %address, slots = slots.len(), "worker registered");
        self.lock()
            .registry
            .register(id, address, hostname, slots, self.lease(), now);
        self.dispatch();
        Ok(self.lease())
    }

    /// Renews a worker's lease; false when the worker is unknown and must register.
    pub async fn heartbeat(&self, id: &WorkerId) -> Result<bool> {
        let now = now_ms();
        let (known, cleared) = {
            let registry = &mut self.lock().registry;
            let suspect = registry.is_suspect(id);
            let known = registry.heartbeat(id, self.lease(), now);
            (known, suspect && known)
        };
        if cleared {
            // The worker is alive after all: its free slots take folds again.
            self.dispatch();
        }
        if known {
            let id = id.clone();
            self.inner
                .store
                .db
                .call(move |c| store::workers::touch_worker(c, &id, now))
                .await?;
        }
        Ok(known)
    }
    /// Workers currently registered, in registration order.
    pub fn live_workers(&self) -> Vec<LiveWorker> {
        self.lock().registry.workers().to_vec()
    }

    /// Removes workers whose lease ran out; their folds are retried elsewhere.
    pub fn expire_leases(&self) {
        let mut st = self.lock();
        for (worker, attempts) in st.registry.expire(Instant::now()) {
            warn!(worker = %worker, attempts = attempts.len(), "worker lease expired");
            for attempt in attempts {
                if let Some(running) = st.running.get(&attempt) {
                    running
                        .stop
                        .send_replace(Some(StopReason::WorkerLost(format!(
                            "worker {worker} missed its heartbeat lease"
                        ))));
                }
            }
        }
    }

    /// Checks leases every quarter lease until the returned task is aborted.
    pub fn spawn_lease_monitor(&self) -> tokio::task::JoinHandle<()> {
        let scheduler = self.clone();
        let period = (self.lease() / 4).max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                scheduler.expire_leases();
            }
        })
    }
}
