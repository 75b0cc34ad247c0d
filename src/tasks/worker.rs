//! `app tasks`: reads deliveries, runs them with bounded concurrency, retries with exponential backoff, buries
//! tasks that ran out of attempts, and keeps its claims alive while a task runs.
//!
//! Guarantees (each has an integration test): at-least-once delivery; a SIGKILLed worker loses nothing (its
//! entries are taken over after `claim_idle`); no task runs on two workers at once (PostgreSQL lease); SIGTERM
//! stops intake, lets running tasks finish within `SHUTDOWN_TIMEOUT` and hands back the rest.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::beat;
use super::kinds::TaskSpec;
use super::queue::{Delivery, Queue, is_nogroup, now_ms};
use super::store::{StartOutcome, StartedTask, TaskStore};
use crate::config::QueueSettings;

/// How long one XREADGROUP blocks: short, so a shutdown is noticed within a second.
const READ_BLOCK: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// What the worker's loops share.
pub(crate) struct WorkerCore {
    pub store: TaskStore,
    pub queue: Queue,
    pub settings: QueueSettings,
    pub consumer: String,
    /// Entries this worker holds right now (entry id → task id): their claims and leases are kept alive.
    pub in_flight: Mutex<HashMap<String, uuid::Uuid>>,
}

pub struct Worker {
    core: Arc<WorkerCore>,
}

/// A consumer name unique to this process: a restarted worker is a new consumer, the old one is cleaned up.
fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// `base · 2^(attempt-1)`, capped.
pub fn retry_delay(base: Duration, attempt: i32) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 20) as u32;
    base.saturating_mul(2u32.saturating_pow(exponent))
        .min(MAX_RETRY_DELAY)
}

