//! What every handler can reach.

use std::ops::Deref;
use std::sync::Arc;

use sqlx::PgPool;

use crate::assets::Assets;
use crate::config::Settings;
use crate::csrf::Csrf;
use crate::tasks::{Queue, TaskStore};

/// Cloned several times per request (extractors, `from_fn_with_state`, per-route services): one `Arc`, so a
/// clone is one atomic increment instead of ~10 allocations (secret key, Redis client info, queue key names).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

pub struct AppStateInner {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub store: TaskStore,
    pub queue: Queue,
    pub assets: Arc<Assets>,
    pub csrf: Csrf,
    /// The status page's cached PostgreSQL facts (version, migrations).
    pub db_facts: std::sync::Mutex<Option<crate::db::DbFacts>>,
}

impl Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

impl AppState {
    pub fn new(settings: Settings, pool: PgPool, queue: Queue) -> Self {
        let csrf = Csrf::new(settings.secret_key.clone());
        Self(Arc::new(AppStateInner {
            settings: Arc::new(settings),
            store: TaskStore::new(pool.clone()),
            pool,
            queue,
            assets: Arc::new(Assets::embedded()),
            csrf,
            db_facts: std::sync::Mutex::new(None),
        }))
    }
}
