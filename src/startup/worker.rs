//! Building and running the tasks worker (`app tasks`), the way zero2prod runs its delivery worker beside
//! `Application::build`.

use std::future::Future;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::db;
use crate::http::metrics_endpoint;
use crate::tasks::worker::Worker;
use crate::tasks::{Queue, TaskStore};

/// Applies the migrations with `MIGRATE_ON_START`, serves `/metrics` on `METRICS_ADDR` (the worker's only port,
/// which its healthcheck probes), connects to both stores and runs the worker until `shutdown` resolves. Call
/// after the dependencies are up (`commands::wait`).
pub async fn run_worker_until_stopped(
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    db::migrate_on_start(&settings).await?;
    let metrics = metrics_endpoint::spawn(TcpListener::bind(settings.metrics_addr).await?);
    let queue = Queue::connect(settings.redis_url.expose_secret(), &settings.tasks.name).await?;
    let worker = Worker::new(
        TaskStore::new(db::worker_pool(&settings)),
        queue,
        settings.tasks.clone(),
    );
    let result = worker
        .run_until_stopped(shutdown, settings.shutdown_timeout)
        .await;
    metrics.abort();
    result
}
