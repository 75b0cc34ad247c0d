//! The security headers of every response the app makes (pages, API, errors, metrics). nginx adds the same
//! values only to the answers it makes itself.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

/// One list, one place. The page has no inline script or style, so the policy needs no `unsafe-inline`.
pub const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=()",
    ),
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; \
         frame-ancestors 'none'; form-action 'self'",
    ),
];

/// For `axum::middleware::map_response`: adds each header a handler did not set itself.
pub async fn add(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers
            .entry(HeaderName::from_static(name))
            .or_insert(HeaderValue::from_static(value));
    }
    response
}
