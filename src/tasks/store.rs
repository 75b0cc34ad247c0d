//! Task records in PostgreSQL: the source of truth for every task's state.
//!
//! A worker may only start a task through [`TaskStore::start_many`], which takes a lease in the same `UPDATE`; that is
//! what keeps two workers from running one task at the same time, whatever Redis delivers twice.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::types::PgInterval;
use uuid::Uuid;

use super::records::{
    NewTask, StaleTask, StartOutcome, StartedTask, TaskRecord, TaskState, TaskSummary,
};
use super::stream_ids::StreamIdWriter;
use crate::db::KeptConnection;

#[derive(Clone)]
pub struct TaskStore {
    pool: PgPool,
    /// Started on first use, on the runtime that enqueues (see `stream_ids.rs`).
    stream_ids: Arc<OnceLock<StreamIdWriter>>,
}

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: d.as_micros().min(i64::MAX as u128) as i64,
    }
}

impl TaskStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            stream_ids: Arc::default(),
        }
    }

    /// Inserts queued tasks in one statement and one commit (see `enqueue_batch.rs`), returning their records in
    /// no particular order. They are committed before the work goes to Redis, so a worker never sees an entry whose
    /// task it cannot find.
    pub async fn insert_many(&self, tasks: &[NewTask]) -> Result<Vec<TaskRecord>, sqlx::Error> {
        let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
        let kinds: Vec<&str> = tasks.iter().map(|t| t.spec.kind()).collect();
        let payloads: Vec<Value> = tasks.iter().map(|t| t.spec.payload()).collect();
        let max_attempts: Vec<i32> = tasks.iter().map(|t| t.max_attempts).collect();
        let request_ids: Vec<Option<&str>> =
            tasks.iter().map(|t| t.request_id.as_deref()).collect();
        sqlx::query_as!(
            TaskRecord,
            r#"INSERT INTO tasks (id, kind, payload, max_attempts, request_id)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::int4[], $5::text[])
               RETURNING id, kind, payload, state AS "state: TaskState", attempts, max_attempts,
                         result, error, request_id, run_at, created_at, updated_at, started_at, finished_at"#,
            &ids,
            &kinds as &[&str],
            &payloads,
            &max_attempts,
            &request_ids as &[Option<&str>],
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Inserts one queued task: [`TaskStore::insert_many`] for a single task, used when a batch's statement was
    /// refused so that one task's bad row fails alone.
    pub async fn insert(&self, task: &NewTask) -> Result<TaskRecord, sqlx::Error> {
        sqlx::query_as!(
            TaskRecord,
            r#"INSERT INTO tasks (id, kind, payload, max_attempts, request_id)
               VALUES ($1, $2, $3, $4, $5)
               RETURNING id, kind, payload, state AS "state: TaskState", attempts, max_attempts,
                         result, error, request_id, run_at, created_at, updated_at, started_at, finished_at"#,
            task.id,
            task.spec.kind(),
            task.spec.payload(),
            task.max_attempts,
            task.request_id.as_deref(),
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Remembers which stream entry carries a new task (unless a worker already recorded it), in the background
    /// and batched with the other tasks queued meanwhile.
    pub fn note_stream_ids(&self, ids: &[Uuid], stream_ids: Vec<String>) {
        let writer = self
            .stream_ids
            .get_or_init(|| StreamIdWriter::spawn(TaskStore::new(self.pool.clone())));
        for (id, stream_id) in ids.iter().zip(stream_ids) {
            writer.record(*id, stream_id);
        }
    }

    /// [`TaskStore::note_stream_ids`]'s batch: one `UPDATE` for many tasks.
    pub async fn set_stream_ids(
        &self,
        ids: &[Uuid],
        stream_ids: &[String],
    ) -> Result<(), sqlx::Error> {
        // Rows a worker has locked are skipped: it is starting them (which records their entry) or finishing them
        // (started, so recorded). Waiting for those locks, while the worker waited for this batch's, deadlocked.
        sqlx::query!(
            "UPDATE tasks SET stream_id = given.stream_id
             FROM unnest($1::uuid[], $2::text[]) AS given(id, stream_id)
             WHERE tasks.id = given.id
               AND tasks.id IN (SELECT id FROM tasks WHERE id = ANY($1) AND stream_id IS NULL
                                FOR UPDATE SKIP LOCKED)",
            ids,
            stream_ids,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes tasks that never reached Redis, so a failed enqueue leaves nothing behind.
    pub async fn delete_unsent(&self, ids: &[Uuid]) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "DELETE FROM tasks WHERE id = ANY($1) AND stream_id IS NULL AND state = 'queued'",
            ids
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<TaskRecord>, sqlx::Error> {
        sqlx::query_as!(
            TaskRecord,
            r#"SELECT id, kind, payload, state AS "state: TaskState", attempts, max_attempts,
                      result, error, request_id, run_at, created_at, updated_at, started_at, finished_at
               FROM tasks WHERE id = $1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await
    }

    /// Newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<TaskRecord>, sqlx::Error> {
        sqlx::query_as!(
            TaskRecord,
            r#"SELECT id, kind, payload, state AS "state: TaskState", attempts, max_attempts,
                      result, error, request_id, run_at, created_at, updated_at, started_at, finished_at
               FROM tasks ORDER BY created_at DESC, id LIMIT $1"#,
            limit
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Newest first, only what the status page shows.
    pub async fn recent_summaries(&self, limit: i64) -> Result<Vec<TaskSummary>, sqlx::Error> {
        sqlx::query_as!(
            TaskSummary,
            r#"SELECT id, kind, state AS "state: TaskState", attempts, created_at, error
               FROM tasks ORDER BY created_at DESC, id LIMIT $1"#,
            limit
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Takes the lease and counts the attempt of each delivered task (`ids[i]` carried by entry `stream_ids[i]`), in
    /// one `UPDATE`; the outcomes come back in the order given. The attempt is counted at start, so a task that keeps
    /// crashing its worker still ends `dead`. A task delivered twice in one batch is started once, for the first of
    /// its entries; the other delivery finds it running.
    pub async fn start_many(
        &self,
        kept: &mut KeptConnection,
        ids: &[Uuid],
        stream_ids: &[String],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<StartOutcome>, sqlx::Error> {
        let started = loop {
            let (conn, fresh) = kept.get().await?;
            let started = sqlx::query!(
                r#"UPDATE tasks
               SET state = 'running', attempts = attempts + 1, worker = $3, stream_id = given.stream_id,
                   lease_until = now() + $4::interval, started_at = now(), updated_at = now(), error = NULL
               FROM (SELECT DISTINCT ON (id) id, stream_id
                     FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS d(id, stream_id, n)
                     ORDER BY id, n) AS given
               WHERE tasks.id = given.id
                 AND (tasks.state = 'queued'
                      OR (tasks.state = 'retrying' AND tasks.run_at <= now() + interval '1 second')
                      OR (tasks.state = 'running' AND tasks.lease_until < now() + interval '1 second'))
               RETURNING tasks.id, tasks.stream_id, tasks.kind, tasks.payload, tasks.attempts,
                         tasks.max_attempts, tasks.request_id"#,
                ids,
                stream_ids,
                worker,
                interval(lease),
            )
            .fetch_all(conn)
            .await;
            match started {
                Ok(rows) => break rows,
                Err(err) => {
                    kept.failed();
                    if fresh {
                        return Err(err);
                    }
                }
            }
        };

        let mut outcomes: Vec<Option<StartOutcome>> = ids.iter().map(|_| None).collect();
        for row in started {
            let delivery = ids
                .iter()
                .zip(stream_ids)
                .position(|(id, entry)| *id == row.id && row.stream_id.as_deref() == Some(entry));
            if let Some(i) = delivery {
                outcomes[i] = Some(StartOutcome::Started(StartedTask {
                    id: row.id,
                    kind: row.kind,
                    payload: row.payload,
                    attempts: row.attempts,
                    max_attempts: row.max_attempts,
                    request_id: row.request_id,
                }));
            }
        }
        let missing: Vec<Uuid> = ids
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_none())
            .map(|(id, _)| *id)
            .collect();
        let states: HashMap<Uuid, TaskState> = if missing.is_empty() {
            HashMap::new()
        } else {
            sqlx::query!(
                r#"SELECT id, state AS "state: TaskState" FROM tasks WHERE id = ANY($1)"#,
                &missing,
            )
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(|row| (row.id, row.state))
            .collect()
        };
        Ok(ids
            .iter()
            .zip(outcomes)
            .map(|(id, outcome)| {
                outcome.unwrap_or_else(|| match states.get(id) {
                    None => StartOutcome::Drop("unknown task"),
                    Some(s) if s.is_finished() => StartOutcome::Drop("already finished"),
                    Some(TaskState::Running) => StartOutcome::HeldElsewhere,
                    Some(_) => StartOutcome::Drop("not due yet"),
                })
            })
            .collect())
    }

    /// Extends the lease of a running task; false when this worker no longer holds it.
    pub async fn renew_lease(
        &self,
        id: Uuid,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query!(
            "UPDATE tasks SET lease_until = now() + $3::interval
             WHERE id = $1 AND worker = $2 AND state = 'running'",
            id,
            worker,
            interval(lease),
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks tasks done with their results, those this worker still holds; returns the ids it updated.
    pub async fn mark_done_many(
        &self,
        kept: &mut KeptConnection,
        ids: &[Uuid],
        worker: &str,
        results: &[Value],
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        loop {
            let (conn, fresh) = kept.get().await?;
            let done = sqlx::query_scalar!(
                "UPDATE tasks SET state = 'done', result = given.result, error = NULL, lease_until = NULL,
                              finished_at = now(), updated_at = now()
             FROM unnest($1::uuid[], $3::jsonb[]) AS given(id, result)
             WHERE tasks.id = given.id AND tasks.worker = $2 AND tasks.state = 'running'
             RETURNING tasks.id",
                ids,
                worker,
                results,
            )
            .fetch_all(conn)
            .await;
            match done {
                Ok(ids) => return Ok(ids),
                Err(err) => {
                    kept.failed();
                    if fresh {
                        return Err(err);
                    }
                }
            }
        }
    }

    /// A connection of this store's pool, for a loop that queries back to back.
    pub fn keep_connection(&self) -> KeptConnection {
        KeptConnection::new(self.pool.clone())
    }

    /// Records a failed attempt: `retrying` due after `retry_in`, or `dead` when `retry_in` is `None`.
    pub async fn mark_failed(
        &self,
        id: Uuid,
        worker: &str,
        error: &str,
        retry_in: Option<Duration>,
    ) -> Result<bool, sqlx::Error> {
        let done = match retry_in {
            Some(delay) => {
                sqlx::query!(
                    "UPDATE tasks SET state = 'retrying', error = $3, lease_until = NULL,
                                      run_at = now() + $4::interval, updated_at = now()
                     WHERE id = $1 AND worker = $2 AND state = 'running'",
                    id,
                    worker,
                    error,
                    interval(delay),
                )
                .execute(&self.pool)
                .await?
            }
            None => {
                sqlx::query!(
                    "UPDATE tasks SET state = 'dead', error = $3, lease_until = NULL,
                                      finished_at = now(), updated_at = now()
                     WHERE id = $1 AND worker = $2 AND state = 'running'",
                    id,
                    worker,
                    error,
                )
                .execute(&self.pool)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    /// Gives a task back after a shutdown interrupted it; the interrupted attempt is not counted.
    pub async fn hand_back(&self, id: Uuid, worker: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query!(
            "UPDATE tasks SET state = 'queued', attempts = greatest(attempts - 1, 0), worker = NULL,
                              lease_until = NULL, run_at = now(), updated_at = now()
             WHERE id = $1 AND worker = $2 AND state = 'running'",
            id,
            worker,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Unfinished tasks overdue by more than `grace`: queued or retrying tasks that should have been picked up,
    /// running tasks whose lease ran out.
    pub async fn stale(&self, grace: Duration, limit: i64) -> Result<Vec<StaleTask>, sqlx::Error> {
        sqlx::query_as!(
            StaleTask,
            r#"SELECT id, state AS "state: TaskState", stream_id FROM tasks
               WHERE (state IN ('queued', 'retrying') AND run_at < now() - $1::interval)
                  OR (state = 'running' AND lease_until < now() - $1::interval)
               ORDER BY run_at LIMIT $2"#,
            interval(grace),
            limit,
        )
        .fetch_all(&self.pool)
        .await
    }

    /// Notes that the reconciler re-sent a task, so it is not re-sent again before another `grace` passes.
    pub async fn mark_resent(&self, id: Uuid, stream_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE tasks SET stream_id = $2, run_at = now(), updated_at = now(),
                              lease_until = CASE WHEN state = 'running' THEN now() ELSE lease_until END
             WHERE id = $1 AND state IN ('queued', 'retrying', 'running')",
            id,
            stream_id,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes finished tasks older than `age`; returns how many.
    pub async fn purge_finished(&self, age: Duration) -> Result<u64, sqlx::Error> {
        let done = sqlx::query!(
            "DELETE FROM tasks WHERE state IN ('done', 'dead') AND finished_at < now() - $1::interval",
            interval(age),
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}
