//! Every change of a task's state that touches both stores. Each writes PostgreSQL (the source of truth) first and
//! Redis (the delivery) second, so a crash between the two only causes a redelivery, which PostgreSQL then
//! settles (the task is found finished and dropped), or a resend by the reconciler.

use std::collections::HashMap;
use std::time::Duration;

use redis::RedisResult;
use serde_json::Value;
use uuid::Uuid;

use super::queue::{Queue, now_ms};
use super::records::{KeyedTask, NewTask, StaleTask, StartedTask, TaskRecord};
use super::store::TaskStore;
use crate::db::KeptConnection;

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("database unavailable")]
    Database(#[from] sqlx::Error),
    #[error("queue unavailable")]
    Queue(#[from] redis::RedisError),
    #[error("enqueue interrupted")]
    Interrupted,
    #[error("this Idempotency-Key was used with a different request")]
    KeyReused,
}

/// A task the caller's request queued, or, for a request repeated with its `Idempotency-Key`, the one the first
/// request queued (`replayed`).
#[derive(Debug)]
pub struct Queued {
    pub record: TaskRecord,
    pub replayed: bool,
}

/// The same failure for every caller of a batch (`sqlx::Error` is not `Clone`): what the HTTP layer reads of it
/// (that the database was unavailable, and the message it logs) is kept.
fn copy_of(err: &sqlx::Error) -> sqlx::Error {
    match err {
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        other => sqlx::Error::Io(std::io::Error::other(other.to_string())),
    }
}

/// A failed attempt, as the worker decided it and [`Lifecycle::finish`] records it (successes go through
/// [`Lifecycle::finish_done`], in batches).
#[derive(Debug)]
pub enum Failure {
    Retry { error: String, delay: Duration },
    Dead { error: String },
}

impl Failure {
    /// The `outcome` label of the `tasks_total` metric (a success's is `done`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Retry { .. } => "retry",
            Self::Dead { .. } => "dead",
        }
    }
}

/// What [`Lifecycle::enqueue_many`] did with a batch of new tasks.
#[derive(Debug)]
pub struct EnqueuedBatch {
    /// One per task, in the order given.
    pub results: Vec<Result<Queued, EnqueueError>>,
    /// The tasks Redis took, and the stream entry that carries each (`entry_ids[i]` carries `task_ids[i]`).
    pub task_ids: Vec<Uuid>,
    pub entry_ids: Vec<String>,
}

/// A task whose attempt succeeded, waiting for its batch (`batches/done.rs`).
#[derive(Debug)]
pub struct DoneTask {
    pub task_id: Uuid,
    pub entry_id: String,
    pub result: Value,
    /// For the log line, which is written outside the task's span.
    pub request_id: Option<String>,
}

/// Both halves of the task state, borrowed for one transition.
pub struct Lifecycle<'a> {
    store: &'a TaskStore,
    queue: &'a Queue,
}

impl<'a> Lifecycle<'a> {
    pub fn new(store: &'a TaskStore, queue: &'a Queue) -> Self {
        Self { store, queue }
    }

    /// Records a batch of new tasks and hands them to the workers (see `batches/enqueue.rs`); one result per task,
    /// in the order given. The rows are committed first (one `INSERT`, one commit) and the stream entries added second
    /// (one `MULTI` … `EXEC`), so a worker never receives an id it cannot find; if Redis refuses, the rows are
    /// removed again and nothing is left. Should PostgreSQL refuse the statement itself (rather than be
    /// unreachable), the tasks are written one by one, so that one task's bad row fails alone.
    pub async fn enqueue_many(&self, tasks: &[NewTask]) -> EnqueuedBatch {
        let inserted = self.insert(tasks).await;
        let results = self.answer_repeats(tasks, inserted).await;
        // The new tasks go to Redis; a repeat's task is there already.
        let written: Vec<Uuid> = tasks
            .iter()
            .zip(&results)
            .filter(|(_, result)| matches!(result, Ok(q) if !q.replayed))
            .map(|(task, _)| task.id)
            .collect();
        if written.is_empty() {
            return EnqueuedBatch {
                results,
                task_ids: Vec::new(),
                entry_ids: Vec::new(),
            };
        }
        match self.queue.enqueue_many(&written).await {
            Ok(entry_ids) => EnqueuedBatch {
                results,
                task_ids: written,
                entry_ids,
            },
            Err(err) => {
                if let Err(db_err) = self.store.delete_unsent(&written).await {
                    tracing::error!(tasks = written.len(), error = %db_err,
                        "could not remove tasks Redis refused; the reconciler will send them later");
                }
                let results = results
                    .into_iter()
                    .map(|result| match result {
                        Ok(q) if !q.replayed => Err(EnqueueError::Queue(err.clone())),
                        other => other,
                    })
                    .collect();
                EnqueuedBatch {
                    results,
                    task_ids: Vec::new(),
                    entry_ids: Vec::new(),
                }
            }
        }
    }