impl Worker {
    pub fn new(store: TaskStore, queue: Queue, settings: QueueSettings) -> Self {
        Self {
            core: Arc::new(WorkerCore {
                store,
                queue,
                settings,
                consumer: consumer_name(),
                in_flight: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn consumer(&self) -> &str {
        &self.core.consumer
    }

    /// Runs until `shutdown` resolves, then drains within `shutdown_timeout`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
        shutdown_timeout: Duration,
    ) -> anyhow::Result<()> {
        let core = self.core;
        core.queue.ensure_group().await?;
        tracing::info!(consumer = %core.consumer, concurrency = core.settings.concurrency, "worker started");

        let (stop_intake, intake_stopped) = watch::channel(false);
        let (stop_maintenance, maintenance_stopped) = watch::channel(false);
        let maintenance = beat::spawn_maintenance(core.clone(), maintenance_stopped);

        let intake = tokio::spawn(intake_loop(core.clone(), intake_stopped));
        shutdown.await;
        // The budget counts from the signal, not from when intake noticed it (a blocking read ends first).
        let deadline = tokio::time::Instant::now() + shutdown_timeout;
        tracing::info!("shutdown requested: no new tasks are taken");
        let _ = stop_intake.send(true);
        let mut running = intake.await?;

        let drained = tokio::time::timeout_at(deadline, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            running.abort_all();
            while running.join_next().await.is_some() {}
            hand_back_in_flight(&core).await;
        }
        let _ = stop_maintenance.send(true);
        for job in maintenance {
            let _ = job.await;
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}

/// Takes deliveries while there is capacity; returns the set of running tasks when told to stop.
async fn intake_loop(core: Arc<WorkerCore>, mut stop: watch::Receiver<bool>) -> JoinSet<()> {
    let slots = Arc::new(Semaphore::new(core.settings.concurrency));
    let mut running = JoinSet::new();
    let mut blocking = None;
    let mut claim_cursor = String::from("0-0");
    let mut next_claim_scan = Instant::now();
    let mut backoff = Duration::from_millis(100);

    while !*stop.borrow() {
        while running.try_join_next().is_some() {}
        let free = slots.available_permits();
        if free == 0 {
            tokio::select! {
                _ = running.join_next() => {}
                _ = stop.changed() => {}
            }
            continue;
        }

        let fetched = fetch(
            &core,
            &mut blocking,
            &mut claim_cursor,
            &mut next_claim_scan,
            free,
        )
        .await;
        let deliveries = match fetched {
            Ok(deliveries) => {
                backoff = Duration::from_millis(100);
                deliveries
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot read the queue");
                blocking = None;
                if is_nogroup(&err) {
                    // Redis lost the group (restart without persistence): recreate it; the reconciler resends.
                    let _ = core.queue.ensure_group().await;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };

        for delivery in deliveries {
            if *stop.borrow() {
                // Received while stopping: give it straight back rather than start it.
                if let Err(err) = core
                    .queue
                    .hand_back(delivery.task_id, &delivery.entry_id)
                    .await
                {
                    tracing::warn!(error = %err, "could not hand back a delivery; it will be reclaimed");
                }
                continue;
            }
            let Ok(permit) = slots.clone().acquire_owned().await else {
                break;
            };
            core.in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(delivery.entry_id.clone(), delivery.task_id);
            let core = core.clone();
            running.spawn(async move {
                handle(&core, &delivery).await;
                core.in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&delivery.entry_id);
                drop(permit);
            });
        }
    }
    running
}

/// Abandoned entries first (periodically), then new ones.
async fn fetch(
    core: &WorkerCore,
    blocking: &mut Option<redis::aio::MultiplexedConnection>,
    claim_cursor: &mut String,
    next_claim_scan: &mut Instant,
    free: usize,
) -> redis::RedisResult<Vec<Delivery>> {
    if Instant::now() >= *next_claim_scan {
        let (claimed, cursor) = core
            .queue
            .claim_abandoned(&core.consumer, core.settings.claim_idle, claim_cursor, free)
            .await?;
        if cursor == "0-0" {
            *next_claim_scan = Instant::now() + core.settings.claim_idle / 4;
        }
        *claim_cursor = cursor;
        if !claimed.is_empty() {
            tracing::info!(
                count = claimed.len(),
                "took over tasks abandoned by another worker"
            );
            return Ok(claimed);
        }
    }
    if blocking.is_none() {
        *blocking = Some(core.queue.blocking_connection(READ_BLOCK).await?);
    }
    let Some(conn) = blocking.as_mut() else {
        return Ok(Vec::new());
    };
    core.queue
        .read_new(conn, &core.consumer, free, READ_BLOCK)
        .await
}

/// One delivery: start it (taking the lease), or drop it, or leave it to the worker that holds it.
async fn handle(core: &WorkerCore, delivery: &Delivery) {
    let outcome = core
        .store
        .start(
            delivery.task_id,
            &core.consumer,
            &delivery.entry_id,
            core.settings.claim_idle,
        )
        .await;
    match outcome {
        Ok(StartOutcome::Started(task)) => run_started(core, task, &delivery.entry_id).await,
        Ok(StartOutcome::Drop(reason)) => {
            tracing::debug!(task_id = %delivery.task_id, reason, "dropping a delivery");
            if let Err(err) = core.queue.ack(&delivery.entry_id).await {
                tracing::warn!(error = %err, "could not acknowledge a dropped delivery");
            }
        }
        Ok(StartOutcome::HeldElsewhere) => {
            // Left pending: if the holder dies, its lease ends and the entry is taken over again.
            tracing::debug!(task_id = %delivery.task_id, "task is running on another worker");
        }
        Err(err) => {
            tracing::warn!(task_id = %delivery.task_id, error = %err,
                "database unavailable; the delivery stays pending and will be retried");
        }
    }
}

async fn run_started(core: &WorkerCore, task: StartedTask, entry_id: &str) {
    let span = tracing::info_span!(
        "task",
        task_id = %task.id,
        kind = %task.kind,
        request_id = task.request_id.as_deref().unwrap_or("-"),
        attempt = task.attempts,
    );
    async move {
        let started = Instant::now();
        let outcome = if task.attempts > task.max_attempts {
            Err(format!(
                "gave up after {} attempts; the last one was interrupted (worker crash or timeout)",
                task.max_attempts
            ))
        } else {
            tracing::info!("task started");
            execute(&task, core.settings.task_timeout).await
        };
        let label = finish(core, &task, entry_id, outcome).await;
        let kind = task.kind.clone();
        metrics::counter!("tasks_total", "kind" => kind.clone(), "outcome" => label).increment(1);
        metrics::histogram!("task_duration_seconds", "kind" => kind).record(started.elapsed());
    }
    .instrument(span)
    .await
}

async fn execute(task: &StartedTask, timeout: Duration) -> Result<serde_json::Value, String> {
    let spec = match TaskSpec::parse(&task.kind, &task.payload) {
        Ok(spec) => spec,
        Err(err) => return Err(err.to_string()),
    };
    match tokio::time::timeout(timeout, spec.run()).await {
        Ok(result) => result,
        Err(_) => Err(format!("timed out after {}s", timeout.as_secs_f64())),
    }
}

/// Records the outcome in PostgreSQL first, then retires the entry in Redis: a crash in between only causes a
/// redelivery, which finds the task finished and is dropped.
async fn finish(
    core: &WorkerCore,
    task: &StartedTask,
    entry_id: &str,
    outcome: Result<serde_json::Value, String>,
) -> &'static str {
    let store = &core.store;
    let queue = &core.queue;
    let (label, recorded, retired) = match outcome {
        Ok(value) => {
            let recorded = store.mark_done(task.id, &core.consumer, &value).await;
            let retired = queue.ack(entry_id).await;
            tracing::info!("task done");
            ("done", recorded, retired)
        }
        Err(error) if task.attempts < task.max_attempts => {
            let delay = retry_delay(core.settings.retry_base, task.attempts);
            let recorded = store
                .mark_failed(task.id, &core.consumer, &error, Some(delay))
                .await;
            let due = now_ms() + delay.as_millis() as i64;
            let retired = queue.schedule_retry(task.id, entry_id, due).await;
            tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "task failed; will retry");
            ("retry", recorded, retired)
        }
        Err(error) => {
            let recorded = store
                .mark_failed(task.id, &core.consumer, &error, None)
                .await;
            let retired = queue.bury(task.id, entry_id).await;
            tracing::error!(%error, attempts = task.attempts, "task dead");
            ("dead", recorded, retired)
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
    label
}

/// After the shutdown timeout: give every interrupted task back, in PostgreSQL and in Redis.
async fn hand_back_in_flight(core: &WorkerCore) {
    let held: Vec<(String, uuid::Uuid)> = core
        .in_flight
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    for (entry_id, task_id) in held {
        let in_db = core.store.hand_back(task_id, &core.consumer).await;
        let in_queue = core.queue.hand_back(task_id, &entry_id).await;
        match (in_db, in_queue) {
            (Ok(_), Ok(_)) => tracing::info!(%task_id, "handed back an interrupted task"),
            (db, queue) => tracing::warn!(%task_id, db_ok = db.is_ok(), queue_ok = queue.is_ok(),
                "could not fully hand back a task; it will be taken over after its lease ends"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_and_is_capped() {
        let base = Duration::from_millis(500);
        assert_eq!(retry_delay(base, 1), Duration::from_millis(500));
        assert_eq!(retry_delay(base, 2), Duration::from_millis(1000));
        assert_eq!(retry_delay(base, 4), Duration::from_millis(4000));
        assert_eq!(retry_delay(base, 40), MAX_RETRY_DELAY);
    }
}
