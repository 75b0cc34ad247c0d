//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::backup_status;
use super::deadline::within;
use super::state::AppState;
use crate::db::{self, Db};

/// Always the same bytes: liveness only says the process answers.
pub async fn healthz() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status":"ok"}"#,
    )
}

/// When the newest backup recorded by the backup service (backup/service.sh) finished, in seconds since the epoch (`None`: none yet).
pub async fn last_backup_success(db: &Db) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar("SELECT extract(epoch FROM max(finished_at))::float8 FROM backup_runs")
        .fetch_one(&mut *db.acquire().await?)
        .await
}

/// 200 when PostgreSQL answers, every migration is applied and Redis answers; else 503 naming what is down.
/// `backup` is a detail, not a readiness condition: an old backup is the backup service's healthcheck's concern,
/// and so is lagging WAL streaming or a failing off-host copy (`backup.ok`, `backup.problem`). Taking the app out of
/// rotation would not make a backup happen; it would only add an outage to the backup problem.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (migrations, redis, last_success, report) = tokio::join!(
        within(db::migration_state(&state.db)),
        within(state.queue.ping()),
        within(last_backup_success(&state.db)),
        within(backup_status::read(&state.db)),
    );
    let backup = backup_status::detail(last_success, report);
    let down = |err| format!("down: {err}");
    let (postgres, migrations) = match migrations {
        Ok(m) if m.pending == 0 => ("ok".to_string(), "ok".to_string()),
        Ok(m) => ("ok".to_string(), format!("pending: {}", m.describe())),
        Err(err) => (down(err), "unknown".to_string()),
    };
    let redis = redis.map_or_else(down, |()| "ok".to_string());
    let ready = [&postgres, &migrations, &redis].iter().all(|s| *s == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": { "postgres": postgres, "migrations": migrations, "redis": redis },
        "backup": backup,
    });
    (status, Json(body))
}
