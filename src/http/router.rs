//! The full router (`app()`): the pages and the API with the whole middleware stack, and the probes beside it.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{get, post};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::services::ServeDir;
use tower_http::timeout::TimeoutLayer;

use super::api_token::{self, ApiToken};
use super::error::ApiError;
use super::hosts::{self, AllowedHosts};
use super::state::AppState;
use super::{
    access_log, health, page, request_id, request_metrics, security_headers, static_files,
    tasks_api,
};

/// Smaller bodies are sent as they are: below about a kilobyte gzip saves a few hundred bytes at best and costs
/// more CPU than the bytes are worth. Already-encoded bodies (the `.gz` static files) are never compressed again.
const COMPRESS_ABOVE_BYTES: u64 = 1024;

/// The full router: the pages and the API with the whole middleware stack, and the probes beside it with only what
/// every answer needs. Layers run top to bottom for a request:
///
/// * every answer: security headers (so every answer has them, a refused Host too), request id;
/// * pages and API: access log, metrics, Host check, compression, timeout, body limit, the API token (only with
///   `API_TOKEN`, and only for `/api/...`), then the route;
/// * probes (`/healthz`, `/readyz`): the route (plus the access log with `LOG_PROBES=true`). An orchestrator
///   calls them by IP every few seconds: no Host check, no access line, no request metrics, and nothing else
///   that would make liveness cost more than answering. `/readyz` bounds its own checks (800 ms each).
///
/// What each layer costs is measured by `bench/layers.rs` (see bench/README.md).
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let mut site = Router::new()
        .route("/", get(page::status_page))
        .route("/tasks", post(page::enqueue_form))
        .route("/api/tasks", post(tasks_api::create).get(tasks_api::list))
        .route("/api/tasks/{id}", get(tasks_api::get));
    if settings.debug {
        site = match &settings.static_dir {
            Some(dir) => site.nest_service("/static", ServeDir::new(dir)),
            None => site.route("/static/{*path}", get(static_files::embedded)),
        };
    }
    let mut site = site
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") });
    if let Some(token) = &settings.api_token {
        site = site.layer(middleware::from_fn_with_state(
            Arc::new(ApiToken::new(token)),
            api_token::require,
        ));
    }
    let site = site
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(
            CompressionLayer::new().compress_when(
                SizeAbove::new(COMPRESS_ABOVE_BYTES)
                    .and(NotForContentType::GRPC)
                    .and(NotForContentType::IMAGES)
                    .and(NotForContentType::SSE),
            ),
        )
        .layer(middleware::from_fn_with_state(
            Arc::new(AllowedHosts::new(settings.allowed_hosts.clone())),
            hosts::check,
        ))
        .layer(middleware::from_fn(request_metrics::track_requests))
        .layer(middleware::from_fn(access_log::log));
    let mut probes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz));
    if settings.log_probes {
        probes = probes.layer(middleware::from_fn(access_log::log));
    }
    site.merge(probes)
        .layer(middleware::from_fn(request_id::propagate))
        .layer(middleware::map_response(security_headers::add))
        .with_state(state)
}
