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

use super::store::TaskStore;

/// Most entry ids per `UPDATE`.
const BATCH: usize = 512;
/// How long an entry id waits before it is written. Most new tasks are started by then, and a worker records the
/// entry of the task it starts: the `UPDATE` then finds those rows done and changes nothing, instead of waiting on
/// the row locks of the worker's own updates of the same rows, as it did when written at once under load.
const SETTLE: Duration = Duration::from_secs(1);

pub struct StreamIdWriter {
    queued: mpsc::UnboundedSender<(Uuid, String, Instant)>,
}

impl StreamIdWriter {
    /// Starts the writer on the current runtime.
    pub fn spawn(store: TaskStore) -> Self {
        let (queued, received) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, received));
        Self { queued }
    }

    pub fn record(&self, task_id: Uuid, entry_id: String) {
        // Fails only when the runtime that ran the writer is gone, i.e. the process is stopping.
        let _ = self.queued.send((task_id, entry_id, Instant::now()));
    }
}

async fn write_batches(
    store: TaskStore,
    mut received: mpsc::UnboundedReceiver<(Uuid, String, Instant)>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    // Everything queued while the previous UPDATE ran forms the next batch.
    while received.recv_many(&mut batch, BATCH).await > 0 {
        if let Some((_, _, oldest)) = batch.first() {
            tokio::time::sleep_until((*oldest + SETTLE).into()).await;
        }
        let (ids, entries): (Vec<Uuid>, Vec<String>) =
            batch.drain(..).map(|(id, entry, _)| (id, entry)).unzip();
        if let Err(err) = store.set_stream_ids(&ids, &entries).await {
            tracing::warn!(tasks = ids.len(), error = %err,
                "could not record the stream entries of new tasks; workers record them when they start");
        }
    }
}