    /// The rows, one statement for the batch; `Ok(None)` for a task whose idempotency key another task holds.
    async fn insert(&self, tasks: &[NewTask]) -> Vec<Result<Option<TaskRecord>, EnqueueError>> {
        match self.store.insert_many(tasks).await {
            Ok(records) => {
                let mut by_id: HashMap<Uuid, TaskRecord> =
                    records.into_iter().map(|r| (r.id, r)).collect();
                tasks.iter().map(|t| Ok(by_id.remove(&t.id))).collect()
            }
            Err(sqlx::Error::Database(err)) if tasks.len() > 1 => {
                tracing::warn!(tasks = tasks.len(), error = %err,
                    "a batch of new tasks was refused; writing them one by one");
                let mut one_by_one = Vec::with_capacity(tasks.len());
                for task in tasks {
                    let one = self.store.insert_many(std::slice::from_ref(task)).await;
                    one_by_one.push(one.map(|mut rows| rows.pop()).map_err(Into::into));
                }
                one_by_one
            }
            Err(err) => tasks
                .iter()
                .map(|_| Err(EnqueueError::Database(copy_of(&err))))
                .collect(),
        }
    }

    /// Each task inserted, or the task that holds its idempotency key: the same request's (a repeat), or a
    /// refusal when the key was used for another request.
    async fn answer_repeats(
        &self,
        tasks: &[NewTask],
        inserted: Vec<Result<Option<TaskRecord>, EnqueueError>>,
    ) -> Vec<Result<Queued, EnqueueError>> {
        let keys: Vec<&str> = tasks
            .iter()
            .zip(&inserted)
            .filter(|(_, row)| matches!(row, Ok(None)))
            .filter_map(|(task, _)| task.idempotency.as_ref().map(|i| i.key.as_str()))
            .collect();
        let holders: Result<HashMap<String, KeyedTask>, sqlx::Error> = if keys.is_empty() {
            Ok(HashMap::new())
        } else {
            self.store
                .keyed_tasks(&keys)
                .await
                .map(|found| found.into_iter().map(|k| (k.key.clone(), k)).collect())
        };
        tasks
            .iter()
            .zip(inserted)
            .map(|(task, row)| match row? {
                Some(record) => Ok(Queued {
                    record,
                    replayed: false,
                }),
                None => {
                    let holders = holders
                        .as_ref()
                        .map_err(|err| EnqueueError::Database(copy_of(err)))?;
                    let asked = task.idempotency.as_ref().ok_or(EnqueueError::Interrupted)?;
                    match holders.get(&asked.key) {
                        Some(held) if held.request_hash == asked.request_hash => Ok(Queued {
                            record: held.record.clone(),
                            replayed: true,
                        }),
                        Some(_) => Err(EnqueueError::KeyReused),
                        // Its holder was removed since (Redis refused it): the request may be sent again.
                        None => Err(EnqueueError::Interrupted),
                    }
                }
            })
            .collect()
    }

