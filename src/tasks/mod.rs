//! The Celery part: task kinds, their records in PostgreSQL, the Redis queue, the worker and its periodic jobs.

pub mod beat;
pub mod kinds;
pub mod queue;
pub mod store;
pub mod worker;

use uuid::Uuid;

pub use kinds::{InvalidTask, TaskSpec};
pub use queue::Queue;
pub use store::{TaskRecord, TaskState, TaskStore};

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("database unavailable")]
    Database(#[from] sqlx::Error),
    #[error("queue unavailable")]
    Queue(#[from] redis::RedisError),
    #[error("enqueue interrupted")]
    Interrupted,
}

/// Records a task and hands it to the workers. The row is committed first and the stream entry added second, so
/// a worker never receives an id it cannot find; if Redis refuses, the row is removed again and nothing is left.
///
/// Runs as its own task: axum drops a handler's future when the client disconnects, and a drop between the two
/// writes would leave a queued row that only the reconciler would send, a minute later.
pub async fn enqueue(
    store: &TaskStore,
    queue: &Queue,
    spec: &TaskSpec,
    max_attempts: i32,
    request_id: Option<&str>,
) -> Result<TaskRecord, EnqueueError> {
    use tracing::Instrument;
    let (store, queue, spec) = (store.clone(), queue.clone(), spec.clone());
    let request_id = request_id.map(str::to_owned);
    let both_writes = async move {
        enqueue_in_place(&store, &queue, &spec, max_attempts, request_id.as_deref()).await
    };
    match tokio::spawn(both_writes.in_current_span()).await {
        Ok(result) => result,
        Err(join) => match join.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => Err(EnqueueError::Interrupted),
        },
    }
}

async fn enqueue_in_place(
    store: &TaskStore,
    queue: &Queue,
    spec: &TaskSpec,
    max_attempts: i32,
    request_id: Option<&str>,
) -> Result<TaskRecord, EnqueueError> {
    let id = Uuid::new_v4();
    let record = store.insert(id, spec, max_attempts, request_id).await?;
    match queue.enqueue(id).await {
        Ok(entry_id) => {
            // Only bookkeeping for the reconciler: the task is already safely queued.
            if let Err(err) = store.set_stream_id(id, &entry_id).await {
                tracing::warn!(task_id = %id, error = %err, "could not record the stream entry of a task");
            }
            Ok(record)
        }
        Err(err) => {
            if let Err(db_err) = store.delete_unsent(id).await {
                tracing::error!(task_id = %id, error = %db_err,
                    "could not remove a task Redis refused; the reconciler will send it later");
            }
            Err(err.into())
        }
    }
}
