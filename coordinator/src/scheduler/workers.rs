//! The worker registry as the scheduler uses it: registration and heartbeats (recorded
//! in the store), lease expiry, and the slots that folds are dispatched to. It owns the
//! live registry behind its own lock; the scheduler never holds that lock across a call.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use foldtrain_proto::{AttemptId, WorkerId};
use tracing::info;

use super::launcher::{CallToken, SlotTarget};
use super::registry::{LiveWorker, Registration, Registry};
use crate::error::{CoordinatorError, Result};
use crate::store::{self, Store, WorkerRecord, now_ms};

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Heartbeat {
    /// The worker is registered; false means it must register again.
    pub known: bool,
    /// The worker was under suspicion and is not any more: its slots take folds again.
    pub cleared: bool,
}

/// Slot counts for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct SlotCounts {
    pub workers: usize,
    pub busy: usize,
    pub free: usize,
}

/// Registered workers, their slots and leases.
#[derive(Debug)]
pub(super) struct WorkerRegistry {
    live: Mutex<Registry>,
    store: Store,
    lease: Duration,
}

impl WorkerRegistry {
    pub fn new(store: Store, lease: Duration) -> Self {
        Self {
            live: Mutex::new(Registry::default()),
            store,
            lease,
        }
    }

    fn live(&self) -> MutexGuard<'_, Registry> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Registers (or re-registers) a worker and its slots; returns the lease it must renew.
    pub async fn register(&self, registration: Registration) -> Result<Duration> {
        let Registration {
            id,
            address,
            hostname,
            slots,
            ..
        } = registration.clone();
        if slots.is_empty() {
            return Err(CoordinatorError::invalid(format!(
                "worker {id} registered without slots"
            )));
        }
        if registration.call_token.as_str().is_empty() {
            return Err(CoordinatorError::invalid(format!(
                "worker {id} registered without a call token"
            )));
        }
        let now = now_ms();
        // Checked before anything is stored, so a refused registration changes nothing.
        if !self.live().may_register(&registration) {
            return Err(CoordinatorError::WorkerIdTaken(id));
        }
        let record = WorkerRecord {
            id: id.clone(),
            address: address.clone(),
            hostname: hostname.clone(),
            slots: slots.clone(),
            registered_ms: now,
            last_seen_ms: now,
        };
        self.store
            .db
            .call(move |c| store::workers::upsert_worker(c, &record))
            .await?;
        info!(worker = %id, %address, slots = slots.len(), "worker registered");
        self.live()
            .register(registration, self.lease, now)
            .map_err(|_| CoordinatorError::WorkerIdTaken(id))?;
        Ok(self.lease)
    }

    /// Renews a worker's lease and records when it was last seen, and whether it is
    /// draining (then it gets no new fold).
    pub async fn heartbeat(
        &self,
        id: &WorkerId,
        call_token: &CallToken,
        draining: bool,
    ) -> Result<Heartbeat> {
        let now = now_ms();
        let beat = {
            let mut live = self.live();
            let suspect = live.is_suspect(id);
            let known = live.heartbeat(id, call_token, self.lease, now, draining);
            Heartbeat {
                known,
                cleared: suspect && known,
            }
        };
        if beat.known {
            let id = id.clone();
            self.store
                .db
                .call(move |c| store::workers::touch_worker(c, &id, now))
                .await?;
        }
        Ok(beat)
    }

    /// Workers currently registered, in registration order.
    pub fn workers(&self) -> Vec<LiveWorker> {
        self.live().workers().to_vec()
    }

    /// Removes workers whose lease ran out, with the attempts they held.
    pub fn expire(&self, now: Instant) -> Vec<(WorkerId, Vec<AttemptId>)> {
        self.live().expire(now)
    }

    /// Holds new folds back from a worker whose stream broke, until it is heard from.
    pub fn suspect(&self, id: &WorkerId) {
        self.live().suspect(id);
    }

