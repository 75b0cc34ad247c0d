//! How much the intake may take: tasks read ahead of the free slots, the slots themselves, and outcomes not yet
//! recorded.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::tasks::batches::MAX_BATCH;

/// Outcomes waiting to be recorded, at most: past this the intake waits for the recorder (PostgreSQL is slow)
/// instead of running ever more tasks ahead of it. One batch of successes (`batches/done.rs`).
const MAX_UNRECORDED: usize = MAX_BATCH;

/// What one delivery takes when it is read: a reservation (at most twice `WORKER_CONCURRENCY` tasks are read and
/// started but not yet run to the end, so reads and starts go in batches of about `WORKER_CONCURRENCY` even while
/// every slot is busy, like Celery's prefetch) and room for its outcome (held until the outcome is recorded).
pub struct Room {
    pub reserved: OwnedSemaphorePermit,
    pub unrecorded: OwnedSemaphorePermit,
}

/// What a task holds while it runs: one of the `WORKER_CONCURRENCY` slots, and its reservation. Both are given
/// back as soon as the attempt ends, so the next task runs while the outcome is being written, in a batch.
pub struct Slot {
    _running: OwnedSemaphorePermit,
    _reserved: OwnedSemaphorePermit,
}

pub struct Capacity {
    reserved: Arc<Semaphore>,
    slots: Arc<Semaphore>,
    unrecorded: Arc<Semaphore>,
}

impl Capacity {
    pub fn new(concurrency: usize) -> Self {
        Self {
            reserved: Arc::new(Semaphore::new(2 * concurrency)),
            slots: Arc::new(Semaphore::new(concurrency)),
            unrecorded: Arc::new(Semaphore::new(MAX_UNRECORDED)),
        }
    }

    /// Waits for room for one delivery.
    pub async fn one(&self) -> Option<Room> {
        let reserved = self.reserved.clone().acquire_owned().await.ok()?;
        let unrecorded = self.unrecorded.clone().acquire_owned().await.ok()?;
        Some(Room {
            reserved,
            unrecorded,
        })
    }

    /// Room for more deliveries that is there now, up to `most`.
    pub fn more(&self, most: usize) -> Vec<Room> {
        let mut rooms = Vec::new();
        while rooms.len() < most {
            let (Ok(reserved), Ok(unrecorded)) = (
                self.reserved.clone().try_acquire_owned(),
                self.unrecorded.clone().try_acquire_owned(),
            ) else {
                break;
            };
            rooms.push(Room {
                reserved,
                unrecorded,
            });
        }
        rooms
    }

    /// Waits for a slot to run a started task in.
    pub async fn slot(&self, reserved: OwnedSemaphorePermit) -> Option<Slot> {
        let running = self.slots.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _running: running,
            _reserved: reserved,
        })
    }
}
