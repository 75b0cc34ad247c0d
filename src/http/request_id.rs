//! `x-request-id`: taken from the proxy when well formed, generated otherwise; on every response, in the request's
//! log span, and carried into the tasks it enqueues. Also writes the access log line.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// The request's id, for handlers.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// 1 to 128 characters of `[A-Za-z0-9._-]`: enough for UUIDs and nginx's `$request_id`, nothing that could
/// forge log lines or headers.
pub fn is_well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub async fn propagate(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_well_formed(v))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_string);
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %id,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_well_formed;

    #[test]
    fn only_plain_ids_are_accepted() {
        assert!(is_well_formed("0f8b1c2d-aaaa-bbbb-cccc-123456789abc"));
        assert!(is_well_formed("f3a9c0e2d1b4a5968778695a4b3c2d1e"));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed("a b"));
        assert!(!is_well_formed("x\"}injected"));
        assert!(!is_well_formed(&"a".repeat(129)));
    }
}
