//! What every handler can reach.

use std::sync::Arc;

use sqlx::PgPool;

use crate::assets::Assets;
use crate::config::Settings;
use crate::csrf::Csrf;
use crate::tasks::{Queue, TaskStore};

#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub pool: PgPool,
    pub store: TaskStore,
    pub queue: Queue,
    pub assets: Arc<Assets>,
    pub csrf: Csrf,
}

impl AppState {
    pub fn new(settings: Settings, pool: PgPool, queue: Queue) -> Self {
        let csrf = Csrf::new(settings.secret_key.clone());
        Self {
            settings: Arc::new(settings),
            store: TaskStore::new(pool.clone()),
            pool,
            queue,
            assets: Arc::new(Assets::embedded()),
            csrf,
        }
    }
}
