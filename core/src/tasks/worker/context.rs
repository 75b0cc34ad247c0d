//! What the worker's loops share: its name, its settings, both stores, the recorder of its successes, and the
//! entries it holds right now.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;

use crate::config::TaskSettings;
use crate::tasks::batches::DoneBatches;
use crate::tasks::lifecycle::Lifecycle;
use crate::tasks::queue::Queue;
use crate::tasks::store::TaskStore;

pub struct WorkerContext {
    pub store: TaskStore,
    pub queue: Queue,
    pub settings: TaskSettings,
    /// Unique to this process: its consumer name in the Redis group, and the `worker` of the rows it holds.
    pub name: String,
    /// Where successful attempts are recorded, in batches.
    pub done: DoneBatches,
    /// Entries this worker holds (entry id → task id): their claims and leases are kept alive.
    in_flight: Mutex<HashMap<String, Uuid>>,
}

impl WorkerContext {
    /// Starts the recorder of successes on the current runtime.
    pub fn new(store: TaskStore, queue: Queue, settings: TaskSettings, name: String) -> Self {
        let done = DoneBatches::spawn(store.clone(), queue.clone(), name.clone());
        Self {
            store,
            queue,
            settings,
            name,
            done,
            in_flight: Mutex::new(HashMap::new()),
        }
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
