//! The worker's writes of one attempt: the start (which takes the lease), the lease kept alive, and the outcome.
//! Each `WHERE` names the worker, so a worker that lost its lease changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::{TaskStore, interval};
use crate::db::KeptConnection;
use crate::tasks::records::{StartOutcome, StartedTask, TaskState};

impl TaskStore {
    /// Takes the lease and counts the attempt of each delivered task (`ids[i]` carried by entry `entry_ids[i]`), in
    /// one `UPDATE`; the outcomes come back in the order given. The attempt is counted at start, so a task that keeps
    /// crashing its worker still ends `dead`. A task delivered twice in one batch is started once, for the first of
    /// its entries; the other delivery finds it running.
    pub async fn start_many(
        &self,
        kept: &mut KeptConnection,
        ids: &[Uuid],
        entry_ids: &[String],
        worker: &str,
        lease: Duration,
    ) -> Result<Vec<StartOutcome>, sqlx::Error> {
        let started = loop {
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
                entry_ids,
                worker,
                interval(lease),
            )
            .fetch_all(kept.get().await?)
            .await;
            match started {
                Ok(rows) => break rows,
                Err(err) => kept.failed(err)?,
            }
        };

        let mut outcomes: Vec<Option<StartOutcome>> = ids.iter().map(|_| None).collect();
        for row in started {
            let delivery = ids
                .iter()
                .zip(entry_ids)
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
            .fetch_all(&mut *self.db.acquire().await?)
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
        .execute(&mut *self.db.acquire().await?)
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
            .fetch_all(kept.get().await?)
            .await;
            match done {
                Ok(ids) => return Ok(ids),
                Err(err) => kept.failed(err)?,
            }
        }
    }

    /// A connection of this store's pool, for a loop that queries back to back.
    pub fn keep_connection(&self) -> KeptConnection {
        KeptConnection::new(self.db.clone())
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
                .execute(&mut *self.db.acquire().await?)
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
                .execute(&mut *self.db.acquire().await?)
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
        .execute(&mut *self.db.acquire().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}
