//! `API_TOKEN`: when set, every `/api/...` request must carry `Authorization: Bearer <token>`, else 401
//! `unauthorized` with `WWW-Authenticate: Bearer`. The page, its CSRF-protected form (`POST /tasks`), the probes
//! and `/static` stay open: a browser or an orchestrator has no token to send. Unset, the API is public (the demo).
//!
//! The presented token is compared in constant time, as HMAC-SHA256 digests under a key drawn at start-up
//! (`verify_slice` compares in constant time): neither the time taken nor the digest's length tells how much of a
//! guess was right, nor how long the token is.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::error::ApiError;

/// What the token is checked against: never the token itself.
pub struct ApiToken {
    key: [u8; 32],
    digest: Vec<u8>,
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken([REDACTED])")
    }
}

impl ApiToken {
    pub fn new(token: &SecretString) -> Self {
        let key = rand::random::<[u8; 32]>();
        let digest = mac(&key, token.expose_secret().as_bytes())
            .finalize()
            .into_bytes()
            .to_vec();
        Self { key, digest }
    }

    /// Whether `presented` is the token, in time independent of where it differs.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        mac(&self.key, presented).verify_slice(&self.digest).is_ok()
    }
}

fn mac(key: &[u8; 32], message: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac
}

/// The routes the token guards: the whole API, including routes it does not have (their 404 says nothing to
/// a client without the token).
fn guarded(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110, 11.1).
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let value = value.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    let credentials = rest.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer") && !credentials.is_empty()).then_some(credentials)
}

/// For `axum::middleware::from_fn_with_state`, on the site's router when `API_TOKEN` is set.
pub async fn require(State(token): State<Arc<ApiToken>>, request: Request, next: Next) -> Response {
    if !guarded(request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request.headers().get(AUTHORIZATION).and_then(bearer);
    let message = match presented {
        Some(credentials) if token.accepts(credentials) => return next.run(request).await,
        Some(_) => "the API token is not valid",
        None => "this API requires a token: send `Authorization: Bearer <token>`",
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_under_the_bearer_scheme_is_accepted() {
        let token = ApiToken::new(&SecretString::from("0123456789abcdef-token"));
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        let accepted = |v: &str| bearer(&header(v)).is_some_and(|c| token.accepts(c));
        assert!(accepted("Bearer 0123456789abcdef-token"));
        assert!(accepted("bearer  0123456789abcdef-token "));
        assert!(!accepted("Bearer 0123456789abcdef-toke"));
        assert!(!accepted("Bearer 0123456789abcdef-token0"));
        assert!(!accepted("Basic 0123456789abcdef-token"));
        assert!(!accepted("Bearer0123456789abcdef-token"));
        assert!(!accepted("Bearer "));
        assert_eq!(format!("{token:?}"), "ApiToken([REDACTED])");
    }

    #[test]
    fn the_whole_api_is_guarded_and_nothing_else() {
        for path in [
            "/api",
            "/api/",
            "/api/tasks",
            "/api/tasks/x",
            "/api/nowhere",
        ] {
            assert!(guarded(path), "{path}");
        }
        for path in [
            "/",
            "/tasks",
            "/healthz",
            "/readyz",
            "/static/app.css",
            "/apitasks",
        ] {
            assert!(!guarded(path), "{path}");
        }
    }
}
