//! `x-request-id`: taken from the proxy when well formed, generated otherwise; on every response, in the request's
//! log span (`access_log.rs`), and carried into the tasks it enqueues.
//!
//! The id is held as the `HeaderValue` it travels in: an incoming id is reused as it is and a generated one is
//! encoded once, so the response header and the handlers share one buffer instead of three string copies.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

pub const HEADER: &str = "x-request-id";

/// The request's id, for handlers.
#[derive(Debug, Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    pub fn as_str(&self) -> &str {
        // Only well-formed (ASCII) ids are ever stored, so this cannot fail.
        self.0.to_str().unwrap_or("-")
    }
}

/// 1 to 128 characters of `[A-Za-z0-9._-]`: enough for UUIDs and nginx's `$request_id`, nothing that could
/// forge log lines or headers.
pub fn is_well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn take_or_generate(request: &Request) -> HeaderValue {
    if let Some(given) = request
        .headers()
        .get(HEADER)
        .filter(|v| v.to_str().is_ok_and(is_well_formed))
    {
        return given.clone();
    }
    // A v4 UUID from the thread-local generator: `Uuid::new_v4` asks the kernel (a getrandom(2) call) every time.
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .hyphenated()
        .encode_lower(&mut buf);
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// The middleware: the request's id in its extensions (for the access log and the handlers) and on its answer.
pub async fn propagate(mut request: Request, next: Next) -> Response {
    let id = take_or_generate(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    response.headers_mut().insert(HEADER, id);
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
