//! The PostgreSQL pool, and the password it logs in with while that password is being replaced.
//!
//! PostgreSQL holds one password per role, so a rotation has a moment when one of two passwords stops working:
//! `ALTER ROLE … PASSWORD`. Connections already open stay valid (a password is checked when a connection is
//! made), but a pool that opens one more after that moment fails with `28P01 invalid_password`. A process given
//! the password before the rotation as well (`POSTGRES_PASSWORD_PREVIOUS`) switches to the other one when
//! PostgreSQL refuses the one it uses, and tries again at once: no request sees the rotation
//! (`scripts/swarm.sh rotate-db-password` relies on this).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::pin::Pin;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::readers::{Readers, is_broken};
use crate::config::Settings;

/// What a read returns: a `fetch_*` future, boxed (an `async` closure's future cannot be shown `Send` for every
/// connection lifetime, which axum's handlers need).
pub type ReadFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + Send + 'c>>;

/// SQLSTATE `invalid_password`: PostgreSQL refused the password (not the role, the database or the address).
const INVALID_PASSWORD: &str = "28P01";

/// The app's handle on PostgreSQL: a pool, the reader connections of the hot reads, and the logins both may switch
/// between. Cheap to clone (three `Arc`s). Every query runs on a connection from [`Db::acquire`] or in [`Db::read`],
/// the two places where a refused password is handled.
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    logins: Arc<Logins>,
    readers: Arc<Readers>,
}

/// The connect options of each password the process was given, the current one first.
struct Logins {
    options: Vec<PgConnectOptions>,
    /// Which of `options` the pool connects with now: read (one atomic load) before every acquire, written only
    /// under `switching`, after the pool's options were replaced.
    in_use: AtomicUsize,
    /// Held while the pool's options are replaced, so that a caller that saw a refusal with login `i` never switches
    /// back from a login another caller switched to.
    switching: Mutex<()>,
}

/// A lazy pool: it connects on first use, so a database outage never stops the process, and a request waits at
/// most `DB_ACQUIRE_TIMEOUT_MS` for a connection before it fails with 503.
pub fn pool(settings: &Settings) -> Db {
    Db::lazy(settings, settings.pg_logins())
}

/// The worker's pool: like [`pool`], with `synchronous_commit=off`. A task's bookkeeping writes (start, done,
/// retry) then return before the WAL reaches disk; a PostgreSQL crash can lose the last of them, which only makes a
/// task run again (delivery is at least once and the reconciler resends). Measured: +15% tasks/s end to end.
pub fn worker_pool(settings: &Settings) -> Db {
    let logins = settings
        .pg_logins()
        .into_iter()
        .map(|options| options.options([("synchronous_commit", "off")]))
        .collect();
    Db::lazy(settings, logins)
}

impl Db {
    fn lazy(settings: &Settings, logins: Vec<PgConnectOptions>) -> Self {
        let first = logins.first().cloned().unwrap_or_default();
        let pool = PgPoolOptions::new()
            .max_connections(settings.database.pool_size)
            .acquire_timeout(settings.database.acquire_timeout)
            .connect_lazy_with(first);
        Self::with_logins(pool, logins, settings.database.readers)
    }

    /// `pool` connects with `logins[0]`.
    fn with_logins(pool: PgPool, logins: Vec<PgConnectOptions>, readers: u32) -> Self {
        let timeout = pool.options().get_acquire_timeout();
        Self {
            pool,
            logins: Arc::new(Logins {
                options: logins,
                in_use: AtomicUsize::new(0),
                switching: Mutex::new(()),
            }),
            readers: Arc::new(Readers::new(readers, timeout)),
        }
    }

    /// A connection from the pool. When PostgreSQL refuses the password and the process has another one, the
    /// pool switches to it and the connection is asked for once more.
    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let tried = self.logins.in_use.load(Ordering::Acquire);
        match self.pool.acquire().await {
            Err(err) if is_invalid_password(&err) && self.logins.options.len() > 1 => {
                self.logins.switch_from(tried, &self.pool);
                self.pool.acquire().await
            }
            other => other,
        }
    }

    /// Runs one read-only statement on a reader connection (`readers.rs`): one round trip, no pool checkout.
    /// `query` runs again on a new connection when the one it got turned out broken (PostgreSQL restarted): it must
    /// only read. A refused password switches the logins as in [`Db::acquire`].
    pub async fn read<T>(
        &self,
        query: impl for<'c> Fn(&'c mut PgConnection) -> ReadFuture<'c, T>,
    ) -> Result<T, sqlx::Error> {
        let mut taken = self.readers.take().await?;
        let mut again = true;
        loop {
            let tried = self.logins.in_use.load(Ordering::Acquire);
            // The pool's options: the login in use, switched with the pool's.
            let options = self.pool.connect_options();
            let conn = match taken.connection(&options).await {
                Err(err) if is_invalid_password(&err) && self.logins.options.len() > 1 && again => {
                    self.logins.switch_from(tried, &self.pool);
                    again = false;
                    continue;
                }
                other => other?,
            };
            let result = query(conn).await;
            if result.as_ref().is_err_and(is_broken) {
                // Closed; the slot connects again on its next use, or now.
                taken.discard();
                if again {
                    again = false;
                    continue;
                }
            }
            taken.finish();
            return result;
        }
    }

    /// Closes every connection, and waits until they are closed (the end of a process or a test).
    pub async fn close(&self) {
        self.readers.close().await;
        self.pool.close().await;
    }
}

/// A pool with one login and no fallback: tests, and tools that build their own pool.
impl From<PgPool> for Db {
    fn from(pool: PgPool) -> Self {
        let options = (*pool.connect_options()).clone();
        let readers = pool.options().get_max_connections();
        Self::with_logins(pool, vec![options], readers)
    }
}

impl Logins {
    /// After PostgreSQL refused login `tried`: the pool connects with the next login, unless another caller
    /// switched already.
    fn switch_from(&self, tried: usize, pool: &PgPool) {
        let _switching = self
            .switching
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.in_use.load(Ordering::Acquire) != tried {
            return;
        }
        let next = (tried + 1) % self.options.len();
        pool.set_connect_options(self.options[next].clone());
        self.in_use.store(next, Ordering::Release);
        tracing::warn!(
            from = login_name(tried),
            to = login_name(next),
            "PostgreSQL refused the password; new connections use the other one"
        );
    }
}

/// The setting a login's password came from, for the log (never the password).
fn login_name(index: usize) -> &'static str {
    match index {
        0 => "POSTGRES_PASSWORD",
        _ => "POSTGRES_PASSWORD_PREVIOUS",
    }
}

pub fn is_invalid_password(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some(INVALID_PASSWORD))
}
