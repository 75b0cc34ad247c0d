//! The access log: one `request` span around each request (so every line a handler logs carries its method, path
//! and request id) and one line when the answer is ready, with its status and latency.
//!
//! Put on the pages and the API; the probes get it only with `LOG_PROBES=true` (`http::router::app`), since an
//! orchestrator calls them every few seconds.

use std::time::Instant;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::request_id::RequestId;

/// The middleware; it runs inside [`super::request_id::propagate`], whose id it logs.
pub async fn log(request: Request, next: Next) -> Response {
    if !tracing::enabled!(tracing::Level::INFO) {
        return next.run(request).await;
    }
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = request
            .extensions()
            .get::<RequestId>()
            .map_or("-", RequestId::as_str),
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    });
    response
}
