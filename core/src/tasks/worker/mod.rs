//! `app tasks`: reads deliveries, runs them with bounded concurrency, retries with exponential backoff, buries
//! tasks that ran out of attempts, and keeps its claims alive while a task runs.
//!
//! Guarantees (each has an integration test): at-least-once delivery; a SIGKILLed worker loses nothing (its
//! entries are taken over after `claim_idle`); no task runs on two workers at once (PostgreSQL lease); SIGTERM
//! stops intake, lets running tasks finish within `SHUTDOWN_TIMEOUT` and hands back the rest.

mod capacity;
mod context;
mod intake;
mod maintenance;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use self::context::WorkerContext;
use super::queue::Queue;
use super::store::TaskStore;
use crate::config::TaskSettings;

pub struct Worker {
    core: Arc<WorkerContext>,
}

/// A name unique to this process: a restarted worker is a new consumer of the Redis group, the old one is cleaned
/// up.
fn worker_name() -> String {
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

impl Worker {
    /// Call on the runtime it runs on: it starts the recorder of successes.
    pub fn new(store: TaskStore, queue: Queue, settings: TaskSettings) -> Self {
        Self {
            core: Arc::new(WorkerContext::new(store, queue, settings, worker_name())),
        }
    }

    /// Runs until `shutdown` resolves, then drains within `shutdown_timeout`.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
        shutdown_timeout: Duration,
    ) -> anyhow::Result<()> {
        let core = self.core;
        core.queue.ensure_group().await?;
        tracing::info!(worker = %core.name, concurrency = core.settings.concurrency, "worker started");

        let (stop_intake, intake_stopped) = watch::channel(false);
        let (stop_maintenance, maintenance_stopped) = watch::channel(false);
        let maintenance = maintenance::spawn(core.clone(), maintenance_stopped);

        let intake = tokio::spawn(intake::intake_loop(core.clone(), intake_stopped));
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
            // After the shutdown timeout: give every interrupted task back, in PostgreSQL and in Redis.
            for (entry_id, task_id) in core.take_held() {
                core.lifecycle()
                    .hand_back(&core.name, task_id, &entry_id)
                    .await;
            }
        }
        let _ = stop_maintenance.send(true);
        for job in maintenance {
            let _ = job.await;
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}
