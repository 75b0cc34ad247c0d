//! What every handler can reach.

use std::ops::Deref;
use std::sync::Arc;

use super::csrf::Csrf;
use super::finished_tasks::FinishedTasks;
use super::page_snapshot::PageSnapshot;
use super::templates::Templates;
use crate::assets::Assets;
use crate::config::Settings;
use crate::db::Db;
use crate::tasks::{
    Backlog, EnqueueBatches, EnqueueError, Idempotency, Queue, Queued, TaskSpec, TaskStore,
};

/// Cloned several times per request (extractors, `from_fn_with_state`, per-route services): one `Arc`, so a
/// clone is one atomic increment instead of ~10 allocations (secret key, Redis client info, queue key names).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub settings: Arc<Settings>,
    pub db: Db,
    pub store: TaskStore,
    pub queue: Queue,
    /// New tasks, written in batches (`tasks/batches/`).
    enqueues: EnqueueBatches,
    /// `QUEUE_MAX_BACKLOG`: the handlers ask it before they enqueue (`tasks/backlog.rs`).
    pub backlog: Backlog,
    pub assets: Arc<Assets>,
    pub templates: Templates,
    pub csrf: Csrf,
    /// What the status page shows of the stores, shared by the views of one second.
    pub page_snapshot: PageSnapshot,
    /// The JSON of finished tasks already read (they never change).
    pub finished_tasks: FinishedTasks,
}

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl AppState {
    /// Call on the runtime that serves: it starts the writer of new tasks.
    pub fn new(settings: Settings, db: Db, queue: Queue) -> Self {
        let csrf = Csrf::new(settings.secret_key.clone());
        let template_dir = settings.template_dir.as_deref().filter(|_| settings.debug);
        let templates = Templates::new(template_dir);
        let backlog = Backlog::new(settings.tasks.max_backlog, db.clone());
        let store = TaskStore::new(db.clone());
        let enqueues = EnqueueBatches::spawn(store.clone(), queue.clone());
        Self(Arc::new(AppStateInner {
            settings: Arc::new(settings),
            store,
            db,
            queue,
            enqueues,
            backlog,
            assets: Arc::new(Assets::embedded()),
            templates,
            csrf,
            page_snapshot: PageSnapshot::default(),
            finished_tasks: FinishedTasks::default(),
        }))
    }

    /// Records a task and hands it to the workers, with this app's `TASK_MAX_ATTEMPTS`. The status page's next
    /// view on this process shows it, and the backlog's view counts it. Callers ask `backlog.admit()` first.
    pub async fn enqueue(
        &self,
        spec: &TaskSpec,
        request_id: Option<&str>,
        idempotency: Option<Idempotency>,
    ) -> Result<Queued, EnqueueError> {
        let max_attempts = self.settings.tasks.max_attempts;
        let queued = self
            .enqueues
            .enqueue(spec, max_attempts, request_id, idempotency)
            .await;
        if matches!(
            queued,
            Ok(Queued {
                replayed: false,
                ..
            })
        ) {
            self.backlog.note_queued();
        }
        self.page_snapshot.invalidate();
        queued
    }
}
