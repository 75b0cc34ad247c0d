//! The PostgreSQL pool and the embedded migrations.

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres};

use crate::config::Settings;

/// Compiled into the binary, so `app migrate` needs no files at run time.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A lazy pool: it connects on first use, so a database outage never stops the process, and a request waits at
/// most `DB_ACQUIRE_TIMEOUT_MS` for a connection before it fails with 503.
pub fn pool(settings: &Settings) -> PgPool {
    lazy_pool(settings, settings.pg_connect_options())
}

/// The worker's pool: like [`pool`], with `synchronous_commit=off`. A task's bookkeeping writes (start, done,
/// retry) then return before the WAL reaches disk; a PostgreSQL crash can lose the last of them, which only makes a
/// task run again (delivery is at least once and the reconciler resends). Measured: +15% tasks/s end to end.
pub fn worker_pool(settings: &Settings) -> PgPool {
    let options = settings
        .pg_connect_options()
        .options([("synchronous_commit", "off")]);
    lazy_pool(settings, options)
}

fn lazy_pool(settings: &Settings, options: PgConnectOptions) -> PgPool {
    PgPoolOptions::new()
        .max_connections(settings.database.pool_size)
        .acquire_timeout(settings.database.acquire_timeout)
        .connect_lazy_with(options)
}

/// A pooled connection kept by a loop that runs one query after another (the worker's intake and the recorder of
/// its successes). sqlx checks a connection with a round trip whenever it is taken from the pool and again whenever
/// it is given back: for such a loop, two of every three round trips were those checks. A kept connection is not
/// checked; when a query on it fails (a PostgreSQL restart broke it, say), it is given back (where the check closes
/// it if it is broken) and the query is tried once more on a connection taken, and checked, afresh.
pub struct KeptConnection {
    pool: PgPool,
    conn: Option<PoolConnection<Postgres>>,
    /// `conn` was taken from the pool by the last [`Self::get`].
    fresh: bool,
}

impl KeptConnection {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            conn: None,
            fresh: false,
        }
    }

    /// The kept connection, taken from the pool (and checked) when there is none.
    pub async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.fresh = self.conn.is_none();
        let conn = match &mut self.conn {
            Some(conn) => conn,
            none => none.insert(self.pool.acquire().await?),
        };
        Ok(&mut **conn)
    }

    /// After a query on [`Self::get`]'s connection failed with `err`: the connection goes back to the pool (closed
    /// there if broken). `Ok` says to try the query once more, on a fresh connection: the kept one may have been
    /// broken meanwhile (a PostgreSQL restart), which only a query finds out. `Err(err)` when the connection was
    /// just taken, so there is nothing to try again:
    ///
    /// ```text
    /// let rows = loop {
    ///     match query.fetch_all(kept.get().await?).await {
    ///         Ok(rows) => break rows,
    ///         Err(err) => kept.failed(err)?,
    ///     }
    /// };
    /// ```
    pub fn failed(&mut self, err: sqlx::Error) -> Result<(), sqlx::Error> {
        self.conn = None;
        if self.fresh { Err(err) } else { Ok(()) }
    }
}

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
pub async fn migration_state(pool: &PgPool) -> Result<MigrationState, sqlx::Error> {
    let table_exists: bool =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied: Vec<i64> = if table_exists {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
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
pub async fn migrate(
    pool: &PgPool,
    newer: NewerMigrations,
) -> Result<(), sqlx::migrate::MigrateError> {
    if newer == NewerMigrations::Refuse {
        return MIGRATOR.run(pool).await;
    }
    let mut migrator = Migrator::with_migrations(MIGRATOR.iter().cloned().collect());
    migrator.set_ignore_missing(true);
    migrator.run(pool).await
}

/// MIGRATE_ON_START: `serve` and `tasks` apply the migrations before they start (under sqlx's advisory lock, so
/// any number of replicas may start at once), for engines with no one-shot step before them (Docker Swarm).
pub async fn migrate_on_start(settings: &Settings) -> Result<(), sqlx::migrate::MigrateError> {
    if settings.migrate_on_start {
        migrate(&pool(settings), NewerMigrations::Keep).await?;
        tracing::info!("migrations applied (MIGRATE_ON_START)");
    }
    Ok(())
}

/// What the status page shows of PostgreSQL beyond its tasks.
#[derive(Debug, Clone)]
pub struct DbFacts {
    pub version: String,
    pub migrations: MigrationState,
}

pub async fn facts(pool: &PgPool) -> Result<DbFacts, sqlx::Error> {
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(pool)
        .await?;
    let migrations = migration_state(pool).await?;
    Ok(DbFacts {
        version,
        migrations,
    })
}
