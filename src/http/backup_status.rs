//! The backup service's report on itself (the one-row `backup_status` table backup/service.sh writes): `/readyz`
//! reads it beside the last success and shows both as its `backup` detail, and the gauges follow.

use serde_json::{Value, json};

use super::deadline::Unanswered;
use crate::db::Db;

/// A report older than this means the service is gone (stopped, or cut off from PostgreSQL) whatever it says: the
/// service writes its row at least once a minute, so this is three missed writes, not one slow one.
pub const STALE_AFTER_SECONDS: f64 = 180.0;

/// The row, its times in seconds since the epoch. `age_seconds` is measured on PostgreSQL's clock, the one that
/// wrote `checked_at`, so a skewed app clock cannot make the report look fresh or stale.
#[derive(Debug, sqlx::FromRow)]
pub struct BackupStatus {
    /// `None`: WAL is not streamed at all.
    pub wal_lag_seconds: Option<f64>,
    pub max_lag_seconds: f64,
    /// `ok`, `off` (no remote configured) or `failing`.
    pub offsite: String,
    pub offsite_ok_unix: Option<f64>,
    pub problem: Option<String>,
    pub checked_unix: f64,
    pub age_seconds: f64,
}

impl BackupStatus {
    /// What is wrong, if anything. A stale row's own verdict is out of date, so its age is named instead.
    pub fn problem(&self) -> Option<String> {
        if self.age_seconds > STALE_AFTER_SECONDS {
            Some(format!(
                "the backup service has not reported for {:.0} s",
                self.age_seconds
            ))
        } else {
            self.problem.clone()
        }
    }
}

/// The service's report, `None` before it first wrote one.
pub async fn read(db: &Db) -> Result<Option<BackupStatus>, sqlx::Error> {
    sqlx::query_as(
        "SELECT wal_lag_seconds, max_lag_seconds, offsite, \
         extract(epoch FROM offsite_ok_at)::float8 AS offsite_ok_unix, problem, \
         extract(epoch FROM checked_at)::float8 AS checked_unix, \
         extract(epoch FROM now() - checked_at)::float8 AS age_seconds \
         FROM backup_status",
    )
    .fetch_optional(&mut *db.acquire().await?)
    .await
}

/// `/readyz`'s `backup` object, and the gauges set from the same answers. Unknown values are `null`; `ok` is `null`
/// too while the service has never reported (a setup without it, such as dev), since that says nothing about
/// backups being broken. A failed read adds `error` (both reads go to the same PostgreSQL within the same
/// deadline, so they usually fail alike: the same text is named once).
pub fn detail(
    last_success: Result<Option<f64>, Unanswered>,
    status: Result<Option<BackupStatus>, Unanswered>,
) -> Value {
    let mut errors = Vec::new();
    let last_success = last_success.unwrap_or_else(|err| {
        errors.push(err.to_string());
        None
    });
    let status = status.unwrap_or_else(|err| {
        errors.push(err.to_string());
        None
    });
    let problem = status.as_ref().and_then(BackupStatus::problem);
    let ok = status.as_ref().map(|_| problem.is_none());
    if let Some(at) = last_success {
        crate::metrics::record_backup_success(at);
    }
    if let Some(status) = &status {
        record(status, problem.is_none());
    }
    let status = status.as_ref();
    let mut backup = json!({
        "last_success_unix": last_success,
        "wal_lag_seconds": status.and_then(|s| s.wal_lag_seconds),
        "max_lag_seconds": status.map(|s| s.max_lag_seconds),
        "offsite": status.map(|s| s.offsite.as_str()),
        "offsite_ok_unix": status.and_then(|s| s.offsite_ok_unix),
        "checked_unix": status.map(|s| s.checked_unix),
        "ok": ok,
        "problem": problem,
    });
    errors.dedup();
    if !errors.is_empty() {
        backup["error"] = errors.join("; ").into();
    }
    backup
}

/// The gauges of a report; the lag and the off-host time only when known, so an unknown one is not shown as 0.
fn record(status: &BackupStatus, healthy: bool) {
    if let Some(lag) = status.wal_lag_seconds {
        crate::metrics::record_backup_wal_lag(lag);
    }
    if let Some(at) = status.offsite_ok_unix {
        crate::metrics::record_backup_offsite_ok(at);
    }
    crate::metrics::record_backup_healthy(healthy);
}
