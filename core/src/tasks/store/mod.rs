//! Task records in PostgreSQL: the source of truth for every task's state.
//!
//! A worker may only start a task through [`TaskStore::start_many`] (`attempts.rs`), which takes a lease in the same
//! `UPDATE`; that is what keeps two workers from running one task at the same time, whatever Redis delivers twice.
//! The `stream_id` column holds the id of the stream entry that carries the task (its entry id).

mod attempts;

use std::time::Duration;

use serde_json::Value;
use serde_json::value::RawValue;
use sqlx::postgres::types::PgInterval;
use uuid::Uuid;

use crate::db::Db;

use super::records::{KeyedTask, NewTask, StaleTask, TaskRecord, TaskState, TaskSummary};

/// Every query on the `tasks` table: new tasks and what readers see here, the worker's attempts in `attempts.rs`.
#[derive(Clone)]
pub struct TaskStore {
    db: Db,
}

fn interval(d: Duration) -> PgInterval {
    PgInterval {
        months: 0,
        days: 0,
        microseconds: d.as_micros().min(i64::MAX as u128) as i64,
    }
}

impl TaskStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// Inserts queued tasks in one statement and one commit (see `batches/enqueue.rs`), returning the records of
    /// those inserted, in no particular order. They are committed before the work goes to Redis, so a worker never
    /// sees an entry whose task it cannot find. A task whose `Idempotency-Key` is already taken (by an earlier
    /// request, or by another task of this batch) is not inserted: [`TaskStore::keyed_tasks`] finds what holds it.
    /// A key taken by a transaction still open waits for it, so a repeat sent while the first is being written finds
    /// the first's task.
    pub async fn insert_many(&self, tasks: &[NewTask]) -> Result<Vec<TaskRecord>, sqlx::Error> {
        let ids: Vec<Uuid> = tasks.iter().map(|t| t.id).collect();
        let kinds: Vec<&str> = tasks.iter().map(|t| t.spec.kind()).collect();
        let payloads: Vec<Value> = tasks.iter().map(|t| t.spec.payload()).collect();
        let max_attempts: Vec<i32> = tasks.iter().map(|t| t.max_attempts).collect();
        let request_ids: Vec<Option<&str>> =
            tasks.iter().map(|t| t.request_id.as_deref()).collect();
        let keys: Vec<Option<&str>> = tasks
            .iter()
            .map(|t| t.idempotency.as_ref().map(|i| i.key.as_str()))
            .collect();
        let hashes: Vec<Option<&[u8]>> = tasks
            .iter()
            .map(|t| t.idempotency.as_ref().map(|i| i.request_hash.as_slice()))
            .collect();
        sqlx::query_as!(
            TaskRecord,
            r#"WITH given AS (
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::int4[], $5::text[], $6::text[],
                                      $7::bytea[])
                   AS g(id, kind, payload, max_attempts, request_id, key, request_hash)
               ), claimed AS (
                 INSERT INTO idempotency_keys (key, request_hash, task_id)
                 SELECT key, request_hash, id FROM given WHERE key IS NOT NULL
                 ON CONFLICT (key) DO NOTHING
                 RETURNING task_id
               )
               INSERT INTO tasks (id, kind, payload, max_attempts, request_id)
               SELECT id, kind, payload, max_attempts, request_id FROM given
               WHERE key IS NULL OR id IN (SELECT task_id FROM claimed)
               RETURNING id, kind, payload AS "payload: Box<RawValue>", state AS "state: TaskState", attempts,
                         max_attempts, result AS "result: Box<RawValue>", error, request_id, run_at, created_at,
                         updated_at, started_at, finished_at"#,
            &ids,
            &kinds as &[&str],
            &payloads,
            &max_attempts,
            &request_ids as &[Option<&str>],
            &keys as &[Option<&str>],
            &hashes as &[Option<&[u8]>],
        )
        .fetch_all(&mut *self.db.acquire().await?)
        .await
    }

    /// The tasks that hold these idempotency keys, with the hash of the request that queued each.
    pub async fn keyed_tasks(&self, keys: &[&str]) -> Result<Vec<KeyedTask>, sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT k.key, k.request_hash,
                      t.id, t.kind, t.payload AS "payload: Box<RawValue>", t.state AS "state: TaskState",
                      t.attempts, t.max_attempts, t.result AS "result: Box<RawValue>", t.error, t.request_id, t.run_at, t.created_at, t.updated_at, t.started_at,
                      t.finished_at
               FROM idempotency_keys k JOIN tasks t ON t.id = k.task_id
               WHERE k.key = ANY($1)"#,
            keys as &[&str],
        )
        .fetch_all(&mut *self.db.acquire().await?)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| KeyedTask {
                key: r.key,
                request_hash: r.request_hash,
                record: TaskRecord {
                    id: r.id,
                    kind: r.kind,
                    payload: r.payload,
                    state: r.state,
                    attempts: r.attempts,
                    max_attempts: r.max_attempts,
                    result: r.result,
                    error: r.error,
                    request_id: r.request_id,
                    run_at: r.run_at,
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                },
            })
            .collect())
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
        .execute(&mut *self.db.acquire().await?)
        .await?;
        Ok(())
    }

    /// Removes tasks that never reached Redis, and their idempotency keys (a retry of the request may queue it
    /// again), so a failed enqueue leaves nothing behind.
    pub async fn delete_unsent(&self, ids: &[Uuid]) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "WITH gone AS (
               DELETE FROM tasks WHERE id = ANY($1) AND stream_id IS NULL AND state = 'queued' RETURNING id
             )
             DELETE FROM idempotency_keys WHERE task_id IN (SELECT id FROM gone)",
            ids
        )
        .execute(&mut *self.db.acquire().await?)
        .await?;
        Ok(())
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<TaskRecord>, sqlx::Error> {
        self.db
            .read(|conn| {
                Box::pin(
                    sqlx::query_as!(
                        TaskRecord,
                        r#"SELECT id, kind, payload AS "payload: Box<RawValue>", state AS "state: TaskState",
                                  attempts, max_attempts, result AS "result: Box<RawValue>", error, request_id,
                                  run_at, created_at, updated_at, started_at, finished_at
                           FROM tasks WHERE id = $1"#,
                        id
                    )
                    .fetch_optional(conn),
                )
            })
            .await
    }

    /// Newest first.
    pub async fn recent(&self, limit: i64) -> Result<Vec<TaskRecord>, sqlx::Error> {
        self.db
            .read(|conn| {
                Box::pin(
                    sqlx::query_as!(
                        TaskRecord,
                        r#"SELECT id, kind, payload AS "payload: Box<RawValue>", state AS "state: TaskState",
                                  attempts, max_attempts, result AS "result: Box<RawValue>", error, request_id,
                                  run_at, created_at, updated_at, started_at, finished_at
                           FROM tasks ORDER BY created_at DESC, id LIMIT $1"#,
                        limit
                    )
                    .fetch_all(conn),
                )
            })
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
        .fetch_all(&mut *self.db.acquire().await?)
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
        .fetch_all(&mut *self.db.acquire().await?)
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
        .execute(&mut *self.db.acquire().await?)
        .await?;
        Ok(())
    }

    /// Deletes idempotency keys older than `age`; returns how many.
    pub async fn purge_idempotency_keys(&self, age: Duration) -> Result<u64, sqlx::Error> {
        let done = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval",
            interval(age),
        )
        .execute(&mut *self.db.acquire().await?)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes finished tasks older than `age`; returns how many.
    pub async fn purge_finished(&self, age: Duration) -> Result<u64, sqlx::Error> {
        let done = sqlx::query!(
            "DELETE FROM tasks WHERE state IN ('done', 'dead') AND finished_at < now() - $1::interval",
            interval(age),
        )
        .execute(&mut *self.db.acquire().await?)
        .await?;
        Ok(done.rows_affected())
    }
}
