//! Long-lived connections for the hot reads: one task, the recent tasks. Each read is one round trip.
//!
//! sqlx's pool pings a connection when it takes it back (and, with `test_before_acquire`, when it hands it out), so a
//! pooled query costs three round trips to PostgreSQL; the benchmark's tokio-postgres reference (one connection per
//! core, no checkout) costs one. Here a few connections are kept apart from the pool, each behind its own lock, and a
//! read takes a free one, or waits for one, and runs its statement (prepared once per connection by sqlx's statement
//! cache). What the pings were for is kept:
//! - a connection that PostgreSQL or the network dropped (a restart) fails the read with an I/O error: it is closed
//!   and the read runs once more on a new connection, so no request sees the restart (reads are idempotent);
//! - a read abandoned half way (its request was cancelled) leaves its connection closed, never reused mid-answer;
//! - a refused password switches the logins like the pool does (`Db::acquire`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Mutex, MutexGuard, Semaphore, SemaphorePermit};

/// The reader connections; a slot is `None` until first used and after its connection failed.
pub(super) struct Readers {
    slots: Box<[Mutex<Option<PgConnection>>]>,
    /// One permit per slot, handed out first come, first served: a read waits for any slot, in order, rather than
    /// for one slot chosen in advance (which made the slowest reads wait longest).
    free: Semaphore,
    /// Where the next read starts looking for a free slot: spreads reads over the connections.
    next: AtomicUsize,
    timeout: Duration,
}

/// A slot taken for one read. Dropped before [`Taken::finish`] (the read was cancelled), it closes its connection.
pub(super) struct Taken<'a> {
    // Dropped before the permit: whoever gets the permit next finds this slot unlocked.
    slot: MutexGuard<'a, Option<PgConnection>>,
    _permit: SemaphorePermit<'a>,
    /// The readers' connect timeout (the pool's acquire timeout), for a slot that has to connect.
    timeout: Duration,
    finished: bool,
}

impl Readers {
    pub(super) fn new(count: u32, timeout: Duration) -> Self {
        let count = count.max(1) as usize;
        Self {
            slots: (0..count).map(|_| Mutex::new(None)).collect(),
            free: Semaphore::new(count),
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    /// A free slot, waiting in line for one at most `timeout` (then `PoolTimedOut`, a 503 like the pool's).
    pub(super) async fn take(&self) -> Result<Taken<'_>, sqlx::Error> {
        let permit = tokio::time::timeout(self.timeout, self.free.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        // With a permit, at least one slot is unlocked (only `close` locks one without a permit).
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        let free = (0..n).find_map(|i| self.slots[(start + i) % n].try_lock().ok());
        let slot = match free {
            Some(slot) => slot,
            None => self.slots[start % n].lock().await,
        };
        Ok(Taken {
            slot,
            _permit: permit,
            timeout: self.timeout,
            finished: false,
        })
    }

    /// Closes every connection, waiting for the reads in progress (the end of a process or a test).
    pub(super) async fn close(&self) {
        for slot in self.slots.iter() {
            if let Some(conn) = slot.lock().await.take() {
                let _ = conn.close().await;
            }
        }
    }
}

impl Taken<'_> {
    /// The slot's connection, made with `options` when it has none.
    pub(super) async fn connection(
        &mut self,
        options: &PgConnectOptions,
    ) -> Result<&mut PgConnection, sqlx::Error> {
        if self.slot.is_none() {
            let conn = tokio::time::timeout(self.timeout, options.connect())
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)??;
            *self.slot = Some(conn);
        }
        Ok(self.slot.as_mut().expect("set above"))
    }

    /// Closes the slot's connection (it is broken): the next use makes a new one.
    pub(super) fn discard(&mut self) {
        self.slot.take();
    }

    /// The read ended: the slot, with its connection if it still has one, is free for the next read.
    pub(super) fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.slot.take();
        }
    }
}

/// The connection cannot serve another statement: PostgreSQL closed it, the network failed, or the protocol is out
/// of step. A database error (a constraint, a bad statement) leaves it usable.
pub(super) fn is_broken(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::Tls(_)
    ) || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P")))
}
