//! The live worker registry: workers, their slots, which attempt holds each slot, and
//! the heartbeat lease that keeps a worker counted as alive.

use std::time::{Duration, Instant};

use foldtrain_proto::{AttemptId, WorkerId};

use super::launcher::{CallToken, SlotTarget};

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
    /// The secret of this registration: presented when calling the worker, and
    /// required on its heartbeats and on a new registration under its id.
    pub call_token: CallToken,
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

impl LiveWorker {
    /// Each of this worker's slots as a place to run an attempt or a shard.
    pub fn targets(&self) -> Vec<SlotTarget> {
        (0..self.slots.len()).map(|i| self.target(i)).collect()
    }

    fn target(&self, slot: usize) -> SlotTarget {
        SlotTarget {
            worker: self.id.clone(),
            address: self.address.clone(),
            call_token: self.call_token.clone(),
            slot,
            device_index: self.slots[slot].device_index,
        }
    }
}

/// What a worker says about itself when it registers.
#[derive(Debug, Clone)]
pub struct Registration {
    pub id: WorkerId,
    pub address: String,
    pub call_token: CallToken,
    pub hostname: String,
    /// (device index, device name) of each slot.
    pub slots: Vec<(i32, String)>,
}

/// A live registration holds the id under another call token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdTaken;

/// Workers in registration order; the first free slot in that order gets the next fold,
/// which makes dispatch deterministic.
#[derive(Debug, Default)]
pub struct Registry {
    workers: Vec<LiveWorker>,
}

impl Registry {
    /// Adds a worker, or refreshes one that registers again (e.g. after a restart).
    /// Slots that still hold an attempt keep it until that attempt ends. A live
    /// registration of the same id with another call token is not replaced.
    pub fn register(
        &mut self,
        registration: Registration,
        lease: Duration,
        now_ms: i64,
    ) -> Result<(), IdTaken> {
        let Registration {
            id,
            address,
            call_token,
            hostname,
            slots,
        } = registration;
        if !self.may_register_as(&id, &call_token) {
            return Err(IdTaken);
        }
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
            call_token,
            hostname,
            slots,
            lease_until,
            last_seen_ms: now_ms,
            suspect: false,
            draining: false,
        });
        Ok(())
    }

    /// Whether `registration` may take its id: no live registration holds it under
    /// another call token.
    pub fn may_register(&self, registration: &Registration) -> bool {
        self.may_register_as(&registration.id, &registration.call_token)
    }

    fn may_register_as(&self, id: &WorkerId, call_token: &CallToken) -> bool {
        let now = Instant::now();
        !self
            .workers
            .iter()
            .any(|w| &w.id == id && &w.call_token != call_token && w.lease_until > now)
    }

    /// Extends a worker's lease and records whether it is draining; false when the worker
    /// is unknown, or known under another call token (it must register).
    pub fn heartbeat(
        &mut self,
        id: &WorkerId,
        call_token: &CallToken,
        lease: Duration,
        now_ms: i64,
        draining: bool,
    ) -> bool {
        match self
            .workers
            .iter_mut()
            .find(|w| &w.id == id && &w.call_token == call_token)
        {
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
                .position(|s| s.busy.is_none())
                .map(|i| w.target(i))
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

    /// The call token the tests' worker `id` registers with.
    fn token(id: &str) -> CallToken {
        CallToken::new(format!("secret-of-{id}"))
    }

    fn registration(id: &str, address: &str, slots: usize) -> Registration {
        Registration {
            id: WorkerId::new(id),
            address: address.into(),
            call_token: token(id),
            hostname: id.into(),
            slots: (0..slots as i32).map(|i| (i, format!("gpu{i}"))).collect(),
        }
    }

    fn registry_with(workers: &[(&str, usize)], lease: Duration) -> Registry {
        let mut r = Registry::default();
        for (id, slots) in workers {
            r.register(registration(id, &format!("http://{id}"), *slots), lease, 0)
                .unwrap();
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
            call_token: token("a"),
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
        assert!(r.heartbeat(
            &WorkerId::new("b"),
            &token("b"),
            Duration::from_secs(60),
            1,
            false
        ));
        let expired = r.expire(Instant::now());
        assert_eq!(expired, vec![(WorkerId::new("a"), vec![AttemptId(5)])]);
        let ids: Vec<&str> = r.workers().iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["b"]);
        assert!(!r.heartbeat(
            &WorkerId::new("a"),
            &token("a"),
            Duration::from_secs(1),
            2,
            false
        ));
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
        assert!(r.heartbeat(
            &WorkerId::new("a"),
            &token("a"),
            Duration::from_secs(60),
            1,
            false
        ));
        assert_eq!(r.free_slot().unwrap().worker.as_str(), "a");
    }

    #[test]
    fn a_draining_worker_gets_no_fold_until_it_says_otherwise() {
        let mut r = registry_with(&[("a", 1), ("b", 1)], Duration::from_secs(60));
        assert!(r.heartbeat(
            &WorkerId::new("a"),
            &token("a"),
            Duration::from_secs(60),
            1,
            true
        ));
        assert_eq!(r.free_slot().unwrap().worker.as_str(), "b");
        r.occupy(&r.free_slot().unwrap(), AttemptId(1));
        assert!(
            r.free_slot().is_none(),
            "a draining worker's slot was offered"
        );
        // Still known: its lease runs while its folds hand back.
        assert!(r.expire(Instant::now()).is_empty());
        assert!(r.heartbeat(
            &WorkerId::new("a"),
            &token("a"),
            Duration::from_secs(60),
            2,
            false
        ));
        assert_eq!(r.free_slot().unwrap().worker.as_str(), "a");
    }

    #[test]
    fn re_registration_keeps_busy_slots() {
        let mut r = registry_with(&[("a", 2)], Duration::from_secs(60));
        let t = r.free_slot().unwrap();
        r.occupy(&t, AttemptId(1));
        r.register(
            registration("a", "http://a2", 2),
            Duration::from_secs(60),
            5,
        )
        .unwrap();
        assert_eq!(r.workers()[0].slots[0].busy, Some(AttemptId(1)));
        assert_eq!(r.free_slot().unwrap().address, "http://a2");
    }

    #[test]
    fn a_live_worker_id_stays_with_the_registration_that_holds_it() {
        let mut r = registry_with(&[("a", 1)], Duration::from_secs(60));
        let t = r.free_slot().unwrap();
        r.occupy(&t, AttemptId(1));
        // Another registration under the same id, with its own token: refused, and the
        // holder keeps its address, its fold and its heartbeats.
        let mut impostor = registration("a", "http://evil", 1);
        impostor.call_token = CallToken::new("guessed");
        assert_eq!(
            r.register(impostor.clone(), Duration::from_secs(60), 1),
            Err(IdTaken)
        );
        assert_eq!(r.workers()[0].address, "http://a");
        assert_eq!(r.workers()[0].slots[0].busy, Some(AttemptId(1)));
        let id = WorkerId::new("a");
        assert!(!r.heartbeat(&id, &impostor.call_token, Duration::from_secs(60), 2, false));
        assert!(r.heartbeat(&id, &token("a"), Duration::from_secs(60), 2, false));
        // Once the holder's lease has run out, the id is free again.
        let mut r = registry_with(&[("a", 1)], Duration::from_millis(0));
        r.register(impostor, Duration::from_secs(60), 3).unwrap();
        assert_eq!(r.workers()[0].address, "http://evil");
    }
}
