//! Liveness and readiness probes.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::db;
use crate::state::AppState;

/// Each readiness check gets this long, so `/readyz` answers within a second even when a dependency hangs.
pub const CHECK_BUDGET: Duration = Duration::from_millis(800);

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn within<T, E: std::fmt::Display>(
    check: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_BUDGET, check).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("down: {err}")),
        Err(_) => Err(format!(
            "down: no answer within {}ms",
            CHECK_BUDGET.as_millis()
        )),
    }
}

/// 200 when PostgreSQL answers, every migration is applied and Redis answers; else 503 naming what is down.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (migrations, redis) = tokio::join!(
        within(db::migration_state(&state.pool)),
        within(state.queue.ping()),
    );
    let (postgres, migrations) = match migrations {
        Ok(m) if m.pending == 0 => ("ok".to_string(), "ok".to_string()),
        Ok(m) => ("ok".to_string(), format!("pending: {}", m.describe())),
        Err(err) => (err, "unknown".to_string()),
    };
    let redis = redis.map_or_else(|e| e, |()| "ok".to_string());
    let ready = [&postgres, &migrations, &redis].iter().all(|s| *s == "ok");
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "checks": { "postgres": postgres, "migrations": migrations, "redis": redis },
    });
    (status, Json(body))
}
