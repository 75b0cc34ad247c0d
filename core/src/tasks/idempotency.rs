//! `Idempotency-Key` (as Stripe and the IETF draft define it): a client names its request, and the request sent
//! again with the same key gets the task the first one queued, never a second task. The key and a hash of the
//! request are written with the task, in the same statement (`store/mod.rs`), under a unique constraint: two
//! requests with one key, even at the same moment on two replicas, queue one task.

use sha2::{Digest, Sha256};

use super::kinds::TaskSpec;

/// Longest key accepted (Stripe's limit).
pub const MAX_KEY_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
#[error("Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters")]
pub struct InvalidIdempotencyKey;

/// A request's key, and the hash of what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    /// SHA-256 of the kind and the validated payload, so the same request in other bytes (whitespace, field order)
    /// is still the same request.
    pub request_hash: Vec<u8>,
}

impl Idempotency {
    pub fn new(key: &str, spec: &TaskSpec) -> Result<Self, InvalidIdempotencyKey> {
        let valid = !key.is_empty()
            && key.len() <= MAX_KEY_LEN
            && key.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
        if !valid {
            return Err(InvalidIdempotencyKey);
        }
        let mut hash = Sha256::new();
        hash.update(spec.kind().as_bytes());
        hash.update([0]);
        // serde_json's maps are ordered by key: one request, one text.
        hash.update(spec.payload().to_string().as_bytes());
        Ok(Self {
            key: key.to_owned(),
            request_hash: hash.finalize().to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> TaskSpec {
        TaskSpec::WordCount { text: text.into() }
    }

    #[test]
    fn same_request_same_hash_other_request_other_hash() {
        let a = Idempotency::new("k-1", &spec("a b")).expect("valid");
        assert_eq!(a, Idempotency::new("k-1", &spec("a b")).expect("valid"));
        assert_ne!(
            a.request_hash,
            Idempotency::new("k-1", &spec("a c"))
                .expect("valid")
                .request_hash
        );
    }

    #[test]
    fn keys_are_bounded_visible_ascii() {
        assert!(Idempotency::new("", &spec("x")).is_err());
        assert!(Idempotency::new("tab\there", &spec("x")).is_err());
        assert!(Idempotency::new("é", &spec("x")).is_err());
        assert!(Idempotency::new(&"k".repeat(MAX_KEY_LEN + 1), &spec("x")).is_err());
        assert!(Idempotency::new(&"k".repeat(MAX_KEY_LEN), &spec("x")).is_ok());
    }
}
