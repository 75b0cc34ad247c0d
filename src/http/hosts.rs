//! `ALLOWED_HOSTS`, like Django: a request for any other `Host` gets 400. Put on the pages and the API only: the
//! probes (`/healthz`, `/readyz`) are outside it (`http::router::app`), so orchestrators can call them by IP.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// The patterns of `ALLOWED_HOSTS`: exact names, `.example.com` for a domain and its subdomains, `*` for any.
#[derive(Debug, Clone)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    pub fn new(patterns: Vec<String>) -> Self {
        Self(
            patterns
                .into_iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        )
    }

    /// `host` is the raw `Host` header value; its port, if any, is ignored.
    /// Compared without lowercasing a copy (the patterns are lowercase already): no allocation per request.
    pub fn allows(&self, host: &str) -> bool {
        let name = strip_port(host);
        if name.is_empty() {
            return false;
        }
        let ends_with = |suffix: &str| {
            name.len() >= suffix.len()
                && name.as_bytes()[name.len() - suffix.len()..]
                    .eq_ignore_ascii_case(suffix.as_bytes())
        };
        self.0.iter().any(|pattern| {
            pattern == "*"
                || name.eq_ignore_ascii_case(pattern)
                || (pattern.starts_with('.')
                    && (ends_with(pattern) || name.eq_ignore_ascii_case(&pattern[1..])))
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows `]`.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// The middleware: `from_fn_with_state(Arc::new(AllowedHosts::new(…)), hosts::check)`.
pub async fn check(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match host {
        Some(host) if allowed.allows(host) => next.run(request).await,
        _ => ApiError::new(
            StatusCode::BAD_REQUEST,
            "disallowed_host",
            "the Host header is not in ALLOWED_HOSTS",
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::AllowedHosts;

    #[test]
    fn allowed_hosts_match_like_django() {
        let hosts = AllowedHosts::new(vec![
            "example.com".into(),
            ".sub.org".into(),
            "[::1]".into(),
        ]);
        assert!(hosts.allows("example.com"));
        assert!(hosts.allows("EXAMPLE.com:8000"));
        assert!(hosts.allows("a.sub.org"));
        assert!(hosts.allows("sub.org"));
        assert!(hosts.allows("[::1]:8000"));
        assert!(!hosts.allows("evil.com"));
        assert!(!hosts.allows("notsub.org"));
        assert!(!hosts.allows(""));
        assert!(AllowedHosts::new(vec!["*".into()]).allows("anything"));
    }
}
