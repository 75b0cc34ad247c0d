//! Task records in PostgreSQL: the source of truth for every task's state.
//!
//! A worker may only start a task through [`TaskStore::start`], which takes a lease in the same `UPDATE`; that is
//! what keeps two workers from running one task at the same time, whatever Redis delivers twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::types::PgInterval;
use uuid::Uuid;

use super::kinds::TaskSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Queued,
    Running,
    Retrying,
    Done,
    Dead,
}

impl TaskState {
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Done | Self::Dead)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Done => "done",
            Self::Dead => "dead",
        }
    }
}

/// A task as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TaskRecord {
    pub id: Uuid,
    pub kind: String,
    pub payload: Value,
    pub state: TaskState,
    pub attempts: i32,
    pub max_attempts: i32,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub request_id: Option<String>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The columns the status page shows (no jsonb payload or result to transfer and decode).
#[derive(Debug, Clone)]
pub struct TaskSummary {
    pub id: Uuid,
    pub kind: String,
    pub state: TaskState,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub error: Option<String>,
}

/// A task a worker has just started (its lease is held).
#[derive(Debug, Clone)]
pub struct StartedTask {
    pub id: Uuid,
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
    pub request_id: Option<String>,
}

/// What [`TaskStore::start`] found.
#[derive(Debug)]
pub enum StartOutcome {
    Started(StartedTask),
    /// Finished, unknown or not yet due: the delivery can be acknowledged and dropped.
    Drop(&'static str),
    /// Another worker holds a live lease: leave the delivery pending, never run it concurrently.
    HeldElsewhere,
}

/// An unfinished task the reconciler should check against Redis.
#[derive(Debug)]
pub struct StaleTask {
    pub id: Uuid,
    pub state: TaskState,
    pub stream_id: Option<String>,
}

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

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Inserts a queued task. It is committed before the work goes to Redis, so a worker never sees an entry
    /// whose task it cannot find.
    pub async fn insert(
        &self,
        id: Uuid,
        spec: &TaskSpec,
        max_attempts: i32,
        request_id: Option<&str>,
    ) -> Result<TaskRecord, sqlx::Error> {
        sqlx::query_as!(
            TaskRecord,
            r#"INSERT INTO tasks (id, kind, payload, max_attempts, request_id)
               VALUES ($1, $2, $3, $4, $5)
               RETURNING id, kind, payload, state AS "state: TaskState", attempts, max_attempts,
                         result, error, request_id, run_at, created_at, updated_at, started_at, finished_at"#,
            id,
            spec.kind(),
            spec.payload(),
            max_attempts,
            request_id,
        )
        .fetch_one(&self.pool)
        .await
    }

    /// Remembers which stream entry carries a new task (unless a worker already recorded it).
    pub async fn set_stream_id(&self, id: Uuid, stream_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "UPDATE tasks SET stream_id = $2 WHERE id = $1 AND stream_id IS NULL",
            id,
            stream_id
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a task that never reached Redis, so a failed enqueue leaves nothing behind.
    pub async fn delete_unsent(&self, id: Uuid) -> Result<(), sqlx::Error> {
        sqlx::query!(
            "DELETE FROM tasks WHERE id = $1 AND stream_id IS NULL AND state = 'queued'",
            id
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

    /// Takes the lease and counts the attempt (counted at start, so a task that keeps crashing its worker still
    /// ends `dead`). A task already past its attempts is marked `dead` here.
    pub async fn start(
        &self,
        id: Uuid,
        worker: &str,
        stream_id: &str,
        lease: Duration,
    ) -> Result<StartOutcome, sqlx::Error> {
        let started = sqlx::query!(
            r#"UPDATE tasks
               SET state = 'running', attempts = attempts + 1, worker = $2, stream_id = $3,
                   lease_until = now() + $4::interval, started_at = now(), updated_at = now(), error = NULL
               WHERE id = $1
                 AND (state = 'queued'
                      OR (state = 'retrying' AND run_at <= now() + interval '1 second')
                      OR (state = 'running' AND lease_until < now() + interval '1 second'))
               RETURNING kind, payload, attempts, max_attempts, request_id"#,
            id,
            worker,
            stream_id,
            interval(lease),
        )
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = started {
            let task = StartedTask {
                id,
                kind: row.kind,
                payload: row.payload,
                attempts: row.attempts,
                max_attempts: row.max_attempts,
                request_id: row.request_id,
            };
            return Ok(StartOutcome::Started(task));
        }
        let state = sqlx::query_scalar!(
            r#"SELECT state AS "state: TaskState" FROM tasks WHERE id = $1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(match state {
            None => StartOutcome::Drop("unknown task"),
            Some(s) if s.is_finished() => StartOutcome::Drop("already finished"),
            Some(TaskState::Running) => StartOutcome::HeldElsewhere,
            Some(_) => StartOutcome::Drop("not due yet"),
        })
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

    pub async fn mark_done(
        &self,
        id: Uuid,
        worker: &str,
        result: &Value,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query!(
            "UPDATE tasks SET state = 'done', result = $3, error = NULL, lease_until = NULL,
                              finished_at = now(), updated_at = now()
             WHERE id = $1 AND worker = $2 AND state = 'running'",
            id,
            worker,
            result,
        )
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
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
