//! The JSON of finished tasks, kept in memory by each `app serve`: a `done` or `dead` task never changes again, so
//! once its answer has been read from PostgreSQL it can be sent again without a query. Clients that poll a task
//! until it finishes, then read its result, and everyone given the link to a result, are answered from here.
//!
//! Bounded: at most [`CAPACITY`] answers of at most [`MAX_BODY_BYTES`] each (a few MiB), the least recently read
//! ones dropped first. An answer is kept for [`MAX_AGE`] at most, so a task purged after `TASK_RETENTION_HOURS`
//! (or a database restored from a backup) is seen as PostgreSQL has it within a minute.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use hashlink::LruCache;
use uuid::Uuid;

/// Answers kept.
pub const CAPACITY: usize = 1024;
/// Larger answers (a big payload or result) are always read from PostgreSQL.
pub const MAX_BODY_BYTES: usize = 4096;
/// How long an answer is sent from memory before PostgreSQL is asked again.
pub const MAX_AGE: Duration = Duration::from_secs(60);

pub struct FinishedTasks {
    answers: Mutex<LruCache<Uuid, (Instant, Bytes)>>,
}

impl Default for FinishedTasks {
    fn default() -> Self {
        Self {
            answers: Mutex::new(LruCache::new(CAPACITY)),
        }
    }
}

impl FinishedTasks {
    /// The answer for a finished task, if kept and young enough.
    pub fn get(&self, id: Uuid) -> Option<Bytes> {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        match answers.get(&id) {
            Some((kept, body)) if kept.elapsed() < MAX_AGE => Some(body.clone()),
            Some(_) => {
                answers.remove(&id);
                None
            }
            None => None,
        }
    }

    /// Keeps the answer of a task read as `done` or `dead`; the caller checks that it is finished.
    pub fn keep(&self, id: Uuid, body: Bytes) {
        if body.len() <= MAX_BODY_BYTES {
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            answers.insert(id, (Instant::now(), body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_small_answers_up_to_its_capacity_dropping_the_least_recently_read() {
        let kept = FinishedTasks::default();
        let first = Uuid::new_v4();
        kept.keep(first, Bytes::from_static(b"{}"));
        let big = Uuid::new_v4();
        kept.keep(big, Bytes::from(vec![b' '; MAX_BODY_BYTES + 1]));
        assert_eq!(
            kept.get(big),
            None,
            "an answer over the size limit was kept"
        );
        for _ in 0..CAPACITY - 1 {
            kept.keep(Uuid::new_v4(), Bytes::from_static(b"{}"));
        }
        assert!(
            kept.get(first).is_some(),
            "dropped before the capacity was reached"
        );
        kept.keep(Uuid::new_v4(), Bytes::from_static(b"{}"));
        assert!(
            kept.get(first).is_some(),
            "the most recently read answer was dropped"
        );
        let answers = kept.answers.lock().unwrap();
        assert_eq!(answers.len(), CAPACITY);
    }
}
