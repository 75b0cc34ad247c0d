//! CSRF tokens for the status page's form: `<issued-at>.<nonce>.<HMAC-SHA256(SECRET_KEY)>`, sent as a cookie and
//! as a hidden field (signed double submit). A token is accepted when both copies match, the signature is ours
//! and it is not older than [`TOKEN_LIFETIME_SECS`].

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

pub const COOKIE_NAME: &str = "csrftoken";
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
}
