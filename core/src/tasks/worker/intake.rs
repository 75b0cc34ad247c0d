//! Taking deliveries and running them: abandoned entries first, then new ones, with bounded concurrency. The
//! worker decides each attempt's outcome here; the lifecycle records it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::capacity::{Capacity, Slot};
use super::context::WorkerContext;
use crate::db::KeptConnection;
use crate::tasks::kinds::TaskSpec;
use crate::tasks::lifecycle::Failure;
use crate::tasks::queue::{Delivery, is_nogroup};
use crate::tasks::records::{StartOutcome, StartedTask};

/// How long one XREADGROUP blocks: short, so a shutdown is noticed within a second.
const READ_BLOCK: Duration = Duration::from_secs(1);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// `base · 2^(attempt-1)`, capped.
pub fn retry_delay(base: Duration, attempt: i32) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 20) as u32;
    base.saturating_mul(2u32.saturating_pow(exponent))
        .min(MAX_RETRY_DELAY)
}

/// Takes deliveries while there is room; returns the set of tasks still running or being recorded when told to
/// stop.
pub async fn intake_loop(core: Arc<WorkerContext>, mut stop: watch::Receiver<bool>) -> JoinSet<()> {
    let capacity = Arc::new(Capacity::new(core.settings.concurrency));
    let mut running = JoinSet::new();
    let mut reader = Reader::new();
    let mut kept = core.store.keep_connection();
    let mut backoff = Duration::from_millis(100);

    while !*stop.borrow() {
        while running.try_join_next().is_some() {}
        let first = tokio::select! {
            room = capacity.one() => room,
            _ = stop.changed() => continue,
        };
        let Some(first) = first else { break };
        let mut rooms = vec![first];
        rooms.extend(capacity.more(2 * core.settings.concurrency));

        let deliveries = match reader.fetch(&core, rooms.len()).await {
            Ok(deliveries) => {
                backoff = Duration::from_millis(100);
                deliveries
            }
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot read the queue");
                reader.blocking = None;
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

        if *stop.borrow() {
            // Received while stopping: give them straight back rather than start them.
            for delivery in deliveries {
                if let Err(err) = core
                    .queue
                    .hand_back(delivery.task_id, &delivery.entry_id)
                    .await
                {
                    tracing::warn!(error = %err, "could not hand back a delivery; it will be reclaimed");
                }
            }
            continue;
        }
        // At most `rooms.len()` deliveries were read: each has its room.
        for delivery in &deliveries {
            core.hold(&delivery.entry_id, delivery.task_id);
        }
        for ((delivery, task), room) in start_all(&core, &mut kept, &deliveries)
            .await
            .into_iter()
            .zip(rooms)
        {
            let (core, capacity) = (core.clone(), capacity.clone());
            running.spawn(async move {
                // Started (the lease is held and kept alive) but not run until a slot is free.
                if let Some(slot) = capacity.slot(room.reserved).await {
                    run_started(&core, task, &delivery.entry_id, slot).await;
                }
                core.release(&delivery.entry_id);
                drop(room.unrecorded);
            });
        }
    }
    running
}

/// Where the intake is in the queue: its blocking connection and its scan for abandoned entries.
struct Reader {
    blocking: Option<redis::aio::MultiplexedConnection>,
    claim_cursor: String,
    next_claim_scan: Instant,
}

impl Reader {
    fn new() -> Self {
        Self {
            blocking: None,
            claim_cursor: String::from("0-0"),
            next_claim_scan: Instant::now(),
        }
    }

    /// Abandoned entries first (periodically), then new ones.
    async fn fetch(
        &mut self,
        core: &WorkerContext,
        free: usize,
    ) -> redis::RedisResult<Vec<Delivery>> {
        if Instant::now() >= self.next_claim_scan {
            let (claimed, cursor) = core
                .queue
                .claim_abandoned(
                    &core.name,
                    core.settings.claim_idle,
                    &self.claim_cursor,
                    free,
                )
                .await?;
            // One step of the scan per interval while it finds nothing. Scanning on until the cursor wrapped cost
            // a round trip on every read under load: new deliveries kept the pending list growing ahead of it.
            if claimed.is_empty() {
                self.next_claim_scan = Instant::now() + core.settings.claim_idle / 4;
            }
            self.claim_cursor = cursor;
            if !claimed.is_empty() {
                tracing::info!(
                    count = claimed.len(),
                    "took over tasks abandoned by another worker"
                );
                return Ok(claimed);
            }
        }
        let conn = match &mut self.blocking {
            Some(conn) => conn,
            empty => empty.insert(core.queue.blocking_connection(READ_BLOCK).await?),
        };
        core.queue
            .read_new(conn, &core.name, free, READ_BLOCK)
            .await
    }
}

/// Starts a batch of deliveries in one `UPDATE` (each taking its lease) and returns those started, with their
/// deliveries. The others are dropped (finished, unknown, not due), or left to the worker that holds them, or left
/// pending when PostgreSQL is unavailable; either way they are no longer held here.
async fn start_all(
    core: &WorkerContext,
    kept: &mut KeptConnection,
    deliveries: &[Delivery],
) -> Vec<(Delivery, StartedTask)> {
    let (ids, entries): (Vec<Uuid>, Vec<String>) = deliveries
        .iter()
        .map(|d| (d.task_id, d.entry_id.clone()))
        .unzip();
    let outcomes = match core
        .store
        .start_many(kept, &ids, &entries, &core.name, core.settings.claim_idle)
        .await
    {
        Ok(outcomes) => outcomes,
        Err(err) => {
            tracing::warn!(deliveries = deliveries.len(), error = %err,
                "database unavailable; the deliveries stay pending and will be retried");
            for delivery in deliveries {
                core.release(&delivery.entry_id);
            }
            return Vec::new();
        }
    };
    let mut started = Vec::with_capacity(deliveries.len());
    let mut dropped = Vec::new();
    for (delivery, outcome) in deliveries.iter().zip(outcomes) {
        match outcome {
            StartOutcome::Started(task) => {
                started.push((delivery.clone(), task));
                continue;
            }
            StartOutcome::Drop(reason) => {
                tracing::debug!(task_id = %delivery.task_id, reason, "dropping a delivery");
                dropped.push(delivery.entry_id.as_str());
            }
            StartOutcome::HeldElsewhere => {
                // Left pending: if the holder dies, its lease ends and the entry is taken over again.
                tracing::debug!(task_id = %delivery.task_id, "task is running on another worker");
            }
        }
        core.release(&delivery.entry_id);
    }
    if let Err(err) = core.queue.ack_many(&dropped).await {
        tracing::warn!(error = %err, "could not acknowledge dropped deliveries");
    }
    started
}

/// Runs a started task in its slot, gives the slot back, then records the outcome.
async fn run_started(core: &WorkerContext, task: StartedTask, entry_id: &str, slot: Slot) {
    let span = tracing::info_span!(
        "task",
        task_id = %task.id,
        kind = %task.kind,
        request_id = task.request_id.as_deref().unwrap_or("-"),
        attempt = task.attempts,
    );
    async move {
        let started = Instant::now();
        let result = if task.attempts > task.max_attempts {
            Err(format!(
                "gave up after {} attempts; the last one was interrupted (worker crash or timeout)",
                task.max_attempts
            ))
        } else {
            tracing::info!("task started");
            execute(&task, core.settings.task_timeout).await
        };
        let outcome = result.map_err(|error| {
            if task.attempts < task.max_attempts {
                Failure::Retry {
                    error,
                    delay: retry_delay(core.settings.retry_base, task.attempts),
                }
            } else {
                Failure::Dead { error }
            }
        });
        drop(slot);
        let label = match &outcome {
            Ok(_) => "done",
            Err(failure) => failure.label(),
        };
        match outcome {
            Ok(value) => core.done.done(&task, entry_id, value).await,
            Err(failure) => {
                core.lifecycle()
                    .finish(&core.name, &task, entry_id, failure)
                    .await
            }
        }
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
