//! `/metrics` on its own listener (`METRICS_ADDR`), for the web server and the worker alike; also what
//! `app healthcheck --metrics` probes on the worker.

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::security_headers;
use crate::metrics::handle;

/// Serves `/metrics` on `listener` until the returned task is aborted.
pub fn spawn(listener: TcpListener) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(axum::serve(listener, router(handle())).into_future())
}

/// `/metrics`, also what `app healthcheck --metrics` probes on the worker.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .layer(axum::middleware::map_response(security_headers::add))
}
