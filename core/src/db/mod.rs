//! PostgreSQL: the pool and the reader connections (and their logins during a password rotation), the embedded
//! migrations, and what the status page shows of the database.

mod kept;
mod migrations;
mod pool;
mod readers;

pub use kept::KeptConnection;
pub use migrations::{
    MIGRATOR, MigrationState, NewerMigrations, migrate, migrate_on_start, migration_state,
};
pub use pool::{Db, is_invalid_password, pool, worker_pool};

/// What the status page shows of PostgreSQL beyond its tasks.
#[derive(Debug, Clone)]
pub struct DbFacts {
    pub version: String,
    pub migrations: MigrationState,
}

pub async fn facts(db: &Db) -> Result<DbFacts, sqlx::Error> {
    let mut conn = db.acquire().await?;
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&mut *conn)
        .await?;
    let migrations = migrations::migration_state_on(&mut conn).await?;
    Ok(DbFacts {
        version,
        migrations,
    })
}
