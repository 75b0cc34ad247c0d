//! The process's Prometheus recorder, and the gauges set outside a request. They are served on `METRICS_ADDR` (a
//! port the public proxy never forwards) by `http::metrics_endpoint`; requests are counted by
//! `http::request_metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs the global recorder once per process (tests build many apps in one process).
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (only possible in tests): keep a detached one.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// `backup_last_success_timestamp_seconds`: set from the `backup_runs` table whenever `/readyz` reads it.
pub fn record_backup_success(unix_seconds: f64) {
    metrics::gauge!("backup_last_success_timestamp_seconds").set(unix_seconds);
}

/// `backup_wal_lag_seconds`: how far WAL streaming is behind, as the backup service last wrote in `backup_status`;
/// refreshed when `/readyz` is asked. Only set while WAL is streamed: without streaming there is no lag to show.
pub fn record_backup_wal_lag(seconds: f64) {
    metrics::gauge!("backup_wal_lag_seconds").set(seconds);
}

/// `backup_healthy`: 1 when the backup service's latest report names no problem and is recent, else 0; refreshed
/// when `/readyz` is asked, once the service has reported at all (before that, health is unknown, not bad).
pub fn record_backup_healthy(healthy: bool) {
    metrics::gauge!("backup_healthy").set(if healthy { 1.0 } else { 0.0 });
}

/// `backup_offsite_ok_timestamp_seconds`: the last successful off-host copy, from `backup_status`; refreshed when
/// `/readyz` is asked, once there has been one.
pub fn record_backup_offsite_ok(unix_seconds: f64) {
    metrics::gauge!("backup_offsite_ok_timestamp_seconds").set(unix_seconds);
}
