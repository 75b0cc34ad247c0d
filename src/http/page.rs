//! `/`: the server-rendered status page, and `POST /tasks`, its CSRF-protected form.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};

use super::csrf::{self, CsrfError};
use super::error::{self, ApiError};
use super::extract::ApiForm;
use super::request_id::RequestId;
use super::state::AppState;
use crate::tasks::queue::{HEARTBEAT_STALE_AFTER, now_ms};
use crate::tasks::records::TaskSummary;
use crate::tasks::{
    EnqueueError, Idempotency, InvalidIdempotencyKey, InvalidTask, QueueFull, Queued, TaskSpec,
};

#[derive(Serialize)]
pub struct TaskRow {
    pub id: String,
    pub short_id: String,
    pub kind: String,
    pub state: &'static str,
    pub attempts: i32,
    pub created_at: String,
    pub error: String,
}

impl From<&TaskSummary> for TaskRow {
    fn from(t: &TaskSummary) -> Self {
        Self {
            short_id: t.id.to_string()[..8].to_string(),
            id: t.id.to_string(),
            kind: t.kind.clone(),
            state: t.state.as_str(),
            attempts: t.attempts,
            created_at: t.created_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            error: t.error.clone().unwrap_or_default(),
        }
    }
}

/// One line of the page's "Services" list.
#[derive(Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The context of `templates/status.html`.
#[derive(Serialize)]
pub struct StatusPage {
    pub version: &'static str,
    pub debug: bool,
    pub checks: Vec<Check>,
    pub tasks: Vec<TaskRow>,
    pub csrf_token: String,
    /// A fresh key per view: submitting the form twice (a double click) queues one task.
    pub idempotency_key: String,
    pub css_url: String,
    pub js_url: String,
    pub logo_url: String,
    pub kinds: [&'static str; 3],
}

fn check<T>(
    name: &'static str,
    result: Result<T, String>,
    describe: impl FnOnce(T) -> String,
) -> Check {
    match result {
        Ok(value) => Check {
            name,
            ok: true,
            detail: describe(value),
        },
        Err(err) => Check {
            name,
            ok: false,
            detail: format!("unavailable: {err}"),
        },
    }
}

/// `GET /`: the stores' part comes from the shared snapshot (`page_snapshot.rs`); the CSRF token and the worker's
/// age are the view's own.
pub async fn status_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let data = state
        .page_snapshot
        .get(&state.db, &state.store, &state.queue)
        .await;
    let (version, migrations) = match (&data.recent, &data.postgres) {
        (Err(e), _) => (Err(e.clone()), Err("unknown".to_string())),
        (Ok(_), Ok(facts)) => (Ok(&facts.version), Ok(&facts.migrations)),
        (Ok(_), Err(e)) => (Err(e.clone()), Err(e.clone())),
    };
    let (redis, heartbeat, depth) = match &data.redis {
        Ok((hb, depth)) => (Ok(()), Ok(*hb), Ok(*depth)),
        Err(e) => (Err(e.clone()), Err(e.clone()), Err(e.clone())),
    };
    let now = now_ms();
    let worker = match heartbeat {
        Ok(Some(at)) if now - at < HEARTBEAT_STALE_AFTER.as_millis() as i64 => {
            Ok(format!("last seen {:.1} s ago", (now - at) as f64 / 1000.0))
        }
        Ok(Some(at)) => Err(format!("last seen {} s ago", (now - at) / 1000)),
        Ok(None) => Err("never seen".into()),
        Err(e) => Err(e),
    };
    let checks = vec![
        check("PostgreSQL", version, |v| format!("version {v}")),
        check("Migrations", migrations, |m| m.describe()),
        check("Redis", redis, |()| "reachable".into()),
        check("Worker", worker, |w| w),
        check("Queue depth", depth, |d| d.to_string()),
    ];
    let token = state.csrf.issue(chrono::Utc::now().timestamp());
    let live_static = state.settings.debug && state.settings.static_dir.is_some();
    let url = |name: &str| {
        if live_static {
            format!("/static/{name}")
        } else {
            state.assets.url(name)
        }
    };
    let page = StatusPage {
        version: env!("CARGO_PKG_VERSION"),
        debug: state.settings.debug,
        checks,
        tasks: data
            .recent
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(TaskRow::from)
            .collect(),
        csrf_token: token.clone(),
        idempotency_key: uuid::Uuid::new_v4().to_string(),
        css_url: url("app.css"),
        js_url: url("app.js"),
        logo_url: url("logo.svg"),
        kinds: TaskSpec::KINDS,
    };
    match state.templates.render("status.html", &page) {
        Ok(html) => (
            [
                (
                    header::SET_COOKIE,
                    csrf::set_cookie(&token, csrf::over_https(&headers)),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            Html(html),
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "status page did not render");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the page could not be rendered",
            )
            .into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct EnqueueForm {
    pub csrf_token: Option<String>,
    pub idempotency_key: Option<String>,
    pub kind: String,
    pub text: Option<String>,
    pub ms: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueFormError {
    #[error(transparent)]
    Csrf(#[from] CsrfError),
    #[error(transparent)]
    Invalid(#[from] InvalidTask),
    #[error(transparent)]
    BadKey(#[from] InvalidIdempotencyKey),
    #[error(transparent)]
    Full(#[from] QueueFull),
    #[error(transparent)]
    Unavailable(#[from] EnqueueError),
}

impl IntoResponse for EnqueueFormError {
    fn into_response(self) -> Response {
        match self {
            Self::Csrf(err) => ApiError::new(StatusCode::FORBIDDEN, "csrf_failed", err.to_string()),
            Self::Invalid(err) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_task",
                err.to_string(),
            ),
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

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `POST /tasks`: the page's form; 303 back to `/` once queued.
pub async fn enqueue_form(
    State(state): State<AppState>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
    ApiForm(form): ApiForm<EnqueueForm>,
) -> Result<Redirect, EnqueueFormError> {
    state.csrf.verify(
        form.csrf_token.as_deref(),
        cookie(&headers, csrf::cookie_name(csrf::over_https(&headers))),
        chrono::Utc::now().timestamp(),
    )?;
    let spec = TaskSpec::from_form(&form.kind, form.text, form.ms)?;
    let idempotency = form
        .idempotency_key
        .as_deref()
        .map(|key| Idempotency::new(key, &spec))
        .transpose()?;
    state.backlog.admit().await?;
    let request_id = request_id.as_ref().map(|Extension(id)| id.as_str());
    let Queued { record, replayed } = state.enqueue(&spec, request_id, idempotency).await?;
    if replayed {
        tracing::info!(task_id = %record.id, kind = %record.kind, "form sent again: the task queued before");
    } else {
        tracing::info!(task_id = %record.id, kind = %record.kind, "task queued from the form");
    }
    Ok(Redirect::to("/"))
}
