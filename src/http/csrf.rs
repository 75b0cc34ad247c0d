//! CSRF tokens for the status page's form: `<issued-at>.<nonce>.<HMAC-SHA256(SECRET_KEY)>`, sent as a cookie and
//! as a hidden field (signed double submit). A token is accepted when both copies match, the signature is ours
//! and it is not older than [`TOKEN_LIFETIME_SECS`].
//!
//! Over HTTPS the cookie is `Secure` and named with the `__Host-` prefix, which browsers accept only with `Secure`,
//! `Path=/` and no `Domain`: neither a plain-HTTP answer (a network attacker's) nor a sibling subdomain can then
//! plant a cookie of its choosing, which a double submit whose tokens are not bound to a session relies on. Over
//! plain HTTP (development) the cookie keeps its old name, as a browser refuses `Secure` cookies there.

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The cookie over plain HTTP.
pub const COOKIE_NAME: &str = "csrftoken";
/// The cookie over HTTPS.
pub const SECURE_COOKIE_NAME: &str = "__Host-csrftoken";
pub const TOKEN_LIFETIME_SECS: i64 = 12 * 3600;

#[derive(Clone)]
pub struct Csrf {
    key: SecretString,
}

impl std::fmt::Debug for Csrf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Csrf([REDACTED])")
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CsrfError {
    #[error("CSRF token missing")]
    Missing,
    #[error("CSRF token does not match the cookie")]
    Mismatch,
    #[error("CSRF token is invalid")]
    Invalid,
    #[error("CSRF token expired")]
    Expired,
}

impl Csrf {
    pub fn new(key: SecretString) -> Self {
        Self { key }
    }

    fn mac(&self, message: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.key.expose_secret().as_bytes())
            .expect("HMAC accepts keys of any length");
        mac.update(b"csrf:");
        mac.update(message.as_bytes());
        mac
    }

    pub fn issue(&self, now: i64) -> String {
        let nonce = hex::encode(rand::random::<[u8; 16]>());
        let message = format!("{now}.{nonce}");
        let signature = hex::encode(self.mac(&message).finalize().into_bytes());
        format!("{message}.{signature}")
    }

    /// Checks the form field against the cookie and the signature (in constant time).
    pub fn verify(
        &self,
        field: Option<&str>,
        cookie: Option<&str>,
        now: i64,
    ) -> Result<(), CsrfError> {
        let (Some(field), Some(cookie)) = (field, cookie) else {
            return Err(CsrfError::Missing);
        };
        if field != cookie {
            return Err(CsrfError::Mismatch);
        }
        let (message, signature) = field.rsplit_once('.').ok_or(CsrfError::Invalid)?;
        let signature = hex::decode(signature).map_err(|_| CsrfError::Invalid)?;
        self.mac(message)
            .verify_slice(&signature)
            .map_err(|_| CsrfError::Invalid)?;
        let issued: i64 = message
            .split_once('.')
            .and_then(|(t, _)| t.parse().ok())
            .ok_or(CsrfError::Invalid)?;
        if now - issued > TOKEN_LIFETIME_SECS || issued > now + 60 {
            return Err(CsrfError::Expired);
        }
        Ok(())
    }
}

/// Whether the client's request came over HTTPS: TLS ends at the edge nginx, which says so in `X-Forwarded-Proto`
/// (only the proxies reach the app, and a client faking it only gets a cookie its own plain-HTTP form cannot send).
/// The first value is the client's side when proxies append theirs.
pub fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// The cookie's name for a request that came over HTTPS or not; the form is checked against this name only, so
/// over HTTPS a plain `csrftoken` (which anyone on the path could have set) is not believed.
pub fn cookie_name(https: bool) -> &'static str {
    if https {
        SECURE_COOKIE_NAME
    } else {
        COOKIE_NAME
    }
}

/// The `Set-Cookie` value that carries `token`.
pub fn set_cookie(token: &str, https: bool) -> String {
    let name = cookie_name(https);
    let secure = if https { "; Secure" } else { "" };
    format!("{name}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_when_signed_matching_and_fresh() {
        let csrf = Csrf::new(SecretString::from("k1"));
        let token = csrf.issue(1000);
        assert_eq!(csrf.verify(Some(&token), Some(&token), 1001), Ok(()));
        assert_eq!(
            csrf.verify(None, Some(&token), 1001),
            Err(CsrfError::Missing)
        );
        assert_eq!(
            csrf.verify(Some(&token), Some("x"), 1001),
            Err(CsrfError::Mismatch)
        );
        let other = Csrf::new(SecretString::from("k2")).issue(1000);
        assert_eq!(
            csrf.verify(Some(&other), Some(&other), 1001),
            Err(CsrfError::Invalid)
        );
        let late = 1000 + TOKEN_LIFETIME_SECS + 1;
        assert_eq!(
            csrf.verify(Some(&token), Some(&token), late),
            Err(CsrfError::Expired)
        );
        assert_eq!(
            csrf.verify(Some("a.b"), Some("a.b"), 1),
            Err(CsrfError::Invalid)
        );
    }

    #[test]
    fn the_cookie_is_secure_and_host_prefixed_only_over_https() {
        let mut headers = HeaderMap::new();
        assert!(!over_https(&headers));
        assert_eq!(
            set_cookie("t", false),
            "csrftoken=t; Path=/; HttpOnly; SameSite=Strict"
        );
        for (value, https) in [
            ("https", true),
            ("HTTPS", true),
            ("https, http", true),
            ("http", false),
            ("http, https", false),
            ("", false),
        ] {
            headers.insert("x-forwarded-proto", value.parse().unwrap());
            assert_eq!(over_https(&headers), https, "{value}");
        }
        assert_eq!(
            set_cookie("t", true),
            "__Host-csrftoken=t; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
