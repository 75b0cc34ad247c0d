//! The status page's PostgreSQL facts (server version, migration state), cached: they change only with a deploy.
//!
//! Refreshed by one request at a time. When the cached value expires under load, the first request to notice
//! fetches it again while the others keep answering with the value they have; without that, every request in
//! flight at that moment ran the same three queries at once and queued behind each other for pool connections.

use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;

use crate::db::{self, DbFacts};

const TTL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct DbFactsCache {
    current: Mutex<Option<DbFacts>>,
    refresh: tokio::sync::Mutex<()>,
}

impl DbFactsCache {
    fn current(&self) -> Option<DbFacts> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fresh(&self) -> Option<DbFacts> {
        self.current().filter(|f| f.fetched.elapsed() < TTL)
    }

    pub async fn get(&self, pool: &PgPool) -> Result<DbFacts, sqlx::Error> {
        if let Some(facts) = self.fresh() {
            return Ok(facts);
        }
        let _refreshing = match self.refresh.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Someone else is refreshing: a value a few seconds old is as good as the new one.
                if let Some(stale) = self.current() {
                    return Ok(stale);
                }
                // Nothing cached yet (the first requests after start): wait for the one fetch.
                let guard = self.refresh.lock().await;
                if let Some(facts) = self.fresh() {
                    return Ok(facts);
                }
                guard
            }
        };
        let facts = db::facts(pool).await?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(facts.clone());
        Ok(facts)
    }
}
