//! Task records in PostgreSQL: the source of truth for every task's state.
//!
//! A worker may only start a task through [`TaskStore::start_many`] (`attempts.rs`), which takes a lease in the same
//! `UPDATE`; that is what keeps two workers from running one task at the same time, whatever Redis delivers twice.
//! The `stream_id` column holds the id of the stream entry that carries the task (its entry id).

mod attempts;

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::types::PgInterval;
use uuid::Uuid;

use super::records::{NewTask, StaleTask, TaskRecord, TaskState, TaskSummary};

/// Every query on the `tasks` table: new tasks and what readers see here, the worker's attempts in `attempts.rs`.
#[derive(Clone)]
pub struct TaskStore {
    pool: PgPool,
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
        Self { pool }
    }

    /// Inserts queued tasks in one statement and one commit (see `batches/enqueue.rs`), returning their records in
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

    /// Notes which stream entry carries each new task (`entry_ids[i]` carries `ids[i]`), unless a worker already
    /// did: one `UPDATE` for a batch (`batches/entry_ids.rs`).
    pub async fn set_entry_ids(
        &self,
        ids: &[Uuid],
        entry_ids: &[String],
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
            entry_ids,
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

    /// Unfinished tasks overdue by more than `grace`: queued or retrying tasks that should have been picked up,
    /// running tasks whose lease ran out.
    pub async fn stale(&self, grace: Duration, limit: i64) -> Result<Vec<StaleTask>, sqlx::Error> {
        sqlx::query_as!(
            StaleTask,
            r#"SELECT id, state AS "state: TaskState", stream_id AS entry_id FROM tasks
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
    pub async fn mark_resent(&self, id: Uuid, entry_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE tasks SET stream_id = $2, run_at = now(), updated_at = now(),
                              lease_until = CASE WHEN state = 'running' THEN now() ELSE lease_until END
             WHERE id = $1 AND state IN ('queued', 'retrying', 'running')",
            id,
            entry_id,
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