    /// Takes the first free slot for `attempt`, if any.
    pub fn claim_slot(&self, attempt: AttemptId) -> Option<SlotTarget> {
        let mut live = self.live();
        let target = live.free_slot()?;
        live.occupy(&target, attempt);
        Some(target)
    }

    /// Whether a slot is free (dispatch stops looking at the queue when none is).
    pub fn has_free_slot(&self) -> bool {
        self.live().free_slot().is_some()
    }

    /// Frees the slot if `attempt` still holds it.
    pub fn release(&self, target: &SlotTarget, attempt: AttemptId) {
        self.live().release(target, attempt);
    }

    pub fn slot_counts(&self) -> SlotCounts {
        let live = self.live();
        let slots = live.workers().iter().flat_map(|w| &w.slots);
        SlotCounts {
            workers: live.workers().len(),
            busy: slots.clone().filter(|s| s.busy.is_some()).count(),
            free: slots.filter(|s| s.busy.is_none()).count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(lease: Duration) -> (tempfile::TempDir, WorkerRegistry) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, WorkerRegistry::new(store, lease))
    }

    #[tokio::test]
    async fn claims_count_and_release_slots_and_store_the_worker() {
        let (_dir, workers) = registry(Duration::from_secs(60));
        let gpus = vec![(0, "H200".to_string()), (1, "H200".to_string())];
        let id = WorkerId::new("gpu-box");
        let lease = workers
            .register(Registration {
                id: id.clone(),
                address: "http://10.0.0.7:50052".into(),
                call_token: CallToken::new("t"),
                hostname: "box".into(),
                slots: gpus,
            })
            .await
            .unwrap();
        assert_eq!(lease, Duration::from_secs(60));
        let stored = workers
            .store
            .db
            .call(|c| store::workers::list_workers(c))
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);

        let first = workers.claim_slot(AttemptId(1)).unwrap();
        let second = workers.claim_slot(AttemptId(2)).unwrap();
        assert_eq!((first.device_index, second.device_index), (0, 1));
        assert!(workers.claim_slot(AttemptId(3)).is_none());
        assert!(!workers.has_free_slot());
        let counts = workers.slot_counts();
        assert_eq!((counts.workers, counts.busy, counts.free), (1, 2, 0));

        // Only the attempt that holds a slot frees it.
        workers.release(&first, AttemptId(2));
        assert!(!workers.has_free_slot());
        workers.release(&first, AttemptId(1));
        assert_eq!(workers.claim_slot(AttemptId(4)), Some(first));
    }

    #[tokio::test]
    async fn heartbeats_clear_suspicion_and_unknown_workers_must_register() {
        let (_dir, workers) = registry(Duration::from_millis(50));
        let id = WorkerId::new("w1");
        let token = CallToken::new("t1");
        workers
            .register(Registration {
                id: id.clone(),
                address: "http://w1:1".into(),
                call_token: token.clone(),
                hostname: "w1".into(),
                slots: vec![(-1, "cpu".into())],
            })
            .await
            .unwrap();
        workers.suspect(&id);
        assert!(!workers.has_free_slot());
        let beat = workers.heartbeat(&id, &token, false).await.unwrap();
        assert_eq!((beat.known, beat.cleared), (true, true));
        assert!(workers.has_free_slot());
        let held = workers.claim_slot(AttemptId(9)).unwrap();

        let expired = workers.expire(Instant::now() + Duration::from_secs(1));
        assert_eq!(expired, vec![(id.clone(), vec![AttemptId(9)])]);
        assert!(workers.workers().is_empty());
        let beat = workers.heartbeat(&id, &token, false).await.unwrap();
        assert_eq!((beat.known, beat.cleared), (false, false));
        // Releasing a slot of a worker that is gone is harmless.
        workers.release(&held, AttemptId(9));
    }

    #[tokio::test]
    async fn a_worker_without_slots_is_refused_by_name() {
        let (_dir, workers) = registry(Duration::from_secs(1));
        let err = workers
            .register(Registration {
                id: WorkerId::new("empty"),
                address: "http://e:1".into(),
                call_token: CallToken::new("t"),
                hostname: "e".into(),
                slots: vec![],
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
