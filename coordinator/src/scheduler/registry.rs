//! The live worker registry: workers, their slots, which attempt holds each slot, and
//! the heartbeat lease that keeps a worker counted as alive.

use std::time::{Duration, Instant};

use foldtrain_proto::{AttemptId, WorkerId};

use super::launcher::SlotTarget;

/// One device of a worker that can train one fold at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub device_index: i32,
    pub device_name: String,
    pub busy: Option<AttemptId>,
}

/// A registered worker.
#[derive(Debug, Clone)]
pub struct LiveWorker {
    pub id: WorkerId,
    pub address: String,
    pub hostname: String,
    pub slots: Vec<Slot>,
    pub lease_until: Instant,
    pub last_seen_ms: i64,
    /// A fold's stream to this worker broke: no new fold goes to it until it shows it is
    /// alive with a heartbeat or a registration, so a dead machine cannot eat retries
    /// while its lease runs out.
    pub suspect: bool,
    /// The worker said it is shutting down: it hands its folds back and gets no new one.
    pub draining: bool,
}

/// Workers in registration order; the first free slot in that order gets the next fold,
/// which makes dispatch deterministic.
#[derive(Debug, Default)]
pub struct Registry {
    workers: Vec<LiveWorker>,
}

impl Registry {
    /// Adds a worker, or refreshes one that registers again (e.g. after a restart).
    /// Slots that still hold an attempt keep it until that attempt ends.
    pub fn register(
        &mut self,
        id: WorkerId,
        address: String,
        hostname: String,
        slots: Vec<(i32, String)>,
        lease: Duration,
        now_ms: i64,
    ) {
        let lease_until = Instant::now() + lease;
        let old = self
            .workers
            .iter()
            .position(|w| w.id == id)
            .map(|i| self.workers.remove(i));
        let slots = slots
            .into_iter()
            .map(|(device_index, device_name)| {
                let busy = old.as_ref().and_then(|w| {
                    w.slots
                        .iter()
                        .find(|s| s.device_index == device_index)
                        .and_then(|s| s.busy)
                });
                Slot {
                    device_index,
                    device_name,
                    busy,
                }
            })
            .collect();
        self.workers.push(LiveWorker {
            id,
            address,
            hostname,
            slots,
            lease_until,
            last_seen_ms: now_ms,
            suspect: false,
            draining: false,
        });
    }

    /// Extends a worker's lease and records whether it is draining; false when the worker
    /// is unknown (it must register).
    pub fn heartbeat(
        &mut self,
        id: &WorkerId,
        lease: Duration,
        now_ms: i64,
        draining: bool,
    ) -> bool {
        match self.workers.iter_mut().find(|w| &w.id == id) {
            Some(w) => {
                w.lease_until = Instant::now() + lease;
                w.last_seen_ms = now_ms;
                w.suspect = false;
                w.draining = draining;
                true
            }
            None => false,
        }
    }

    /// Holds new folds back from a worker whose stream broke, until it is heard from.
    pub fn suspect(&mut self, id: &WorkerId) {
        if let Some(w) = self.workers.iter_mut().find(|w| &w.id == id) {
            w.suspect = true;
        }
    }

    pub fn is_suspect(&self, id: &WorkerId) -> bool {
        self.workers.iter().any(|w| &w.id == id && w.suspect)
    }

    /// The first free slot of a worker neither under suspicion nor draining, in
    /// registration order.
    pub fn free_slot(&self) -> Option<SlotTarget> {
        let eligible = |w: &&LiveWorker| !w.suspect && !w.draining;
        self.workers.iter().filter(eligible).find_map(|w| {
            w.slots
                .iter()
                .enumerate()
                .find(|(_, s)| s.busy.is_none())
                .map(|(i, s)| SlotTarget {
                    worker: w.id.clone(),
                    address: w.address.clone(),
                    slot: i,
                    device_index: s.device_index,
                })
        })
    }

    pub fn occupy(&mut self, target: &SlotTarget, attempt: AttemptId) {
        if let Some(slot) = self.slot_mut(target) {
            slot.busy = Some(attempt);
        }
    }

    /// Frees the slot if `attempt` still holds it.
    pub fn release(&mut self, target: &SlotTarget, attempt: AttemptId) {
        if let Some(slot) = self.slot_mut(target)
            && slot.busy == Some(attempt)
        {
            slot.busy = None;
        }
    }

    fn slot_mut(&mut self, target: &SlotTarget) -> Option<&mut Slot> {
        self.workers
            .iter_mut()
            .find(|w| w.id == target.worker)
            .and_then(|w| w.slots.get_mut(target.slot))
    }

