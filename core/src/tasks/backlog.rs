//! `QUEUE_MAX_BACKLOG`: new tasks are refused while too many are unfinished (`queued`, `retrying`, `running`), so
//! a flood the workers cannot keep up with is turned away at the door instead of growing the queue without end.
//! Refusing is all it does: nothing already accepted is touched.
//!
//! Counting the unfinished tasks on every enqueue would add a PostgreSQL round trip to `POST /api/tasks`, so each
//! process keeps a view of the count instead: the count of PostgreSQL, taken at most every [`REFRESH_EVERY`], plus
//! the tasks queued through this process since. While enqueues keep coming the count is taken by a task of its
//! own, off the request path; only the first enqueue after a quiet second waits for it (one query, shared by every
//! request that arrives meanwhile), so a view left over from before the quiet time is never acted on.
//!
//! The bound is therefore approximate: tasks queued through *other* processes (replicas) since the last count are
//! not in this process's view, so up to what they accept within one [`REFRESH_EVERY`] gets in beyond the bound; and
//! requests admitted at the same moment through this one are counted once written, so they can pass it together
//! (by at most the number of requests in flight).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::db::Db;

/// How old the count may get while enqueues keep coming.
pub const REFRESH_EVERY: Duration = Duration::from_millis(500);
/// Older than this (a quiet time), the count is taken before the next enqueue is admitted.
const STALE_AFTER: Duration = Duration::from_millis(1000);
/// A count that takes longer is given up (PostgreSQL hangs): the last view is kept.
const COUNT_DEADLINE: Duration = Duration::from_millis(1000);
/// What a refused client is told to wait (`Retry-After`): a few refreshes, time for workers to drain some.
pub const RETRY_AFTER_SECS: u64 = 5;
/// `counted_at_ms` before the first count.
const NEVER: u64 = u64::MAX;

#[derive(Debug, thiserror::Error)]
#[error("the queue is full: {unfinished} unfinished tasks, QUEUE_MAX_BACKLOG is {limit}")]
pub struct QueueFull {
    pub unfinished: u64,
    pub limit: u64,
}

/// The per-process view of the backlog; cheap to clone. Without a bound it is nothing and admits everything.
#[derive(Clone)]
pub struct Backlog(Option<Arc<View>>);

struct View {
    limit: u64,
    db: Db,
    started: Instant,
    /// Tasks queued through this process, ever.
    queued_here: AtomicU64,
    /// The last count minus `queued_here` read just before it was asked for: the view is `offset + queued_here`.
    /// A task committed between that read and the count's snapshot is counted twice until the next count, which
    /// errs on the side of refusing.
    offset: AtomicI64,
    /// When the last count was taken (or given up), in milliseconds since `started`.
    counted_at_ms: AtomicU64,
    /// A background count is under way.
    counting: AtomicBool,
    /// One count at a time; a request that needs a fresh one waits for the one under way.
    one_count: tokio::sync::Mutex<()>,
}

impl Backlog {
    /// `limit` 0: no bound.
    pub fn new(limit: u64, db: Db) -> Self {
        Self((limit > 0).then(|| {
            Arc::new(View {
                limit,
                db,
                started: Instant::now(),
                queued_here: AtomicU64::new(0),
                offset: AtomicI64::new(0),
                counted_at_ms: AtomicU64::new(NEVER),
                counting: AtomicBool::new(false),
                one_count: tokio::sync::Mutex::new(()),
            })
        }))
    }

    /// `Ok` when one more task may be queued. Costs two atomic reads and a clock read, except after a quiet time.
    pub async fn admit(&self) -> Result<(), QueueFull> {
        let Some(view) = &self.0 else {
            return Ok(());
        };
        let age = view.age();
        if age >= STALE_AFTER {
            view.count().await;
        } else if age >= REFRESH_EVERY {
            view.count_in_background();
        }
        let unfinished = view.unfinished();
        if unfinished >= view.limit {
            return Err(QueueFull {
                unfinished,
                limit: view.limit,
            });
        }
        Ok(())
    }

    /// A task was queued through this process: it is in the view at once, before the next count sees it.
    pub fn note_queued(&self) {
        if let Some(view) = &self.0 {
            view.queued_here.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl View {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn age(&self) -> Duration {
        match self.counted_at_ms.load(Ordering::Acquire) {
            NEVER => Duration::MAX,
            at => Duration::from_millis(self.now_ms().saturating_sub(at)),
        }
    }

    fn unfinished(&self) -> u64 {
        let here = self.queued_here.load(Ordering::Acquire) as i64;
        (self.offset.load(Ordering::Acquire) + here).max(0) as u64
    }

    fn count_in_background(self: &Arc<Self>) {
        if self.counting.swap(true, Ordering::AcqRel) {
            return;
        }
        let view = self.clone();
        tokio::spawn(async move {
            view.count().await;
            view.counting.store(false, Ordering::Release);
        });
    }

    async fn count(&self) {
        let _one = self.one_count.lock().await;
        if self.age() < REFRESH_EVERY {
            return; // taken while this one waited for the lock
        }
        let before = self.queued_here.load(Ordering::Acquire) as i64;
        match tokio::time::timeout(COUNT_DEADLINE, count_unfinished(&self.db, self.limit)).await {
            Ok(Ok(count)) => self.offset.store(count - before, Ordering::Release),
            // Kept: the last view (enqueues fail on their own while PostgreSQL is down). Logged at most once per
            // REFRESH_EVERY, and only while enqueues come.
            Ok(Err(err)) => tracing::warn!(error = %err, "the backlog could not be counted"),
            Err(_) => tracing::warn!("the backlog could not be counted in time"),
        }
        self.counted_at_ms.store(self.now_ms(), Ordering::Release);
    }
}

/// Unfinished tasks, counted up to `limit` only: the partial index `tasks_unfinished_idx` is read for at most
/// `limit` rows, however long the backlog.
async fn count_unfinished(db: &Db, limit: u64) -> Result<i64, sqlx::Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    sqlx::query_scalar!(
        r#"SELECT count(*) AS "count!" FROM (
               SELECT 1 FROM tasks WHERE state IN ('queued', 'running', 'retrying') LIMIT $1
           ) AS unfinished"#,
        limit
    )
    .fetch_one(&mut *db.acquire().await?)
    .await
}
