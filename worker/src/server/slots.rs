//! Which of this worker's slots are training, so an attempt only starts on a free slot
//! named by the task, and heartbeats report how many are busy.

use std::sync::{Arc, Mutex, MutexGuard};

use super::WorkerError;
use crate::device::Slot;
use crate::train::FoldControl;

/// The attempt holding a slot.
#[derive(Debug)]
struct Holder {
    what: String,
    control: Arc<FoldControl>,
}

#[derive(Debug)]
struct Table {
    worker: String,
    slots: Vec<Slot>,
    holders: Mutex<Vec<Option<Holder>>>,
}

/// The slots of one worker; cheap to clone.
#[derive(Debug, Clone)]
pub struct SlotTable(Arc<Table>);

impl SlotTable {
    pub fn new(worker: impl Into<String>, slots: Vec<Slot>) -> Self {
        let holders = Mutex::new(slots.iter().map(|_| None).collect());
        Self(Arc::new(Table {
            worker: worker.into(),
            slots,
            holders,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Option<Holder>>> {
        // A panic while holding this lock cannot leave the table inconsistent (every
        // change is one assignment), so a poisoned lock is still usable.
        self.0.holders.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the slot with wire index `device_index` (-1: the CPU) for `what`, whose
    /// training `control` stops.
    pub fn acquire(
        &self,
        device_index: i32,
        what: String,
        control: Arc<FoldControl>,
    ) -> Result<SlotLease, WorkerError> {
        let Some(position) = self.0.slots.iter().position(|s| s.index() == device_index) else {
            let slots: Vec<String> = self
                .0
                .slots
                .iter()
                .map(|s| format!("{} ({})", s.name(), s.index()))
                .collect();
            return Err(WorkerError::NoSuchSlot {
                worker: self.0.worker.clone(),
                index: device_index,
                slots: slots.join(", "),
            });
        };
        let mut holders = self.lock();
        if let Some(holder) = &holders[position] {
            return Err(WorkerError::SlotBusy {
                worker: self.0.worker.clone(),
                slot: self.0.slots[position].name(),
                holder: holder.what.clone(),
            });
        }
        holders[position] = Some(Holder { what, control });
        Ok(SlotLease {
            table: self.clone(),
            position,
        })
    }

    pub fn busy(&self) -> usize {
        self.lock().iter().filter(|h| h.is_some()).count()
    }

    /// Asks every running attempt to stop at its next batch.
    pub fn cancel_all(&self) {
        for holder in self.lock().iter().flatten() {
            holder.control.cancel();
        }
    }

    /// Asks every running attempt to hand its fold back, with a checkpoint, at the end
    /// of its current batch.
    pub fn drain_all(&self) {
        for holder in self.lock().iter().flatten() {
            holder.control.drain();
        }
    }
}

/// Holds a slot; dropping it frees the slot.
#[derive(Debug)]
pub struct SlotLease {
    table: SlotTable,
    position: usize,
}

impl SlotLease {
    pub fn slot(&self) -> Slot {
        self.table.0.slots[self.position]
    }
}

impl Drop for SlotLease {
    fn drop(&mut self) {
        self.table.lock()[self.position] = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag() -> Arc<FoldControl> {
        FoldControl::new()
    }

    #[test]
    fn a_slot_is_held_once_and_freed_on_drop() {
        let table = SlotTable::new("w1", vec![Slot::Cuda(0), Slot::Cuda(1)]);
        let lease = table.acquire(1, "fold 0 of job a".into(), flag()).unwrap();
        assert_eq!((lease.slot(), table.busy()), (Slot::Cuda(1), 1));
        let err = table
            .acquire(1, "fold 1 of job a".into(), flag())
            .unwrap_err();
        assert!(matches!(err, WorkerError::SlotBusy { .. }), "{err}");
        assert!(
            err.to_string().contains("busy with fold 0 of job a"),
            "{err}"
        );
        drop(lease);
        assert_eq!(table.busy(), 0);
        table.acquire(1, "fold 1 of job a".into(), flag()).unwrap();
    }

    #[test]
    fn unknown_slots_are_named_with_the_real_ones() {
        let table = SlotTable::new("w1", vec![Slot::Cpu]);
        let err = table
            .acquire(3, "x".into(), flag())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "worker w1 has no slot with device index 3; its slots are cpu (-1)"
        );
    }

    #[test]
    fn drain_and_cancel_reach_every_holder() {
        let table = SlotTable::new("w1", vec![Slot::Cuda(0), Slot::Cuda(1)]);
        let (a, b) = (flag(), flag());
        let _la = table.acquire(0, "a".into(), a.clone()).unwrap();
        let _lb = table.acquire(1, "b".into(), b.clone()).unwrap();
        table.drain_all();
        assert!(a.is_draining() && b.is_draining());
        assert!(!a.is_cancelled() && !b.is_cancelled());
        table.cancel_all();
        assert!(a.is_cancelled() && b.is_cancelled());
    }
}
