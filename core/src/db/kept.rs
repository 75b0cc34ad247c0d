//! A pooled connection kept by a loop, unchecked between its queries.

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};

use super::Db;

/// A pooled connection kept by a loop that runs one query after another (the worker's intake and the recorder of
/// its successes). sqlx checks a connection with a round trip whenever it is taken from the pool and again whenever
/// it is given back: for such a loop, two of every three round trips were those checks. A kept connection is not
/// checked; when a query on it fails (a PostgreSQL restart broke it, say), it is given back (where the check closes
/// it if it is broken) and the query is tried once more on a connection taken, and checked, afresh.
pub struct KeptConnection {
    db: Db,
    conn: Option<PoolConnection<Postgres>>,
    /// `conn` was taken from the pool by the last [`Self::get`].
    fresh: bool,
}

impl KeptConnection {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            conn: None,
            fresh: false,
        }
    }

    /// The kept connection, taken from the pool (and checked) when there is none.
    pub async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        self.fresh = self.conn.is_none();
        let conn = match &mut self.conn {
            Some(conn) => conn,
            none => none.insert(self.db.acquire().await?),
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
