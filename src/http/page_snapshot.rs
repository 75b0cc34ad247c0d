//! What the status page shows of PostgreSQL and Redis, fetched at most once per [`MAX_AGE`] by this process and
//! shared by every page view meanwhile.
//!
//! Asking both stores on every view made the page's cost grow with its traffic: a PostgreSQL query and a Redis
//! round trip per view were most of the CPU a view cost the app, the database and Redis together. With the
//! snapshot a busy page costs the stores a few queries a second, whatever the number of views, and an outage shows
//! on the page within [`MAX_AGE`] (plus the checks' own deadline). The price is that the page can be up to
//! [`MAX_AGE`] old, except for a task queued through this process: enqueueing invalidates the snapshot, so the
//! form's redirect shows the new task at once.
//!
//! One view at a time fetches: views that find the snapshot expired wait for that one fetch (a few milliseconds,
//! at most the checks' 800 ms deadline) instead of all running the same queries at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::deadline::{Unanswered, within};
use crate::db::{self, Db, DbFacts};
use crate::tasks::records::TaskSummary;
use crate::tasks::{Queue, TaskStore};

/// How old the page's data may be.
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// Rows of the "Recent tasks" table.
pub const RECENT_TASKS: i64 = 10;

/// One fetch of everything the page shows of the stores; a failed part holds why, for the page to show.
pub struct PageData {
    taken: Instant,
    generation: u64,
    pub postgres: Result<DbFacts, String>,
    pub recent: Result<Vec<TaskSummary>, String>,
    /// The newest worker heartbeat (ms since the epoch) and the queue depth.
    pub redis: Result<(Option<i64>, u64), String>,
}

#[derive(Default)]
pub struct PageSnapshot {
    current: Mutex<Option<Arc<PageData>>>,
    fetching: tokio::sync::Mutex<()>,
    /// Bumped by [`PageSnapshot::invalidate`]; a snapshot taken under an older generation is not used.
    generation: AtomicU64,
}

fn brief<T>(checked: Result<T, Unanswered>) -> Result<T, String> {
    checked.map_err(Unanswered::brief)
}

impl PageSnapshot {
    /// The next view fetches again (a task was queued through this process).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn fresh(&self) -> Option<Arc<PageData>> {
        let generation = self.generation.load(Ordering::Acquire);
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .filter(|d| d.generation == generation && d.taken.elapsed() < MAX_AGE)
            .cloned()
    }

    /// The current snapshot, fetched first when it is older than [`MAX_AGE`] or invalidated.
    pub async fn get(&self, db: &Db, store: &TaskStore, queue: &Queue) -> Arc<PageData> {
        if let Some(data) = self.fresh() {
            return data;
        }
        let _one_fetch = self.fetching.lock().await;
        if let Some(data) = self.fresh() {
            return data;
        }
        let data = Arc::new(fetch(db, store, queue, self.generation.load(Ordering::Acquire)).await);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(data.clone());
        data
    }
}

/// Every store asked concurrently, each with a deadline, so a hung one shows as down instead of hanging the page.
async fn fetch(db: &Db, store: &TaskStore, queue: &Queue, generation: u64) -> PageData {
    let taken = Instant::now();
    let (postgres, recent, redis) = tokio::join!(
        within(db::facts(db)),
        within(store.recent_summaries(RECENT_TASKS)),
        within(queue.status()),
    );
    PageData {
        taken,
        generation,
        postgres: brief(postgres),
        recent: brief(recent),
        redis: brief(redis),
    }
}
