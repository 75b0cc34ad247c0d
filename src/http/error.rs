//! The one JSON error body: `{"error": "<code>", "message": "<what was wrong>"}`.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::tasks::EnqueueError;
use crate::tasks::backlog::{QueueFull, RETRY_AFTER_SECS};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// A dependency is down: logged with its cause, answered 503 without it.
    pub fn unavailable(what: &'static str, cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "{what} unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            format!("{what} is unavailable; try again shortly"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.code, "message": self.message });
        (self.status, Json(body)).into_response()
    }
}

/// A query that could not run: PostgreSQL is down or the pool is exhausted.
impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        Self::unavailable("the database", &err)
    }
}

/// An enqueue that could not complete (the API and the status page's form answer it alike).
impl From<EnqueueError> for ApiError {
    fn from(err: EnqueueError) -> Self {
        match err {
            EnqueueError::Database(err) => err.into(),
            EnqueueError::Queue(err) => Self::unavailable("the queue", &err),
            err @ EnqueueError::Interrupted => Self::unavailable("the queue", &err),
            err @ EnqueueError::KeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                err.to_string(),
            ),
        }
    }
}

/// `QUEUE_MAX_BACKLOG` reached: 503 with `Retry-After`, so a client (or a proxy) backs off instead of hammering.
/// The count is left out of the answer: clients need not know how busy the workers are. (A function, not an
/// `IntoResponse` impl: `QueueFull` belongs to app-core.)
pub fn queue_full(_: QueueFull) -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "queue_full",
        format!("too many tasks are waiting to run; try again in {RETRY_AFTER_SECS} seconds"),
    )
    .into_response();
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}
