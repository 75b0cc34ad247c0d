//! The worker's background loops (Celery's "beat" and more): claim refresh, retry promotion, heartbeat, and the
//! periodic jobs that exactly one worker runs per period (reconcile, purge, consumer clean-up).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::context::WorkerContext;
use crate::tasks::queue::HEARTBEAT_EVERY;

const PROMOTE_EVERY: Duration = Duration::from_millis(250);
const PURGE_EVERY: Duration = Duration::from_secs(600);
const CONSUMER_CLEANUP_EVERY: Duration = Duration::from_secs(60);
const RECONCILE_BATCH: i64 = 200;

/// Starts every loop; each ends when `stop` turns true.
pub fn spawn(core: Arc<WorkerContext>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
    let claim_idle = core.settings.claim_idle;
    vec![
        every(stop.clone(), claim_idle / 3, core.clone(), refresh_claims),
        every(stop.clone(), PROMOTE_EVERY, core.clone(), promote_retries),
        every(stop.clone(), HEARTBEAT_EVERY, core.clone(), heartbeat),
        every(
            stop.clone(),
            reconcile_period(claim_idle),
            core.clone(),
            move |c| exclusive(c, "reconcile", reconcile_period(claim_idle), reconcile),
        ),
        every(stop.clone(), PURGE_EVERY, core.clone(), |c| {
            exclusive(c, "purge", PURGE_EVERY, purge)
        }),
        every(stop, CONSUMER_CLEANUP_EVERY, core, |c| {
            exclusive(
                c,
                "consumers",
                CONSUMER_CLEANUP_EVERY,
                remove_departed_consumers,
            )
        }),
    ]
}

/// A task unfinished this long past its due time (or lease) is checked against Redis.
fn reconcile_period(claim_idle: Duration) -> Duration {
    claim_idle * 2
}

fn every<F, Fut>(
    mut stop: watch::Receiver<bool>,
    period: Duration,
    core: Arc<WorkerContext>,
    job: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<WorkerContext>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => job(core.clone()).await,
                _ = stop.changed() => return,
            }
        }
    })
}

/// Runs `job` only in the worker that takes this period's lock, so several workers run it once per period.
async fn exclusive<F, Fut>(core: Arc<WorkerContext>, name: &'static str, period: Duration, job: F)
where
    F: FnOnce(Arc<WorkerContext>) -> Fut,
    Fut: Future<Output = ()>,
{
    // A little shorter than the period: a lock of exactly one period, taken a few ms after a tick, is still held
    // at this worker's next tick, so a lone worker would run the job only every other period.
    let lock_for = period - period / 10;
    match core.queue.try_lock_period(name, &core.name, lock_for).await {
        Ok(true) => job(core).await,
        Ok(false) => {}
        Err(err) => {
            tracing::debug!(job = name, error = %err, "periodic job skipped: Redis unavailable")
        }
    }
}

/// Keeps the claims (Redis) and leases (PostgreSQL) of running tasks alive, so nobody takes them over.
async fn refresh_claims(core: Arc<WorkerContext>) {
    let held = core.held();
    if held.is_empty() {
        return;
    }
    let entries: Vec<String> = held.iter().map(|(e, _)| e.clone()).collect();
    if let Err(err) = core.queue.refresh_claims(&core.name, &entries).await {
        tracing::warn!(error = %err, "could not refresh claims");
    }
    for (_, task_id) in held {
        match core
            .store
            .renew_lease(task_id, &core.name, core.settings.claim_idle)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::debug!(%task_id, "lease not renewed: task no longer held"),
            Err(err) => tracing::warn!(%task_id, error = %err, "could not renew a lease"),
        }
    }
}

async fn promote_retries(core: Arc<WorkerContext>) {
    match core.queue.promote_due_retries(100).await {
        Ok(0) => {}
        Ok(n) => tracing::debug!(count = n, "retries due: back on the queue"),
        Err(err) => tracing::debug!(error = %err, "could not promote retries"),
    }
}

async fn heartbeat(core: Arc<WorkerContext>) {
    if let Err(err) = core.queue.heartbeat(&core.name).await {
        tracing::debug!(error = %err, "heartbeat not written");
    }
    if let Ok(depth) = core.queue.depth().await {
        metrics::gauge!("task_queue_depth").set(depth as f64);
    }
}

/// PostgreSQL is the source of truth: an unfinished, overdue task that Redis no longer carries (Redis lost data,
/// or a process died between its two writes) is sent again. Duplicates are harmless: the lease decides.
async fn reconcile(core: Arc<WorkerContext>) {
    let grace = reconcile_period(core.settings.claim_idle);
    let stale = match core.store.stale(grace, RECONCILE_BATCH).await {
        Ok(stale) => stale,
        Err(err) => {
            tracing::warn!(error = %err, "reconcile skipped: database unavailable");
            return;
        }
    };
    let mut resent = 0;
    for task in stale {
        match core.lifecycle().resend_if_lost(&task).await {
            Ok(true) => resent += 1,
            Ok(false) => {}
            Err(err) => {
                tracing::warn!(error = %err, "reconcile stopped: Redis unavailable");
                return;
            }
        }
    }
    if resent > 0 {
        metrics::counter!("tasks_resent_total").increment(resent);
    }
}

async fn purge(core: Arc<WorkerContext>) {
    match core.store.purge_finished(core.settings.retention).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "purged old finished tasks"),
        Err(err) => tracing::warn!(error = %err, "purge skipped: database unavailable"),
    }
    match core
        .store
        .purge_idempotency_keys(core.settings.idempotency_ttl)
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "purged expired idempotency keys"),
        Err(err) => tracing::warn!(error = %err, "key purge skipped: database unavailable"),
    }
}

async fn remove_departed_consumers(core: Arc<WorkerContext>) {
    let idle = (core.settings.claim_idle * 6).max(Duration::from_secs(60));
    match core.queue.remove_departed_consumers(idle).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "removed consumers that left the group"),
        Err(err) => tracing::debug!(error = %err, "consumer clean-up skipped"),
    }
}
