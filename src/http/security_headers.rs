//! The security headers of every response the app makes (pages, API, errors, metrics). nginx adds the same
//! values only to the answers it makes itself.

use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

/// One list, one place: the OWASP Secure Headers Project's recommended set for every response (HSTS is the TLS
/// edge's, `Cache-Control` is per route). The page has no inline script or style, so the policy needs no
/// `unsafe-inline`; a page that ever needs inline code gets a per-response nonce, never `unsafe-inline`. Every
/// subresource is same-origin, so `require-corp` blocks nothing of ours.
pub const SECURITY_HEADERS: [(&str, &str); 9] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("cross-origin-embedder-policy", "require-corp"),
    ("x-permitted-cross-domain-policies", "none"),
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
