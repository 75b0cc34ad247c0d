//! The `done` outcomes of this worker's tasks, recorded in batches: one `UPDATE … FROM unnest` and one
//! XACK + XDEL for every task that finished while the previous batch was being written, instead of two round trips
//! and a commit per task.
//!
//! The order and the guarantees are the ones of a single task: PostgreSQL first, Redis second, and a task is only
//! reported finished (its claim no longer refreshed) once both writes returned. A worker killed before a batch is
//! written leaves its entries pending and its rows `running`: they are taken over after `TASK_CLAIM_IDLE_MS` and
//! run again, as any task of a killed worker.

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::MAX_BATCH;
use crate::tasks::lifecycle::{DoneTask, Lifecycle};
use crate::tasks::queue::Queue;
use crate::tasks::records::StartedTask;
use crate::tasks::store::TaskStore;

struct Finished {
    task: DoneTask,
    recorded: oneshot::Sender<()>,
}

pub struct DoneBatches {
    queued: mpsc::UnboundedSender<Finished>,
}

impl DoneBatches {
    /// Starts the writer of the worker named `worker` on the current runtime.
    pub fn spawn(store: TaskStore, queue: Queue, worker: String) -> Self {
        let (queued, received) = mpsc::unbounded_channel();
        tokio::spawn(write_batches(store, queue, worker, received));
        Self { queued }
    }

    /// Returns once the outcome is in PostgreSQL and the entry retired (or both were tried and logged).
    pub async fn done(&self, task: &StartedTask, entry_id: &str, result: Value) {
        let (recorded, written) = oneshot::channel();
        let task = DoneTask {
            task_id: task.id,
            entry_id: entry_id.to_owned(),
            result,
            request_id: task.request_id.clone(),
        };
        if self.queued.send(Finished { task, recorded }).is_ok() {
            let _ = written.await;
        }
    }
}

async fn write_batches(
    store: TaskStore,
    queue: Queue,
    worker: String,
    mut received: mpsc::UnboundedReceiver<Finished>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut kept = store.keep_connection();
    while received.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (tasks, waiting): (Vec<DoneTask>, Vec<oneshot::Sender<()>>) = batch
            .drain(..)
            .map(|f: Finished| (f.task, f.recorded))
            .unzip();
        Lifecycle::new(&store, &queue)
            .finish_done(&mut kept, &worker, tasks)
            .await;
        for w in waiting {
            let _ = w.send(());
        }
    }
}
