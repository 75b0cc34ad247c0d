//! Which stream entry carries each new task, written to PostgreSQL in batches off the request path.
//!
//! The entry id is only bookkeeping for the reconciler (it asks Redis whether that entry still exists before
//! resending a stale task), so `POST /api/tasks` does not wait for it: the request commits the row, adds the
//! stream entry and answers; this writer records the entry ids of every task queued meanwhile with one `UPDATE`.
//! One commit per batch instead of one per task. If the process dies before a batch is written, those tasks
//! have no entry id until a worker starts them (it records its own); the reconciler then finds only that Redis
//! carries no retry for them and may send one of them again, which the start lease turns into a dropped
//! duplicate.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::MAX_BATCH;
use crate::tasks::store::TaskStore;

/// How long an entry id waits before it is written. Most new tasks are started by then, and a worker records the
/// entry of the task it starts: the `UPDATE` then finds those rows done and changes nothing, instead of waiting on
/// the row locks of the worker's own updates of the same rows, as it did when written at once under load.
const SETTLE: Duration = Duration::from_secs(1);

pub struct EntryIdBatches {
    queued: mpsc::UnboundedSender<(Uuid, String, Instant)>,
}

impl EntryIdBatches {
    /// Starts the writer on the current runtime.
    pub fn spawn(store: TaskStore) -> Self {
        let (queued, received) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, received));
        Self { queued }
    }

    /// Notes, in the background, which entry carries each task (`task_ids[i]` by `entry_ids[i]`).
    pub fn record(&self, task_ids: &[Uuid], entry_ids: Vec<String>) {
        let now = Instant::now();
        for (task_id, entry_id) in task_ids.iter().zip(entry_ids) {
            // Fails only when the runtime that ran the writer is gone, i.e. the process is stopping.
            let _ = self.queued.send((*task_id, entry_id, now));
        }
    }
}

async fn write_batches(
    store: TaskStore,
    mut received: mpsc::UnboundedReceiver<(Uuid, String, Instant)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while received.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Some((_, _, oldest)) = batch.first() {
            tokio::time::sleep_until((*oldest + SETTLE).into()).await;
        }
        let (task_ids, entry_ids): (Vec<Uuid>, Vec<String>) = batch
            .drain(..)
            .map(|(task, entry, _)| (task, entry))
            .unzip();
        if let Err(err) = store.set_entry_ids(&task_ids, &entry_ids).await {
            tracing::warn!(tasks = task_ids.len(), error = %err,
                "could not record the stream entries of new tasks; workers record them when they start");
        }
    }
}