    /// Removes workers whose lease ran out and returns them with the attempts they held.
    pub fn expire(&mut self, now: Instant) -> Vec<(WorkerId, Vec<AttemptId>)> {
        let (expired, alive): (Vec<_>, Vec<_>) =
            self.workers.drain(..).partition(|w| w.lease_until <= now);
        self.workers = alive;
        expired
            .into_iter()
            .map(|w| (w.id, w.slots.iter().filter_map(|s| s.busy).collect()))
            .collect()
    }

    pub fn workers(&self) -> &[LiveWorker] {
        &self.workers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry_with(workers: &[(&str, usize)], lease: Duration) -> Registry {
        let mut r = Registry::default();
        for (id, slots) in workers {
            let slots = (0..*slots as i32).map(|i| (i, format!("gpu{i}"))).collect();
            r.register(
                WorkerId::new(*id),
                format!("http://{id}"),
                id.to_string(),
                slots,
                lease,
                0,
            );
        }
        r
    }

    #[test]
    fn slots_fill_in_registration_order_and_free_again() {
        let mut r = registry_with(&[("a", 2), ("b", 1)], Duration::from_secs(60));
        let mut taken = Vec::new();
        for attempt in 1..=3 {
            let t = r.free_slot().unwrap();
            r.occupy(&t, AttemptId(attempt));
            taken.push((t.worker.to_string(), t.slot));
        }
        assert_eq!(taken, [("a".into(), 0), ("a".into(), 1), ("b".into(), 0)]);
        assert!(r.free_slot().is_none());
        let a1 = SlotTarget {
            worker: WorkerId::new("a"),
            address: "http://a".into(),
            slot: 1,
            device_index: 1,
        };
        r.release(&a1, AttemptId(99));
        assert!(
            r.free_slot().is_none(),
            "a stale attempt must not free a slot"
        );
        r.release(&a1, AttemptId(2));
        assert_eq!(r.free_slot().unwrap().slot, 1);
    }

    #[test]
    fn expired_workers_leave_with_their_attempts() {
        let mut r = registry_with(&[("a", 1), ("b", 1)], Duration::from_millis(0));
        let t = r.free_slot().unwrap();
        r.occupy(&t, AttemptId(5));
        assert!(r.heartbeat(&WorkerId::new("b"), Duration::from_secs(60), 1, false));
        let expired = r.expire(Instant::now());
        assert_eq!(expired, vec![(WorkerId::new("a"), vec![AttemptId(5)])]);
        let ids: Vec<&str> = r.workers().iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["b"]);
        assert!(!r.heartbeat(&WorkerId::new("a"), Duration::from_secs(1), 2, false));
    }

    #[test]
    fn a_suspect_worker_gets_no_fold_until_it_is_heard_from() {
        let mut r = registry_with(&[("a", 1), ("b", 1)], Duration::from_secs(60));
        r.suspect(&WorkerId::new("a"));
        assert_eq!(r.free_slot().unwrap().worker.as_str(), "b");
        r.occupy(&r.free_slot().unwrap(), AttemptId(1));
        assert!(
            r.free_slot().is_none(),
            "a suspect worker's slot was offered"
        );
        assert!(r.heartbeat(&WorkerId::new("a"), Duration::from_secs(60), 1, false));
        assert_eq!(r.free_slot().unwrap().worker.as_str(), "a");
    }

    #[test]
    fn a_draining_worker_gets_no_fold_until_it_says_otherwise() {
        let mut r = registry_with(&[("a", 1), ("b", 1)], Duration::from_secs(60));
        assert!(r.heartbeat(&WorkerId::new("a"), Duration::from_secs(60), 1, true));
        assert_eq!(r.free_slot().unwrap().worker.as_str(), "b");
        r.occupy(&r.free_slot().unwrap(), AttemptId(1));
        assert!(
            r.free_slot().is_none(),
            "a draining worker's slot was offered"
        );
        // Still known: its lease runs while its folds hand back.
        assert!(r.expire(Instant::now()).is_empty());
        assert!(r.heartbeat(&WorkerId::new("a"), Duration::from_secs(60), 2, false));
        assert_eq!(r.free_slot().unwrap().worker.as_str(), "a");
    }

    #[test]
    fn re_registration_keeps_busy_slots() {
        let mut r = registry_with(&[("a", 2)], Duration::from_secs(60));
        let t = r.free_slot().unwrap();
        r.occupy(&t, AttemptId(1));
        r.register(
            WorkerId::new("a"),
            "http://a2".into(),
            "a".into(),
            vec![(0, "gpu0".into()), (1, "gpu1".into())],
            Duration::from_secs(60),
            5,
        );
        assert_eq!(r.workers()[0].slots[0].busy, Some(AttemptId(1)));
        assert_eq!(r.free_slot().unwrap().address, "http://a2");
    }
}
