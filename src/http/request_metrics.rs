//! Requests counted and timed by method, route template and status (`http_requests_total`,
//! `http_request_duration_seconds`).

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};

/// The counter and histogram of one (method, route, status), registered once. Without this every request would
/// format three label strings and build two label sets only for the registry to find the same series again.
#[derive(Clone)]
struct Series {
    method: Method,
    status: StatusCode,
    requests: Counter,
    duration: Histogram,
}

/// Route template → the series seen on it. A handful of routes and statuses, so a short scan after the lookup.
static SERIES: OnceLock<RwLock<HashMap<String, Vec<Series>>>> = OnceLock::new();

fn series(method: &Method, route: &str, status: StatusCode) -> Series {
    let map = SERIES.get_or_init(Default::default);
    let find = |all: &HashMap<String, Vec<Series>>| {
        all.get(route)?
            .iter()
            .find(|s| s.status == status && s.method == *method)
            .cloned()
    };
    if let Some(found) = find(&map.read().unwrap_or_else(|p| p.into_inner())) {
        return found;
    }
    let labels = [
        ("method", method.as_str().to_string()),
        ("route", route.to_string()),
        ("status", status.as_u16().to_string()),
    ];
    let new = Series {
        method: method.clone(),
        status,
        requests: metrics::counter!("http_requests_total", &labels),
        duration: metrics::histogram!("http_request_duration_seconds", &labels),
    };
    let mut all = map.write().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = find(&all) {
        return found;
    }
    all.entry(route.to_string()).or_default().push(new.clone());
    new
}

/// Counts requests and their latency by method, route template (not raw path: ids would explode the series)
/// and status.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await.into_response();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let series = series(&method, route, response.status());
    series.requests.increment(1);
    series.duration.record(started.elapsed());
    response
}
