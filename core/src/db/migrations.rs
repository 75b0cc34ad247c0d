//! The embedded migrations: what the database has applied, and applying the rest.

use sqlx::PgConnection;
use sqlx::migrate::Migrator;

use super::Db;
use crate::config::Settings;

/// Compiled into the binary, so `app migrate` needs no files at run time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationState {
    pub applied: usize,
    pub pending: usize,
    pub latest_applied: Option<i64>,
}

impl MigrationState {
    pub fn describe(&self) -> String {
        match (self.pending, self.latest_applied) {
            (0, Some(v)) => format!("up to date ({} applied, latest {v})", self.applied),
            (0, None) => "no migrations".into(),
            (n, _) => format!("{n} pending ({} applied)", self.applied),
        }
    }
}

/// Which embedded migrations the database has applied.
pub async fn migration_state(db: &Db) -> Result<MigrationState, sqlx::Error> {
    migration_state_on(&mut *db.acquire().await?).await
}

pub(super) async fn migration_state_on(
    conn: &mut PgConnection,
) -> Result<MigrationState, sqlx::Error> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    let applied: Vec<i64> = if table_exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await?
    } else {
        Vec::new()
    };
    let pending = MIGRATOR
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
        .count();
    Ok(MigrationState {
        applied: applied.len(),
        pending,
        latest_applied: applied.last().copied(),
    })
}

/// What [`migrate`] does with migrations the database has applied but this binary does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewerMigrations {
    /// Leave them: they come from a newer version. Rolling back under expand/contract (README "Schema changes")
    /// runs the older version's `migrate` against the newer, still compatible schema.
    Keep,
    /// Refuse with an error (sqlx: "migration … was previously applied but is missing in the resolved
    /// migrations"): restoring a backup from a newer version into an older one.
    Refuse,
}

/// Applies the embedded migrations the database lacks. sqlx holds a PostgreSQL advisory lock while it does, so
/// replicas that start together (MIGRATE_ON_START) apply each migration once and the others wait for it.
pub async fn migrate(db: &Db, newer: NewerMigrations) -> Result<(), sqlx::migrate::MigrateError> {
    if newer == NewerMigrations::Refuse {
        return MIGRATOR.run(&mut *db.acquire().await?).await;
    }
    let mut migrator = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
    migrator.set_ignore_missing(true);
    migrator.run(&mut *db.acquire().await?).await
}

/// MIGRATE_ON_START: `serve` and `tasks` apply the migrations before they start (under sqlx's advisory lock, so
/// any number of replicas may start at once), for engines with no one-shot step before them (Docker Swarm).
pub async fn migrate_on_start(settings: &Settings) -> Result<(), sqlx::migrate::MigrateError> {
    if settings.migrate_on_start {
        migrate(&super::pool(settings), NewerMigrations::Keep).await?;
        tracing::info!("migrations applied (MIGRATE_ON_START)");
    }
    Ok(())
}
