//! New tasks written to both stores in batches (group commit): one multi-row `INSERT` and one commit in PostgreSQL,
//! then one `MULTI` … `EXEC` of XADDs in Redis, for every task queued while the previous batch was being written,
//! instead of a statement, a commit (a WAL flush) and a round trip per task.
//!
//! Never waits to fill a batch: a writer takes whatever is queued the moment it is free, so at low load a batch is
//! the one task and adds no latency. Up to [`IN_FLIGHT`] batches are written at once, so one slow commit does not
//! stall every request behind it.
//!
//! The guarantees are the ones of a single task (`lifecycle.rs`, [`Lifecycle::enqueue_many`]): a caller is answered
//! only once its row is committed (with the API pool's `synchronous_commit`) and its stream entry added; if Redis
//! refuses, every row of the batch is removed again and every caller gets the queue error; if PostgreSQL fails,
//! every caller gets the database error. The batch is written by a task of its own, so a client that disconnects
//! (axum then drops its handler) cannot interrupt it between the two writes and leave a row that only the
//! reconciler would send.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{EntryIdBatches, MAX_BATCH};
use crate::tasks::idempotency::Idempotency;
use crate::tasks::kinds::TaskSpec;
use crate::tasks::lifecycle::{EnqueueError, Lifecycle, Queued};
use crate::tasks::queue::Queue;
use crate::tasks::records::NewTask;
use crate::tasks::store::TaskStore;

/// Most batches being written at once.
const IN_FLIGHT: usize = 4;

type Answer = oneshot::Sender<Result<Queued, EnqueueError>>;

pub struct EnqueueBatches {
    queued: mpsc::UnboundedSender<(NewTask, Answer)>,
}

impl EnqueueBatches {
    /// Starts the writer, and the one of its entry ids, on the current runtime.
    pub fn spawn(store: TaskStore, queue: Queue) -> Self {
        let (queued, received) = mpsc::unbounded_channel();
        let entry_ids = Arc::new(EntryIdBatches::spawn(store.clone()));
        tokio::spawn(take_batches(store, queue, entry_ids, received));
        Self { queued }
    }

    /// Records a task and hands it to the workers; returns once both writes are done (or have failed). With an
    /// idempotency key already taken by the same request, returns that request's task instead.
    pub async fn enqueue(
        &self,
        spec: &TaskSpec,
        max_attempts: i32,
        request_id: Option<&str>,
        idempotency: Option<Idempotency>,
    ) -> Result<Queued, EnqueueError> {
        let task = NewTask {
            id: Uuid::new_v4(),
            spec: spec.clone(),
            max_attempts,
            request_id: request_id.map(str::to_owned),
            idempotency,
        };
        let (answer, answered) = oneshot::channel();
        self.queued
            .send((task, answer))
            .map_err(|_| EnqueueError::Interrupted)?;
        // A writer that panicked drops the answer.
        answered.await.unwrap_or(Err(EnqueueError::Interrupted))
    }
}

async fn take_batches(
    store: TaskStore,
    queue: Queue,
    entry_ids: Arc<EntryIdBatches>,
    mut received: mpsc::UnboundedReceiver<(NewTask, Answer)>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // A free slot first, then whatever is queued by then: that is the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        if received.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let (tasks, answers): (Vec<NewTask>, Vec<Answer>) = batch.drain(..).unzip();
        let (store, queue, entry_ids) = (store.clone(), queue.clone(), entry_ids.clone());
        tokio::spawn(async move {
            let written = Lifecycle::new(&store, &queue).enqueue_many(&tasks).await;
            drop(slot);
            // Only bookkeeping for the reconciler (the tasks are already safely queued): not waited for.
            entry_ids.record(&written.task_ids, written.entry_ids);
            for (answer, result) in answers.into_iter().zip(written.results) {
                // The caller may have gone (its client disconnected): the task is queued all the same.
                let _ = answer.send(result);
            }
        });
    }
}