    /// Records a batch of successful attempts in one `UPDATE` on `kept`, then retires their entries in one round
    /// trip.
    pub async fn finish_done(&self, kept: &mut KeptConnection, worker: &str, tasks: Vec<DoneTask>) {
        let (ids, results): (Vec<Uuid>, Vec<Value>) =
            tasks.iter().map(|t| (t.task_id, t.result.clone())).unzip();
        match self
            .store
            .mark_done_many(kept, &ids, worker, &results)
            .await
        {
            Ok(recorded) => {
                for t in &tasks {
                    let request_id = t.request_id.as_deref().unwrap_or("-");
                    if recorded.contains(&t.task_id) {
                        // At debug: the row says `done`, and the worker's info line for the task is its start (an
                        // info line per success cost ~13 µs of worker CPU, ~15% of a trivial task's).
                        tracing::debug!(task_id = %t.task_id, request_id, "task done");
                    } else {
                        tracing::warn!(task_id = %t.task_id, request_id,
                            "lease lost before the outcome was recorded; another worker owns the task");
                    }
                }
            }
            Err(err) => tracing::error!(tasks = ids.len(), error = %err,
                "could not record the outcomes; the tasks will run again"),
        }
        let entries: Vec<&str> = tasks.iter().map(|t| t.entry_id.as_str()).collect();
        if let Err(err) = self.queue.ack_many(&entries).await {
            tracing::warn!(error = %err, "could not retire the queue entries; redeliveries will be dropped");
        }
    }

    /// Records a failed attempt, then retires its entry: scheduled again when retried, moved to the dead list when
    /// dead. (Successes go through [`Lifecycle::finish_done`], in batches.)
    pub async fn finish(&self, worker: &str, task: &StartedTask, entry_id: &str, failure: Failure) {
        let (recorded, retired) = match failure {
            Failure::Retry { error, delay } => {
                let recorded = self
                    .store
                    .mark_failed(task.id, worker, &error, Some(delay))
                    .await;
                let due = now_ms() + delay.as_millis() as i64;
                let retired = self.queue.schedule_retry(task.id, entry_id, due).await;
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "task failed; will retry");
                (recorded, retired)
            }
            Failure::Dead { error } => {
                let recorded = self.store.mark_failed(task.id, worker, &error, None).await;
                let retired = self.queue.bury(task.id, entry_id).await;
                tracing::error!(%error, attempts = task.attempts, "task dead");
                (recorded, retired)
            }
        };
        match recorded {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "lease lost before the outcome was recorded; another worker owns the task"
            ),
            Err(err) => {
                tracing::error!(error = %err, "could not record the outcome; the task will run again")
            }
        }
        if let Err(err) = retired {
            tracing::warn!(error = %err, "could not retire the queue entry; a redelivery will be dropped");
        }
    }

    /// Gives back a task a shutdown interrupted: `queued` again without counting the attempt, and a fresh stream
    /// entry in place of the held one, so another worker starts it at once instead of after `claim_idle`.
    pub async fn hand_back(&self, worker: &str, task_id: Uuid, entry_id: &str) {
        let in_db = self.store.hand_back(task_id, worker).await;
        let in_queue = self.queue.hand_back(task_id, entry_id).await;
        match (in_db, in_queue) {
            (Ok(_), Ok(_)) => tracing::info!(%task_id, "handed back an interrupted task"),
            (db, queue) => tracing::warn!(%task_id, db_ok = db.is_ok(), queue_ok = queue.is_ok(),
                "could not fully hand back a task; it will be taken over after its lease ends"),
        }
    }

    /// Sends a stale task again when Redis no longer carries it; `true` when it was resent. Here Redis comes
    /// first: PostgreSQL already says the task is due, and only notes the new entry.
    pub async fn resend_if_lost(&self, task: &StaleTask) -> RedisResult<bool> {
        if self
            .queue
            .carries(task.id, task.entry_id.as_deref())
            .await?
        {
            return Ok(false);
        }
        let entry_id = self.queue.enqueue(task.id).await?;
        if let Err(err) = self.store.mark_resent(task.id, &entry_id).await {
            tracing::warn!(task_id = %task.id, error = %err, "resent task not recorded");
        }
        tracing::info!(task_id = %task.id, state = task.state.as_str(), "resent a task Redis had lost");
        Ok(true)
    }
}
