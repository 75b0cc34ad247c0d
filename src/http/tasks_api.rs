//! The JSON task API: enqueue, look up (optionally long-polling until finished), list.

use std::time::{Duration, Instant};

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::{self, ApiError};
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::request_id::RequestId;
use super::state::AppState;
use crate::tasks::{
    EnqueueError, Idempotency, InvalidIdempotencyKey, InvalidTask, QueueFull, TaskRecord, TaskSpec,
};

/// Longest `?wait=` accepted.
pub const MAX_WAIT_SECS: f64 = 30.0;
const POLL_EVERY: Duration = Duration::from_millis(50);

fn empty_object() -> Value {
    json!({})
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    pub kind: String,
    #[serde(default = "empty_object")]
    pub payload: Value,
}

/// The request header that names a request, so that sending it again never queues a second task.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// On the answer to a request repeated with its key: the task is the one the first request queued (Stripe's name).
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

#[derive(Debug, thiserror::Error)]
pub enum CreateTaskError {
    #[error(transparent)]
    Invalid(#[from] InvalidTask),
    #[error(transparent)]
    BadKey(#[from] InvalidIdempotencyKey),
    #[error(transparent)]
    Full(#[from] QueueFull),
    #[error(transparent)]
    Unavailable(#[from] EnqueueError),
}

impl IntoResponse for CreateTaskError {
    fn into_response(self) -> Response {
        match self {
            Self::Invalid(err) => {
                let code = match err {
                    InvalidTask::UnknownKind(_) => "unknown_kind",
                    InvalidTask::InvalidPayload { .. } => "invalid_payload",
                };
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, err.to_string())
            }
            Self::BadKey(err) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                err.to_string(),
            ),
            Self::Full(err) => return error::queue_full(err),
            Self::Unavailable(err) => err.into(),
        }
        .into_response()
    }
}

pub fn task_location(id: Uuid) -> String {
    format!("/api/tasks/{id}")
}

/// `POST /api/tasks` → 202 with the queued task and its `Location`; 503 `queue_full` at `QUEUE_MAX_BACKLOG`
/// (asked after validation, so a bad request still learns what is wrong with it). With an `Idempotency-Key`
/// already used by the same request: 202 with that request's task and `Idempotent-Replayed: true`; used by another
/// request: 422 `idempotency_key_reused`.
pub async fn create(
    State(state): State<AppState>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateTask>,
) -> Result<Response, CreateTaskError> {
    let spec = TaskSpec::parse(&body.kind, &body.payload)?;
    let idempotency = match headers.get(IDEMPOTENCY_KEY) {
        Some(key) => Some(Idempotency::new(
            key.to_str().map_err(|_| InvalidIdempotencyKey)?,
            &spec,
        )?),
        None => None,
    };
    state.backlog.admit().await?;
    let request_id = request_id.as_ref().map(|Extension(id)| id.as_str());
    let queued = state.enqueue(&spec, request_id, idempotency).await?;
    let record = queued.record;
    if queued.replayed {
        tracing::info!(task_id = %record.id, kind = %record.kind, "repeated request: the task queued before");
    } else {
        tracing::info!(task_id = %record.id, kind = %record.kind, "task queued");
    }
    let mut response = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, task_location(record.id))],
        Json(record),
    )
        .into_response();
    if queued.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// Seconds to wait for the task to finish (long poll), at most [`MAX_WAIT_SECS`].
    pub wait: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum GetTaskError {
    #[error("wait must be between 0 and {MAX_WAIT_SECS} seconds")]
    BadWait,
    #[error("no task with id {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Unavailable(#[from] sqlx::Error),
}

impl IntoResponse for GetTaskError {
    fn into_response(self) -> Response {
        match self {
            Self::BadWait => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", self.to_string())
            }
            Self::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", self.to_string())
            }
            Self::Unavailable(err) => err.into(),
        }
        .into_response()
    }
}

/// `GET /api/tasks/{id}[?wait=S]`. A finished task is answered from memory once read (`finished_tasks.rs`).
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(params): ApiQuery<GetParams>,
) -> Result<Response, GetTaskError> {
    let wait = match params.wait {
        None => Duration::ZERO,
        Some(s) if (0.0..=MAX_WAIT_SECS).contains(&s) => Duration::from_secs_f64(s),
        Some(_) => return Err(GetTaskError::BadWait),
    };
    if let Some(body) = state.finished_tasks.get(id) {
        return Ok(json_body(body));
    }
    let deadline = Instant::now() + wait;
    loop {
        let record = state
            .store
            .get(id)
            .await?
            .ok_or(GetTaskError::NotFound(id))?;
        if record.state.is_finished() {
            return Ok(match serde_json::to_vec(&record) {
                Ok(body) => {
                    let body = Bytes::from(body);
                    state.finished_tasks.keep(id, body.clone());
                    json_body(body)
                }
                Err(_) => Json(record).into_response(),
            });
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(Json(record).into_response());
        }
        tokio::time::sleep(remaining.min(POLL_EVERY)).await;
    }
}

fn json_body(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub limit: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListTasksError {
    #[error("limit must be between 1 and 100")]
    BadLimit,
    #[error(transparent)]
    Unavailable(#[from] sqlx::Error),
}

impl IntoResponse for ListTasksError {
    fn into_response(self) -> Response {
        match self {
            Self::BadLimit => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", self.to_string())
            }
            Self::Unavailable(err) => err.into(),
        }
        .into_response()
    }
}

/// The list's answer, written straight from the records (no `serde_json::Value` in between): each task's keys in
/// the order of the single task's answer.
#[derive(Serialize)]
pub struct TaskList {
    tasks: Vec<TaskRecord>,
}

/// `GET /api/tasks[?limit=N]`, newest first.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<TaskList>, ListTasksError> {
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ListTasksError::BadLimit);
    }
    let tasks = state.store.recent(limit).await?;
    Ok(Json(TaskList { tasks }))
}
