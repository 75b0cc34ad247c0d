//! `ALLOWED_HOSTS`, like Django: a request for any other `Host` gets 400. The probes (`/healthz`, `/readyz`)
//! are exempt, so orchestrators can call them by IP.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::state::AppState;

const EXEMPT: [&str; 2] = ["/healthz", "/readyz"];

pub async fn check(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if EXEMPT.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if state.settings.allowed_hosts.allows(host) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "disallowed_host",
            "the Host header is not in ALLOWED_HOSTS",
        )
        .into_response(),
    }
}
