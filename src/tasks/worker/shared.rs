//! What the worker's loops share: its name, its settings, both stores, and the entries it holds right now.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use uuid::Uuid;

use super::done_batch::DoneBatches;
use crate::config::QueueSettings;
use crate::tasks::lifecycle::Lifecycle;
use crate::tasks::queue::Queue;
use crate::tasks::store::TaskStore;

pub struct WorkerCore {
    pub store: TaskStore,
    pub queue: Queue,
    pub settings: QueueSettings,
    pub consumer: String,
    /// Entries this worker holds (entry id → task id): their claims and leases are kept alive.
    in_flight: Mutex<HashMap<String, Uuid>>,
    /// Started on first use, on the worker's runtime.
    done: OnceLock<DoneBatches>,
}

impl WorkerCore {
    pub fn new(store: TaskStore, queue: Queue, settings: QueueSettings, consumer: String) -> Self {
        Self {
            store,
            queue,
            settings,
            consumer,
            in_flight: Mutex::new(HashMap::new()),
            done: OnceLock::new(),
        }
    }

    /// Where successful attempts are recorded, in batches.
    pub fn done_batches(&self) -> &DoneBatches {
        self.done.get_or_init(|| {
            DoneBatches::spawn(
                self.store.clone(),
                self.queue.clone(),
                self.consumer.clone(),
            )
        })
    }

    pub fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle::new(&self.store, &self.queue)
    }

    fn in_flight(&self) -> MutexGuard<'_, HashMap<String, Uuid>> {
        // A panic while holding the lock leaves the map intact: keep using it.
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn hold(&self, entry_id: &str, task_id: Uuid) {
        self.in_flight().insert(entry_id.to_owned(), task_id);
    }

    pub fn release(&self, entry_id: &str) {
        self.in_flight().remove(entry_id);
    }

    /// The entries held now, as `(entry id, task id)`.
    pub fn held(&self) -> Vec<(String, Uuid)> {
        self.in_flight()
            .iter()
            .map(|(entry, task)| (entry.clone(), *task))
            .collect()
    }

    /// The entries held now, forgotten: the caller hands them back.
    pub fn take_held(&self) -> Vec<(String, Uuid)> {
        self.in_flight().drain().collect()
    }
}
